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

from hnpal.llm import sanitize
from hnpal.telegram.render import utf16_len

SUMMARY_MAX_BYTES = 6000  # the running summary is kept within this
CONTEXT_FLOOR_SHARE = 4  # the context keeps at least 1/4 of the cap (when it is that large)
MESSAGE_OVERHEAD = 16  # bytes counted per chat message for its framing
DATA_OVERHEAD = 1500  # bytes of the data blocks' rules and fence lines
TELEGRAM_LIMIT = 4096
SUMMARY_BLOCK = "CONVERSATION SO FAR (SUMMARY OF EARLIER MESSAGES)"

PERSONA = (
    "You are HN Pal, a well-read companion who discusses one Hacker News post with the user. Answer in the "
    "user's language, briefly and concretely (a few short paragraphs at most), grounded in the article and "
    "the HN thread of the data blocks; say so when they do not cover something, and label your own opinions "
    "as such. Use what you remember about the user only when it helps. Plain text, no Markdown headings."
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
    return cap - size(persona) - size(new_message) - SUMMARY_MAX_BYTES - floor - 4 * MESSAGE_OVERHEAD - DATA_OVERHEAD


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
    context: str = "",
    summary: str | None,
    history: list[dict[str, Any]],
    new_message: str,
    cap: int,
    blocks: list[list[str]] | None = None,
    marker: str | None = None,
) -> Prompt:
    """The chat messages: the system message (the persona and the rules of the data blocks: nothing
    else), one message of data blocks (the context's ``blocks``, or ``context`` as one block, and the
    running summary), each fenced with a per-request random marker, the verbatim history, the new
    message. The blocks are cut to what the cap leaves, the last ones first (then the summary), so the
    prompt stays under it."""
    marker = marker or sanitize.new_marker()
    if blocks is None:
        blocks = [["CONTEXT", context]] if context else []
    system = f"{persona}\n\n{sanitize.data_rules(marker)}"
    summary_text, summary_cut = cut_bytes(sanitize.neutralize(summary or "", marker), SUMMARY_MAX_BYTES)
    turns = [
        {"role": "assistant" if m.get("role") == "assistant" else "user", "content": str(m.get("content") or "")}
        for m in history
    ]
    turns.append({"role": "user", "content": new_message})

    def summary_part() -> str:
        return sanitize.fence(SUMMARY_BLOCK, summary_text, marker) if summary_text else ""

    fixed = size(system) + size(summary_part()) + messages_size(turns) + 2 * MESSAGE_OVERHEAD + 40
    room = cap - fixed
    if room < 0 and summary_text:  # pathological: drop the summary before the history or the question
        summary_text, summary_cut = cut_bytes(summary_text, max(0, SUMMARY_MAX_BYTES + room))
        fixed = size(system) + size(summary_part()) + messages_size(turns) + 2 * MESSAGE_OVERHEAD + 40
        room = cap - fixed
    parts: list[str] = []
    used = 0
    context_cut = False
    for name, text in blocks:
        if not text:
            continue
        neutral = sanitize.neutralize(str(text), marker)
        frame = size(sanitize.fence(name, "", marker)) + 2  # the fence lines and the blank line after
        left = room - used - frame
        if left <= 0:
            context_cut = True
            break
        neutral, cut = cut_bytes(neutral, left)
        parts.append(sanitize.fence(name, neutral, marker))
        used += size(parts[-1]) + 2
        if cut:
            context_cut = True
            break
    context_text = "\n\n".join(parts)
    data = "\n\n".join(p for p in (context_text, summary_part()) if p)
    chat = [{"role": "system", "content": system}]
    if data:
        chat.append({"role": "user", "content": data})
    chat += turns
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
