"""Telegram messages in the terminal: a bubble with the text's entities as rich styles, and the inline
keyboard under it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from hnpal.sandbox.telegram_api import SentMessage


BUBBLE_WIDTH = 76  # a Telegram message bubble in the terminal


ENTITY_STYLES = {
    "bold": Style(bold=True),
    "italic": Style(italic=True),
    "underline": Style(underline=True),
    "strikethrough": Style(strike=True),
    "spoiler": Style(reverse=True),
    "code": Style(color="magenta"),
    "pre": Style(color="magenta"),
    "blockquote": Style(italic=True, dim=True),
    "expandable_blockquote": Style(italic=True, dim=True),
    "url": Style(color="bright_blue", underline=True),
    "email": Style(color="bright_blue", underline=True),
    "mention": Style(color="bright_blue"),
    "hashtag": Style(color="bright_blue"),
    "cashtag": Style(color="bright_blue"),
    "bot_command": Style(color="bright_blue"),
}


def telegram_text(value: str, entities: list[dict[str, Any]]) -> Text:
    """A message as Telegram shows it: the parsed text with its entities (bold, italic, links...) as
    rich styles. No markup string is built, so nothing in a title or summary can be taken for markup;
    a text link is shown with its address after it (dim)."""
    index = []  # UTF-16 offset -> index in ``value`` (Telegram counts entities in UTF-16 code units)
    for i, ch in enumerate(value):
        index.append(i)
        if ord(ch) > 0xFFFF:
            index.append(i)
    index.append(len(value))

    def at(offset: int) -> int:
        return index[max(0, min(offset, len(index) - 1))]

    styled = Text(value)
    links: list[tuple[int, str]] = []
    for entity in entities:
        start, end = at(entity["offset"]), at(entity["offset"] + entity["length"])
        if entity["type"] == "text_link":
            url = entity.get("url", "")
            styled.stylize(Style(color="bright_blue", underline=True, link=url or None), start, end)
            if url and url != value[start:end]:
                links.append((end, url))
        elif entity["type"] in ENTITY_STYLES:
            styled.stylize(ENTITY_STYLES[entity["type"]], start, end)
    if not links:
        return styled
    out = Text()
    position = 0
    for end, url in sorted(links):
        out.append_text(styled[position:end])
        out.append(f" ‹{url}›", style="dim")
        position = end
    out.append_text(styled[position:])
    return out


def keyboard(reply_markup: dict[str, Any] | None) -> RenderableType | None:
    """An inline keyboard: each row of buttons as boxed labels."""
    rows = (reply_markup or {}).get("inline_keyboard") or []
    if not rows:
        return None
    rendered = []
    for row in rows:
        table = Table(box=box.ROUNDED, show_header=False, padding=(0, 1), pad_edge=True, expand=False)
        for _ in row:
            table.add_column(justify="center", no_wrap=True)
        table.add_row(*(Text(button.get("text", "")) for button in row))
        rendered.append(table)
    return Group(*rendered)


def telegram_message(message: SentMessage, title: str) -> RenderableType:
    """A bot message as a bubble (rich text), its inline keyboard under it."""
    edited = f" · edited ×{len(message.edits)}" if message.edits else ""
    bubble = Panel(
        telegram_text(message.text, message.entities),
        title=escape(title),
        title_align="left",
        subtitle=f"message {message.message_id}{edited}",
        subtitle_align="right",
        width=BUBBLE_WIDTH,
        border_style="cyan",
        box=box.ROUNDED,
    )
    keys = keyboard(message.reply_markup)
    return Group(bubble, keys) if keys is not None else bubble
