"""Telegram messages of HN Pal, in HTML parse mode.

Everything from outside (titles, summaries, URLs, domains) goes through :func:`esc`; every message is
kept within Telegram's 4096 characters (counted, like Telegram, in UTF-16 code units of the text after
entity parsing) by shortening the summary or the list, never by cutting a tag in half.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from hnpal.telegram.callbacks import sign

MAX_MESSAGE = 4096
HN_ITEM = "https://news.ycombinator.com/item?id={}"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_TAG = re.compile(r"<[^>]*>")


def visible_length(markup: str) -> int:
    """Length of an HTML message as Telegram counts it (tags removed, entities decoded)."""
    return utf16_len(html.unescape(_TAG.sub("", markup)).strip())


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` UTF-16 units (Telegram's measure: an emoji counts two), cut at a word boundary
    with an ellipsis."""
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    if utf16_len(text) <= limit:
        return text
    cut = text[: max(1, limit - 1)]
    while utf16_len(cut) > limit - 1 and len(cut) > 1:  # astral characters take two units
        cut = cut[: max(1, len(cut) - (utf16_len(cut) - (limit - 1)))]
    space = cut.rfind(" ")
    if space > len(cut) * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"


_MD_MARKS = re.compile(r"(\*\*|`+|^#{1,6}\s+|^\s*[*+-]\s+(?=\S))", re.MULTILINE)
_MD_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")


def plain_summary(text: str) -> str:
    """A summary as readable text: Markdown marks (the offline summarizer quotes the article's markdown)
    would show literally in an HTML message; links keep their text."""
    return _MD_MARKS.sub("", _MD_LINK.sub(r"\1", text))


@dataclass
class PostCard:
    delivery_id: int
    hn_id: int
    title: str
    url: str | None
    domain: str | None
    score: int
    comments: int
    summary: str | None
    position: int = 1
    total: int = 1
    reaction: str | None = None
    saved: bool = False
    why: str | None = None  # why the post is in this digest, one short line (hnpal.relevance.service.explain)
    hn_says: str | None = None  # the comment summary of a lively thread ("What HN says"), when there is one


HN_SAYS_LIMIT = 700  # UTF-16 units of "What HN says" in a post message (the article's summary keeps the rest)


def hn_says_block(text: str | None, limit: int = HN_SAYS_LIMIT) -> str:
    """The "🗣 What HN says" section: the thread's comment summary ("- " lines), escaped and shortened."""
    if not text or not text.strip():
        return ""
    return f"\n\n🗣 <b>What HN says</b>\n{esc(shorten(text.strip(), limit))}"


def post_keyboard(card: PostCard, telegram_id: int, extra_rows: list[list[dict]] | None = None) -> dict[str, Any]:
    up = "👍✓" if card.reaction == "up" else "👍"
    down = "👎✓" if card.reaction == "down" else "👎"
    save = "💾✓" if card.saved else "💾 Save"
    row = [
        {"text": "💬 Discuss", "callback_data": sign(telegram_id, "ds", card.delivery_id)},
        {"text": up, "callback_data": sign(telegram_id, "up", card.delivery_id)},
        {"text": down, "callback_data": sign(telegram_id, "dn", card.delivery_id)},
        {"text": save, "callback_data": sign(telegram_id, "sv", card.delivery_id)},
    ]
    return {"inline_keyboard": [row, *(extra_rows or [])]}


def post_message(card: PostCard) -> str:
    """flat_scroll: one post — bold title, HN link, summary, article link, score line."""
    head = f'<b>{esc(card.title)}</b>\n<a href="{esc(HN_ITEM.format(card.hn_id))}">HN discussion</a>'
    link = ""
    if card.url:
        link = f'\n\n🔗 <a href="{esc(card.url)}">{esc(shorten(card.domain or card.url, 100))}</a>'
    stats = f"\n⬆️ {card.score} · 💬 {card.comments} · {card.position}/{card.total}"
    if card.why:
        stats += f"\n💡 {esc(shorten(card.why, 80))}"
    says = hn_says_block(card.hn_says)
    fixed = visible_length(head + link + stats + says) + 4
    summary = plain_summary(card.summary or "No summary yet.")
    budget = MAX_MESSAGE - fixed - 10
    body = esc(shorten(summary, budget))
    return f"{head}\n\n{body}{says}{link}{stats}"


def brief_message(cards: list[PostCard], heading: str) -> str:
    """brief: one message listing the posts; number buttons expand one in place."""
    lines = [f"<b>{esc(heading)}</b>", ""]
    used = visible_length(lines[0])
    title_limit = 200
    while True:
        body = []
        for card in cards:
            domain = f" · {esc(card.domain)}" if card.domain else ""
            why = f" · 💡 {esc(shorten(card.why, 60))}" if card.why else ""
            body.append(
                f"{card.position}. <b>{esc(shorten(card.title, title_limit))}</b>\n"
                f"    ⬆️ {card.score} · 💬 {card.comments}{domain}{why}"
            )
        text = "\n".join(lines + body)
        if visible_length(text) <= MAX_MESSAGE or title_limit <= 20:
            return text if visible_length(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - used]
        title_limit //= 2


def brief_keyboard(digest_id: int, count: int, telegram_id: int, selected: int | None = None) -> dict[str, Any]:
    buttons = [
        {
            "text": f"·{n}·" if n == selected else str(n),
            "callback_data": sign(telegram_id, "ex", digest_id, n),
        }
        for n in range(1, count + 1)
    ]
    rows = [buttons[i : i + 6] for i in range(0, len(buttons), 6)]
    if selected is not None:
        rows.append([{"text": "⬅ Back to the list", "callback_data": sign(telegram_id, "ex", digest_id, 0)}])
    return {"inline_keyboard": rows}
