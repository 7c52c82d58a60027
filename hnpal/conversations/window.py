"""The conversation window and the discussion prompt (pure functions, no I/O).

After the storage design of the companion-bot document: the last ``window`` messages go verbatim, older
ones are folded into a running summary (``conversations.summary``; ``messages[:summarized_count]`` are in
it), and the whole prompt stays under a size cap however long the talk goes. Sizes are UTF-8 bytes of the
message contents, the measure of the "100 KB" cap. What gives way, in order, when the parts do not fit:
the oldest verbatim messages (folded into the summary instead), then the context (cut), then the summary.
The persona and the new message always go whole (a message is at most 10,000 characters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hnpal.telegram.render import utf16_len

SUMMARY_MAX_BYTES = 6000  # the running summary is kept within this
CONTEXT_FLOOR_SHARE = 4  # the context keeps at least 1/4 of the cap (when it is that large)
MESSAGE_OVERHEAD = 16  # bytes counted per chat message for its framing
TELEGRAM_LIMIT = 4096
SUMMARY_HEADING = "\n\n## The conversation so far (summary of earlier messages)\n"

PERSONA = (
    "You are HN Pal, a well-read companion who discusses one Hacker News post with the user. Answer in the "
    "user's language, briefly and concretely (a few short paragraphs at most), grounded in the article and "
    "the HN thread below; say so when they do not cover something, and label your own opinions as such. "
    "Use what you remember about the user only when it helps. Plain text, no Markdown headings."
)
IDLE_PERSONA = (
    "You are HN Pal, a Hacker News companion on Telegram. Answer the user's question in two or three "
    "sentences. If they seem to want to talk about a specific post, tell them to tap 💬 Discuss under it "
    "or send /discuss HN_ID."
)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_bytes(text: str, limit: int) -> tuple[str, bool]:
    """``text`` within ``limit`` UTF-8 bytes (never splitting a character), and whether it was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    if limit <= 0:
        return "", True
    cut = raw[: max(0, limit - 3)].decode("utf-8", errors="ignore")
    space = cut.rfind(" ")
    if space > len(cut) * 0.8:
        cut = cut[:space]
    return cut + "…", True


def messages_size(messages: list[dict[str, Any]]) -> int:
    return sum(size(str(m.get("content") or "")) + MESSAGE_OVERHEAD for m in messages)


def history_budget(*, cap: int, persona: str, new_message: str, context_bytes: int) -> int:
    """Bytes the verbatim history may take: what is left once the persona, the new message, a full
    summary and the context's guaranteed share are counted."""
    floor = min(context_bytes, cap // CONTEXT_FLOOR_SHARE)
    return cap - size(persona) - size(new_message) - SUMMARY_MAX_BYTES - floor - 4 * MESSAGE_OVERHEAD


def plan_window(
    messages: list[dict[str, Any]], *, summarized_count: int, new_index: int, window: int, budget: int
) -> int:
    """Up to which index the messages before ``messages[new_index]`` must be folded into the summary:
    at most ``window`` of them stay verbatim, and those that stay fit in ``budget`` bytes."""
    start = max(summarized_count, new_index - window, 0)
    while start < new_index and messages_size(messages[start:new_index]) > budget:
        start += 1
    return start


@dataclass
class Prompt:
    messages: list[dict[str, str]]
    bytes: int
    context_bytes: int
    context_truncated: bool
    summary_truncated: bool
    verbatim: int
    stats: dict[str, Any] = field(default_factory=dict)


def build_prompt(
    *,
    persona: str,
    context: str,
    summary: str | None,
    history: list[dict[str, Any]],
    new_message: str,
    cap: int,
) -> Prompt:
    """The chat messages: system (persona, context, running summary), the verbatim history, the new
    message. The context is cut to what the cap leaves (then the summary), so the prompt stays under it."""
    summary_text, summary_cut = cut_bytes(summary or "", SUMMARY_MAX_BYTES)
    turns = [
        {"role": "assistant" if m.get("role") == "assistant" else "user", "content": str(m.get("content") or "")}
        for m in history
    ]
    turns.append({"role": "user", "content": new_message})
    summary_part = f"{SUMMARY_HEADING}{summary_text}" if summary_text else ""
    fixed = size(persona) + size(summary_part) + messages_size(turns) + MESSAGE_OVERHEAD + 40
    room = cap - fixed
    if room < 0 and summary_part:  # pathological: drop the summary before the history or the question
        summary_text, summary_cut = cut_bytes(summary_text, max(0, SUMMARY_MAX_BYTES + room))
        summary_part = f"{SUMMARY_HEADING}{summary_text}"
        fixed = size(persona) + size(summary_part) + messages_size(turns) + MESSAGE_OVERHEAD + 40
        room = cap - fixed
    context_text, context_cut = cut_bytes(context, max(0, room))
    system = persona + (f"\n\n{context_text}" if context_text else "") + summary_part
    chat = [{"role": "system", "content": system}, *turns]
    total = messages_size(chat)
    return Prompt(
        messages=chat,
        bytes=total,
        context_bytes=size(context_text),
        context_truncated=context_cut,
        summary_truncated=summary_cut,
        verbatim=len(history),
        stats={"prompt_bytes": total, "context_bytes": size(context_text), "verbatim": len(history)},
    )


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` UTF-16 units (Telegram's measure), cut at a paragraph,
    line, sentence or word boundary where one is near."""
    text = text.strip()
    parts: list[str] = []
    while utf16_len(text) > limit:
        cut = text[:limit]
        while utf16_len(cut) > limit:
            cut = cut[: len(cut) - (utf16_len(cut) - limit)]
        best = -1
        for sep in ("\n\n", "\n", ". ", " "):
            at = cut.rfind(sep)
            if at > len(cut) // 2:
                best = at + len(sep)
                break
        head = cut[:best] if best > 0 else cut
        parts.append(head.strip())
        text = text[len(head) :].strip()
    if text:
        parts.append(text)
    return parts
