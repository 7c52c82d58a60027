"""A local stand-in for the Telegram Bot API.

One loopback HTTP server answers like https://api.telegram.org/bot<token>/<method> for the calls HN Pal
makes, so the real python-telegram-bot client can drive it (``Bot(token, base_url=server.base_url)``):

* getMe, getUpdates (offsets, long polling, ``allowed_updates``), setWebhook / deleteWebhook /
  getWebhookInfo (updates are POSTed to the webhook from a background thread, with the secret token
  header and a few retries), sendMessage, editMessageText, editMessageReplyMarkup, deleteMessage,
  answerCallbackQuery, sendDocument (multipart uploads, file ids) / getFile and the file download URL,
  sendChatAction, setMyCommands / getMyCommands / deleteMyCommands, getChat;
* the real response shapes ``{"ok": true, "result": ...}`` and ``{"ok": false, "error_code": N,
  "description": "...", "parameters": {...}}`` and the real error descriptions ("Bad Request: chat not
  found", "Forbidden: bot was blocked by the user", "Too Many Requests: retry after N", ...);
* HTML, MarkdownV2 and legacy Markdown parsing into plain text plus ``entities`` (offsets and lengths in
  UTF-16 code units), with "can't parse entities" errors; the 4096-character message limit counted in
  UTF-16 units after parsing; inline keyboard validation (``callback_data`` 1-64 bytes, ...);
* flood control: a global messages-per-second limit and a per-chat one (sliding one-second windows;
  groups also get Telegram's 20 messages per minute), answered with 429 and ``retry_after``.

The "user side" is scripted: :meth:`TelegramServer.send_user_message`, :meth:`~TelegramServer.press_button`,
:meth:`~TelegramServer.edit_user_message` and :meth:`~TelegramServer.inject_update` queue updates;
:meth:`~TelegramServer.messages` and friends show what the bot sent. Any method can be made to misbehave
(5xx, 429, slow answers, dropped connections) with :meth:`~TelegramServer.set_fault`.

Deliberate differences from the real service: webhooks may use plain ``http://`` URLs on any port; a
bare ``&`` that is not an HTML entity is an error in HTML mode (Telegram lets some through; the bot
should escape); updates are delivered to a webhook one at a time, and dropped after the retries fail.

In-process::

    with TelegramServer() as tg:
        tg.add_user(42, first_name="Ada")
        bot = telegram.Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)

Command line::

    python -m hnpal.sandbox.telegram_api [--port 8081] [--host 127.0.0.1] [--token T] [--no-limits]
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import math
import mimetypes
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import EllipsisType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hnpal.sandbox._server import LoopbackServer, SandboxHandler

DEFAULT_TOKEN = "123456:sandbox-token"
FAULT_KINDS = ("error_500", "bad_gateway", "bad_request", "too_many_requests", "timeout", "drop")
JSON_UTF8 = "application/json"
MAX_TEXT_UTF16 = 4096
MAX_CAPTION_UTF16 = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_CHARS = 200
MAX_BUTTONS = 100
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_COMMANDS = 100
GROUP_WINDOW = 60.0
CHAT_ACTIONS = (
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
)
BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
# update types Telegram does not send unless asked for by name in allowed_updates
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_PATH = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[^/]*)$")
_FILE_PATH = re.compile(r"^/file/bot(?P<token>[^/]*)/(?P<path>.+)$")
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_URL_IN_TEXT = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]}]", re.I)
_HTML_SPECIAL = re.compile(r"[<&]")
_BOT_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,64})?")


# --------------------------------------------------------------------------------------------
# Text and entities
# --------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (how Telegram measures text and entity offsets)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class EntityParseError(ValueError):
    """Text that does not parse in its ``parse_mode``; ``str()`` is the reason Telegram would give."""


class _Builder:
    """The plain text being produced, with its length in UTF-16 units."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += utf16_len(text)

    def since(self, index: int) -> str:
        return "".join(self.parts[index:])

    def text(self) -> str:
        return "".join(self.parts)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _entity(kind: str, offset: int, length: int, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "offset": offset, "length": length, **{k: v for k, v in extra.items() if v is not None}}


def _sorted_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((e for e in entities if e["length"] > 0), key=lambda e: (e["offset"], -e["length"]))


def trim_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip leading and trailing whitespace like Telegram, moving and clipping the entities."""
    left = text.lstrip()
    shift = utf16_len(text[: len(text) - len(left)])
    plain = left.rstrip()
    total = utf16_len(plain)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return plain, _sorted_entities(kept)


_HTML_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,7}));")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_HTML_ATTR_NAME = re.compile(r"[A-Za-z0-9_-]+")
_HTML_END_TAG = re.compile(r"</([A-Za-z][A-Za-z0-9-]*)\s*>")
_HTML_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}


def _decode_html_entity(text: str, i: int) -> tuple[str, int] | None:
    match = _HTML_ENTITY.match(text, i)
    if match is None:
        return None
    named, decimal, hexadecimal = match.groups()
    if named:
        return _HTML_NAMED[named], match.end()
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if code <= 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), match.end()


@dataclass
class _OpenTag:
    tag: str
    kind: str
    start: int  # UTF-16 offset in the plain text
    index: int  # of the tag in the source text (its byte offset is computed only for an error message)
    attrs: dict[str, str]
    language: str | None = None


def _html_attrs(text: str, i: int, tag: str, begin: int) -> tuple[dict[str, str], int]:
    """The attributes of a start tag from ``i`` (just after its name), and the index after ``>``."""
    attrs: dict[str, str] = {}
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
        if text[i] == ">":
            return attrs, i + 1
        name = _HTML_ATTR_NAME.match(text, i)
        if name is None:
            raise EntityParseError(
                f'Empty attribute name in the tag "{tag}" at byte offset {_byte_offset(text, begin)}'
            )
        key = name.group().lower()
        i = name.end()
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i].isspace():
                i += 1
            if i < n and text[i] in "\"'":
                end = text.find(text[i], i + 1)
                if end < 0:
                    raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                raw = text[i + 1 : end]
                i = end + 1
            else:
                start = i
                while i < n and not text[i].isspace() and text[i] != ">":
                    i += 1
                raw = text[start:i]
            attrs[key] = _unescape_attr(raw, text, begin)
        else:
            attrs[key] = ""


def _unescape_attr(raw: str, text: str, begin: int) -> str:
    out = []
    i = 0
    while i < len(raw):
        if raw[i] == "&":
            decoded = _decode_html_entity(raw, i)
            if decoded is None:
                raise EntityParseError(
                    f"Character '&' in an attribute must be written &amp; (tag at byte offset "
                    f"{_byte_offset(text, begin)})"
                )
            out.append(decoded[0])
            i = decoded[1]
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """``text`` in Telegram's HTML style as (plain text, entities); raises :class:`EntityParseError`."""
    out = _Builder()
    stack: list[_OpenTag] = []
    entities: list[dict[str, Any]] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is None:
                raise EntityParseError(
                    f"Character '&' must be part of an HTML entity (&amp; &lt; &gt; &quot; &#N;) at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            out.add(decoded[0])
            i = decoded[1]
            continue
        if ch != "<":  # a run of plain text, up to the next tag or entity
            end = _HTML_SPECIAL.search(text, i)
            stop = end.start() if end is not None else n
            out.add(text[i:stop])
            i = stop
            continue
        begin = i
        if text.startswith("</", i):
            match = _HTML_END_TAG.match(text, i)
            if match is None:
                raise EntityParseError(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
            name = match.group(1).lower()
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
            top = stack.pop()
            if top.tag != name:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {_byte_offset(text, begin)}, expected "</{top.tag}>", found '
                    f'"</{name}>"'
                )
            _close_html_tag(top, stack, out.pos, entities)
            i = match.end()
            continue
        match = _HTML_TAG_NAME.match(text, i + 1)
        if match is None:
            raise EntityParseError(
                f"Character '<' must start a tag; write &lt; for a literal '<', at byte offset {_byte_offset(text, i)}"
            )
        name = match.group().lower()
        if name not in _HTML_TYPES:
            raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, begin)}')
        attrs, i = _html_attrs(text, match.end(), name, begin)
        kind = _HTML_TYPES[name]
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise EntityParseError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, begin)}'
            )
        if name == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
            raise EntityParseError(
                f'Tag "tg-emoji" must have a numeric "emoji-id" attribute at byte offset {_byte_offset(text, begin)}'
            )
        if name == "blockquote" and "expandable" in attrs:
            kind = "expandable_blockquote"
        stack.append(_OpenTag(name, kind, out.pos, begin, attrs))
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    return out.text(), _sorted_entities(entities)


def _close_html_tag(tag: _OpenTag, stack: list[_OpenTag], end: int, entities: list[dict[str, Any]]) -> None:
    parent = stack[-1] if stack else None
    if tag.tag == "code" and parent is not None and parent.tag == "pre":
        css = tag.attrs.get("class", "")
        if css.startswith("language-") and len(css) > len("language-"):
            parent.language = css[len("language-") :]
        return  # <pre><code class="language-x"> is one pre entity
    if any(open_tag.tag in ("code", "pre") for open_tag in stack):
        return  # pre and code entities can't contain other entities
    extra: dict[str, Any] = {}
    if tag.kind == "text_link":
        href = tag.attrs.get("href", "").strip()
        if not href:
            return
        extra["url"] = href
    elif tag.kind == "pre":
        extra["language"] = tag.language
    elif tag.kind == "custom_emoji":
        extra["custom_emoji_id"] = tag.attrs["emoji-id"]
    entities.append(_entity(tag.kind, tag.start, end - tag.start, **extra))


MARKDOWN_V2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}
_MD2_SIMPLE = {"*": "bold", "~": "strikethrough"}


@dataclass
class _OpenMark:
    kind: str
    start: int  # UTF-16 offset in the plain text
    byte: int
    index: int  # position in the builder's parts
    language: str | None = None


def _reserved(ch: str) -> EntityParseError:
    return EntityParseError(f"Character '{ch}' is reserved and must be escaped with the preceding '\\'")


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """``text`` in MarkdownV2 as (plain text, entities); raises :class:`EntityParseError`.

    Bold ``*``, italic ``_``, underline ``__`` (taken greedily, like Telegram), strikethrough ``~``,
    spoiler ``||``, code, pre (with a language), ``[text](url)``, ``![emoji](tg://emoji?id=N)`` and
    ``>`` blockquotes at line starts. Outside entities every reserved character needs a backslash.
    """
    out = _Builder()
    stack: list[_OpenMark] = []
    entities: list[dict[str, Any]] = []
    quote: _OpenMark | None = None
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        top = stack[-1] if stack else None
        in_code = top is not None and top.kind in ("code", "pre")
        line_start = i == 0 or text[i - 1] == "\n"
        if quote is not None and line_start and i > 0 and not in_code and ch != ">":
            entities.append(_entity("blockquote", quote.start, out.pos - 1 - quote.start))
            quote = None
        if ch == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.add(text[i + 1])
            i += 2
            continue
        if in_code:
            assert top is not None
            if ch == "`" and (top.kind == "code" or text.startswith("```", i)):
                stack.pop()
                entities.append(_entity(top.kind, top.start, out.pos - top.start, language=top.language))
                i += 1 if top.kind == "code" else 3
                continue
            out.add(ch)
            i += 1
            continue
        if ch not in MARKDOWN_V2_RESERVED:
            out.add(ch)
            i += 1
            continue
        if ch == ">" and line_start:
            if quote is None:
                quote = _OpenMark("blockquote", out.pos, _byte_offset(text, i), len(out.parts))
            i += 1
            continue
        kind: str | None = None
        width = 1
        if ch == "_":
            kind, width = ("underline", 2) if text.startswith("__", i) else ("italic", 1)
        elif ch in _MD2_SIMPLE:
            kind = _MD2_SIMPLE[ch]
        elif ch == "|" and text.startswith("||", i):
            kind, width = "spoiler", 2
        if kind is not None:
            if top is not None and top.kind == kind:
                stack.pop()
                entities.append(_entity(kind, top.start, out.pos - top.start))
            else:
                stack.append(_OpenMark(kind, out.pos, _byte_offset(text, i), len(out.parts)))
            i += width
            continue
        if ch == "[" or (ch == "!" and text.startswith("![", i)):
            kind = "text_link" if ch == "[" else "custom_emoji"
            stack.append(_OpenMark(kind, out.pos, _byte_offset(text, i), len(out.parts)))
            i += 1 if ch == "[" else 2
            continue
        if ch == "]" and top is not None and top.kind in ("text_link", "custom_emoji"):
            stack.pop()
            i = _md2_link_end(text, i, top, out, entities)
            continue
        if ch == "`":
            if text.startswith("```", i):
                i += 3
                end = i
                while end < n and not text[end].isspace() and text[end] != "`":
                    end += 1
                language = None
                if end > i and end < n and text[end] != "`":
                    language, i = text[i:end], end
                if i < n and text[i] in "\r\n":
                    i += 2 if i + 1 < n and text[i + 1] in "\r\n" and text[i + 1] != text[i] else 1
                stack.append(_OpenMark("pre", out.pos, _byte_offset(text, i - 3), len(out.parts), language))
            else:
                stack.append(_OpenMark("code", out.pos, _byte_offset(text, i), len(out.parts)))
                i += 1
            continue
        raise _reserved(ch)
    if stack:
        top = stack[-1]
        raise EntityParseError(f"Can't find end of {_MD2_NAMES[top.kind]} entity at byte offset {top.byte}")
    if quote is not None:
        entities.append(_entity("blockquote", quote.start, out.pos - quote.start))
    return out.text(), _sorted_entities(entities)


def _md2_link_end(text: str, i: int, mark: _OpenMark, out: _Builder, entities: list[dict[str, Any]]) -> int:
    """Close a ``[text](url)`` (``i`` is at ``]``); returns the index after it."""
    n = len(text)
    if i + 1 < n and text[i + 1] == "(":
        url_chars = []
        j = i + 2
        while j < n and text[j] != ")":
            if text[j] == "\\" and j + 1 < n and 0 < ord(text[j + 1]) <= 126:
                url_chars.append(text[j + 1])
                j += 2
            else:
                url_chars.append(text[j])
                j += 1
        if j >= n:
            raise EntityParseError(f"Can't find end of a URL at byte offset {_byte_offset(text, i + 1)}")
        url = "".join(url_chars)
        end = j + 1
    else:
        url = out.since(mark.index)
        end = i + 1
    length = out.pos - mark.start
    if mark.kind == "custom_emoji":
        match = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
        if match is None:
            raise EntityParseError(f"Custom emoji URL must be tg://emoji?id=<id> at byte offset {mark.byte}")
        entities.append(_entity("custom_emoji", mark.start, length, custom_emoji_id=match.group(1)))
    elif _looks_like_url(url):
        entities.append(_entity("text_link", mark.start, length, url=url))
    return end


def _looks_like_url(url: str) -> bool:
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return False
    parts = urlsplit(url if "://" in url or url.startswith(("tg:", "mailto:")) else "http://" + url)
    if parts.scheme in ("http", "https"):
        return "." in parts.netloc or parts.netloc.split(":")[0] in ("localhost", "127.0.0.1")
    return parts.scheme in ("tg", "ton", "mailto", "ftp")


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Legacy ``Markdown``: ``*bold*``, ``_italic_``, code, pre, ``[text](url)``; no nesting."""
    out = _Builder()
    entities: list[dict[str, Any]] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if ch not in "_*`[":
            out.add(ch)
            i += 1
            continue
        begin = i
        unclosed = EntityParseError(f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}")
        if ch == "[":
            close = text.find("]", i + 1)
            if close < 0:
                raise unclosed
            label = text[i + 1 : close]
            start = out.pos
            out.add(label)
            if close + 1 < n and text[close + 1] == "(":
                url_end = text.find(")", close + 2)
                if url_end < 0:
                    raise unclosed
                url = text[close + 2 : url_end]
                i = url_end + 1
            else:
                url, i = label, close + 1
            if _looks_like_url(url):
                entities.append(_entity("text_link", start, out.pos - start, url=url))
            continue
        if text.startswith("```", i):
            close = text.find("```", i + 3)
            if close < 0:
                raise unclosed
            body = text[i + 3 : close]
            language = None
            first, newline, rest = body.partition("\n")
            if newline and not any(c.isspace() for c in first):
                language, body = first or None, rest
            start = out.pos
            out.add(body)
            entities.append(_entity("pre", start, out.pos - start, language=language))
            i = close + 3
            continue
        close = text.find(ch, i + 1)
        if close < 0:
            raise unclosed
        start = out.pos
        out.add(text[i + 1 : close])
        kind = {"*": "bold", "_": "italic", "`": "code"}[ch]
        entities.append(_entity(kind, start, out.pos - start))
        i = close + 1
    return out.text(), _sorted_entities(entities)


PARSERS: dict[str, Callable[[str], tuple[str, list[dict[str, Any]]]]] = {
    "html": parse_html,
    "markdownv2": parse_markdown_v2,
    "markdown": parse_markdown,
}


def detect_entities(text: str) -> list[dict[str, Any]]:
    """What Telegram marks up in a user's plain message: a leading bot command and http(s) URLs."""
    entities = []
    command = _BOT_COMMAND.match(text)
    if command:
        entities.append(_entity("bot_command", 0, utf16_len(command.group())))
    for match in _URL_IN_TEXT.finditer(text):
        entities.append(_entity("url", utf16_len(text[: match.start()]), utf16_len(match.group())))
    return _sorted_entities(entities)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class MessageEdit:
    """One accepted edit of a bot message: the content after it."""

    method: str
    text: str
    raw_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    date: int
    at: float  # time.monotonic()


@dataclass
class SentMessage:
    """A message the bot sent; ``text``/``entities``/``reply_markup`` are its current (edited) state.

    For a document ``text`` is the caption and ``document`` describes the file.
    """

    message_id: int
    chat_id: int
    text: str
    raw_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    date: int
    sent_at: float  # time.monotonic()
    method: str = "sendMessage"
    edits: list[MessageEdit] = field(default_factory=list)
    edit_date: int | None = None
    document: dict[str, Any] | None = None
    reply_to_message_id: int | None = None
    link_preview_options: dict[str, Any] | None = None
    disable_notification: bool = False
    deleted: bool = False

    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row by row, flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]

    def callback_data(self) -> list[str]:
        return [b["callback_data"] for b in self.buttons() if "callback_data" in b]


@dataclass
class CallbackAnswer:
    callback_query_id: str
    user_id: int
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int
    at: float  # time.monotonic()


@dataclass
class SentDocument:
    chat_id: int
    message_id: int
    file_id: str
    file_unique_id: str
    file_name: str | None
    mime_type: str | None
    data: bytes
    caption: str
    at: float  # time.monotonic()


@dataclass
class SendRecord:
    """An accepted message-sending call (the ones flood control counts)."""

    method: str
    chat_id: int
    message_id: int
    at: float  # time.monotonic()


@dataclass
class Throttle:
    """A 429 the flood control answered: ``scope`` is "global", "chat" or "group"."""

    method: str
    chat_id: int
    scope: str
    retry_after: int
    at: float


@dataclass
class WebhookDelivery:
    update_id: int
    attempts: int
    status: int | None  # the last HTTP status, None when the connection failed
    delivered: bool
    error: str | None
    at: float


@dataclass
class Fault:
    method: str  # lower-cased method name, or "*"
    kind: str
    params: dict[str, Any]
    remaining: int | None
    skip: int = 0  # matching calls still to let through before misbehaving


@dataclass
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    file_name: str | None
    mime_type: str | None
    file_path: str


@dataclass
class _CallbackQuery:
    query_id: str
    user_id: int
    created: float
    answered: bool = False


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = JSON_UTF8
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: str | None = None  # "close" or "reset": no answer at all


class TelegramError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        parameters: dict[str, Any] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass
class _Described:
    """A result sent with a ``description`` (setWebhook says "Webhook was set")."""

    result: Any
    description: str


def _bad(description: str) -> TelegramError:
    return TelegramError(400, "Bad Request: " + description)


def _too_many(retry_after: int) -> TelegramError:
    return TelegramError(
        429,
        f"Too Many Requests: retry after {retry_after}",
        parameters={"retry_after": retry_after},
        headers=[("Retry-After", str(retry_after))],
    )


class _Serialized(str):
    """A method's result already as JSON text (a send's answer: serialized once, under the lock)."""


def _ok_reply(result: Any) -> Reply:
    if isinstance(result, _Serialized):
        return Reply(200, ('{"ok": true, "result": ' + result + "}").encode("utf-8"), JSON_UTF8, [])
    return _json_reply(200, {"ok": True, "result": result})


def _json_reply(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, json.dumps(value, ensure_ascii=False).encode("utf-8"), JSON_UTF8, headers or [])


def _error_reply(error: TelegramError) -> Reply:
    return _json_reply(error.status, error.body(), error.headers)


# --------------------------------------------------------------------------------------------
# Parameters (JSON values, or strings from a form / query string)
# --------------------------------------------------------------------------------------------


def _param_int(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad(f'field "{name}" must be an Integer')
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _bad(f'field "{name}" must be an Integer')


def _param_bool(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _param_str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _param_json(params: dict[str, Any], name: str, error: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _bad(error) from None
    return value


def validate_reply_markup(raw: Any) -> dict[str, Any] | None:
    """A reply markup (an object, or its JSON string) checked like Telegram; raises :class:`TelegramError`."""
    if raw is None or raw == "":
        return None
    markup = raw
    if isinstance(raw, str):
        try:
            markup = json.loads(raw)
        except ValueError:
            raise _bad("can't parse reply keyboard markup JSON object") from None
    if not isinstance(markup, dict):
        raise _bad("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list):
            raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
        total = 0
        for row in rows:
            if not isinstance(row, list):
                raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
            for button in row:
                _validate_button(button)
                total += 1
        if total > MAX_BUTTONS:
            raise _bad("reply markup is too long")
        return markup
    if "keyboard" in markup:
        if not isinstance(markup["keyboard"], list) or not all(isinstance(r, list) for r in markup["keyboard"]):
            raise _bad('field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays')
        return markup
    if markup.get("remove_keyboard") is True or markup.get("force_reply") is True:
        return markup
    raise _bad("can't parse reply keyboard markup JSON object")


def _validate_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise _bad("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise _bad('can\'t parse inline keyboard button: Field "text" must be of type String')
    if not text.strip():
        raise _bad("can't parse inline keyboard button: Text must be non-empty")
    actions = [key for key in BUTTON_ACTIONS if key in button]
    if not actions:
        raise _bad("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        raise _bad(
            f"can't parse inline keyboard button: exactly one of the optional fields must be used, got {actions}"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
            raise _bad("BUTTON_DATA_INVALID")
    if "url" in button and (not isinstance(button["url"], str) or not _looks_like_url(button["url"])):
        raise _bad("BUTTON_URL_INVALID")


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, Upload]]:
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    fields: dict[str, Any] = {}
    files: dict[str, Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = Upload(filename, part.get_content_type(), data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def parse_params(content_type: str, body: bytes, query: str) -> tuple[dict[str, Any], dict[str, Upload]]:
    """Request parameters from the query string and a JSON, form-urlencoded or multipart body."""
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    files: dict[str, Upload] = {}
    kind = content_type.split(";")[0].strip().lower()
    if not body:
        return params, files
    if kind == "application/json":
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _bad("can't parse JSON object") from None
        if not isinstance(data, dict):
            raise _bad("can't parse JSON object")
        params.update(data)
    elif kind == "multipart/form-data":
        try:
            fields, files = _parse_multipart(content_type, body)
        except Exception:
            raise _bad("can't parse multipart/form-data request") from None
        params.update(fields)
    else:
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params, files


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


Method = Callable[[dict[str, Any], dict[str, Upload]], Any]


class TelegramServer(LoopbackServer):
    """The Telegram Bot API on a loopback port; see the module docstring.

    The socket is bound at construction, so ``base_url`` (``http://127.0.0.1:PORT/bot``, what
    ``telegram.Bot(token, base_url=...)`` takes) and ``base_file_url`` are known before :meth:`start`.
    Requests must use ``token``; the bot is ``bot_id`` (default: the number before the token's colon),
    ``username`` and ``first_name``.

    Flood control (``enforce_limits``): at most ``global_rate`` message sends per second across all chats
    and ``per_chat_rate`` per second in one chat, each allowed ``burst_tolerance`` extra; group chats also
    at most ``group_rate`` per minute. ``None`` turns one limit off. Sends are sendMessage, sendDocument,
    editMessageText and editMessageReplyMarkup; a window holds the accepted sends of the last second (or
    minute), and a send is refused with 429 when its window is already full. Webhook deliveries are tried
    ``webhook_attempts`` times, ``webhook_retry_delay`` seconds apart, each with ``webhook_timeout``.
    """

    _thread_name = "telegram-api"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        bot_id: int | None = None,
        username: str = "hnpal_sandbox_bot",
        first_name: str = "HN Pal (sandbox)",
        enforce_limits: bool = True,
        global_rate: int | None = 30,
        per_chat_rate: int | None = 1,
        group_rate: int | None = 20,
        burst_tolerance: int = 0,
        webhook_attempts: int = 4,
        webhook_retry_delay: float = 0.1,
        webhook_timeout: float = 5.0,
        first_update_id: int = 1,
        verbose: bool = False,
    ) -> None:
        prefix = token.split(":", 1)[0]
        self.token = token
        self.bot_id = bot_id if bot_id is not None else (int(prefix) if prefix.isdigit() else 123456)
        self.username = username
        self.first_name = first_name
        self.enforce_limits = enforce_limits
        self.global_rate = global_rate
        self.per_chat_rate = per_chat_rate
        self.group_rate = group_rate
        self.burst_tolerance = burst_tolerance
        self.webhook_attempts = webhook_attempts
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_timeout = webhook_timeout
        self.first_update_id = first_update_id
        self.verbose = verbose
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._methods: dict[str, tuple[str, Method]] = {
            name.lower(): (name, fn)
            for name, fn in (
                ("getMe", self._get_me),
                ("logOut", self._log_out),
                ("close", self._log_out),
                ("getUpdates", self._get_updates),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("sendMessage", self._send_message),
                ("editMessageText", self._edit_message_text),
                ("editMessageReplyMarkup", self._edit_message_reply_markup),
                ("deleteMessage", self._delete_message),
                ("answerCallbackQuery", self._answer_callback_query),
                ("sendDocument", self._send_document),
                ("getFile", self._get_file),
                ("sendChatAction", self._send_chat_action),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
                ("getChat", self._get_chat),
            )
        }
        self._clear_state(keep_users=False)
        self.root_url = self._bind(host, port, _Handler, "telegram")
        self.base_url = self.root_url + "/bot"
        self.base_file_url = self.root_url + "/file/bot"

    def _clear_state(self, *, keep_users: bool) -> None:
        if not keep_users:
            self._users: dict[int, dict[str, Any]] = {}
            self._chats: dict[int, dict[str, Any]] = {}
        self.blocked: set[int] = set()
        self.deactivated: set[int] = set()
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = self.first_update_id
        self._allowed_updates: list[str] | None = None
        self._poll_generation = getattr(self, "_poll_generation", 0)  # kept: a waiting long poll survives reset
        self._next_message_id: dict[int, int] = defaultdict(int)
        self._sent: dict[tuple[int, int], SentMessage] = {}
        self._sent_order: list[SentMessage] = []
        self._user_messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._callback_queries: dict[str, _CallbackQuery] = {}
        self._next_callback = 0
        self._files: dict[str, _StoredFile] = {}
        self._file_paths: dict[str, _StoredFile] = {}
        self._commands: dict[str, list[dict[str, str]]] = {}
        self._webhook: dict[str, Any] | None = None
        self._webhook_generation = getattr(self, "_webhook_generation", 0) + 1
        self._webhook_error: tuple[int, str] | None = None
        self._global_window: deque[float] = deque()
        self._chat_windows: dict[int, deque[float]] = defaultdict(deque)
        self._group_windows: dict[int, deque[float]] = defaultdict(deque)
        self._faults: list[Fault] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.documents: list[SentDocument] = []
        self.chat_actions: list[tuple[int, str]] = []
        self.sends: list[SendRecord] = []
        self.throttled: list[Throttle] = []
        self.too_many_requests = 0
        self.too_many_requests_per_chat: dict[int, int] = defaultdict(int)
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.request_log: list[tuple[str, int]] = []
        self.errors: list[tuple[str, int, str]] = []  # (method, status, description) of every error answer
        self.requests: list[dict[str, Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        with self._cond:
            self._webhook_generation += 1
            self._stopping.set()
            self._cond.notify_all()
        super().stop()

    # -- configuration ---------------------------------------------------------------------------

    def set_limits(
        self,
        *,
        global_rate: int | None | EllipsisType = ...,
        per_chat_rate: int | None | EllipsisType = ...,
        group_rate: int | None | EllipsisType = ...,
        burst_tolerance: int | None = None,
        enforce: bool | None = None,
    ) -> None:
        """Change flood control; arguments left out keep their value, ``None`` rates turn a limit off
        (paid broadcasts would be ``global_rate=1000``)."""
        with self._lock:
            if not isinstance(global_rate, EllipsisType):
                self.global_rate = global_rate
            if not isinstance(per_chat_rate, EllipsisType):
                self.per_chat_rate = per_chat_rate
            if not isinstance(group_rate, EllipsisType):
                self.group_rate = group_rate
            if burst_tolerance is not None:
                self.burst_tolerance = burst_tolerance
            if enforce is not None:
                self.enforce_limits = enforce

    def set_fault(self, method: str, kind: str, count: int | None = 1, *, skip: int = 0, **params: Any) -> None:
        """Calls of ``method`` (any case; ``"*"`` for every method) misbehave as ``kind``: for the next
        ``count`` calls (after letting ``skip`` of them through), or until :meth:`clear_faults` when
        ``count`` is None. The most recently set matching fault wins.

        Kinds and their params (defaults):

        * ``error_500(description="Internal Server Error")``: 500 in the Bot API error shape;
        * ``bad_gateway``: 502 with nginx's HTML page, as Telegram's front end sometimes answers;
        * ``bad_request(description="message can't be edited")``: 400 (an edit of a message older than
          48 hours, or otherwise no longer editable, is refused so);
        * ``too_many_requests(retry_after=1)``: 429 with ``parameters.retry_after`` (not counted in
          :attr:`too_many_requests`, which counts enforced limits only);
        * ``timeout(seconds=30)``: wait, then answer normally (the client's timeout fires first);
        * ``drop(mode="close"|"reset")``: the connection ends without an answer.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        with self._lock:
            self._faults.append(Fault(method.lower(), kind, dict(params), count, skip))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self, *, keep_users: bool = False) -> None:
        """Forget everything that happened: updates, messages, answers, documents, counters, logs, faults,
        the webhook, commands, blocks, and (unless ``keep_users``) users and chats. The bot identity and
        the limit settings stay."""
        with self._cond:
            self._clear_state(keep_users=keep_users)
            self._cond.notify_all()

    # -- scripting: users and their actions ------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        first_name: str = "Test",
        username: str | None = None,
        language_code: str | None = "en",
        *,
        last_name: str | None = None,
        is_premium: bool | None = None,
    ) -> dict[str, Any]:
        """Register a user and their private chat with the bot (as if they had pressed Start); returns
        the ``User`` object. Registering again updates the profile."""
        if user_id <= 0:
            raise ValueError("user ids are positive")
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        for key, value in (
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
            ("is_premium", is_premium),
        ):
            if value is not None:
                user[key] = value
        chat = {"id": user_id, "type": "private", "first_name": first_name}
        if last_name:
            chat["last_name"] = last_name
        if username:
            chat["username"] = username
        with self._lock:
            self._users[user_id] = user
            self._chats[user_id] = chat
        return dict(user)

    def add_group(self, chat_id: int, title: str = "Test group", *, chat_type: str = "group") -> dict[str, Any]:
        """Register a group or supergroup (negative ``chat_id``) the bot is a member of."""
        if chat_id >= 0:
            raise ValueError("group chat ids are negative")
        if chat_type not in ("group", "supergroup"):
            raise ValueError("chat_type must be 'group' or 'supergroup'")
        chat = {"id": chat_id, "type": chat_type, "title": title}
        with self._lock:
            self._chats[chat_id] = chat
        return dict(chat)

    def block(self, user_id: int) -> None:
        """The user blocks the bot (for a group id: the bot is kicked); sends answer 403."""
        with self._lock:
            self.blocked.add(user_id)

    def unblock(self, user_id: int) -> None:
        with self._lock:
            self.blocked.discard(user_id)

    def deactivate(self, user_id: int) -> None:
        """The user deletes their account; sends answer 403 "user is deactivated"."""
        with self._lock:
            self.deactivated.add(user_id)

    def _user_for(self, user_id: int) -> dict[str, Any]:
        user = self._users.get(user_id)
        if user is None:
            self.add_user(user_id)
            user = self._users[user_id]
        if user_id in self.deactivated:
            raise ValueError(f"user {user_id} is deactivated and can't act")
        return user

    def _chat_for(self, user_id: int, chat_type: str, chat_id: int | None) -> dict[str, Any]:
        if chat_type == "private":
            if chat_id is not None and chat_id != user_id:
                raise ValueError("a private chat's id is the user's id")
            return self._chats[user_id]
        if chat_id is None or chat_id >= 0:
            raise ValueError("group chats need a negative chat_id")
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self.add_group(chat_id, chat_type=chat_type)
        return chat

    def send_user_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        chat_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """The user writes ``text`` to the bot (or in a group, ``chat_type="group"``/``"supergroup"``
        with a negative ``chat_id``); queues a ``message`` update and returns it. Entities default to
        what Telegram detects (a leading ``/command``, URLs). Writing to the bot unblocks it."""
        with self._cond:
            user = self._user_for(user_id)
            chat = self._chat_for(user_id, chat_type, chat_id)
            if chat["type"] == "private":
                self.blocked.discard(user_id)
            message_id = self._new_message_id(chat["id"])
            message: dict[str, Any] = {
                "message_id": message_id,
                "from": dict(user),
                "chat": dict(chat),
                "date": int(time.time()),
                "text": text,
            }
            found = detect_entities(text) if entities is None else entities
            if found:
                message["entities"] = found
            if reply_to_message_id is not None:
                replied = self._message_object(chat["id"], reply_to_message_id)
                if replied is not None:
                    message["reply_to_message"] = replied
            self._user_messages[(chat["id"], message_id)] = message
            return self._enqueue({"message": message})

    def edit_user_message(
        self, user_id: int, message_id: int, text: str, *, chat_id: int | None = None
    ) -> dict[str, Any]:
        """The user edits a message they sent; queues an ``edited_message`` update and returns it."""
        with self._cond:
            key = (user_id if chat_id is None else chat_id, message_id)
            original = self._user_messages.get(key)
            if original is None or original["from"]["id"] != user_id:
                raise ValueError(f"user {user_id} sent no message {message_id} in chat {key[0]}")
            original["text"] = text
            original["edit_date"] = int(time.time())
            found = detect_entities(text)
            if found:
                original["entities"] = found
            else:
                original.pop("entities", None)
            return self._enqueue({"edited_message": json.loads(json.dumps(original))})

    def press_button(
        self, user_id: int, message_id: int, callback_data: str, *, chat_id: int | None = None, check: bool = True
    ) -> dict[str, Any]:
        """The user presses an inline button of bot message ``message_id``; queues a ``callback_query``
        update (with the message as it is now) and returns it. With ``check`` the message must exist
        and carry a button with this ``callback_data``."""
        with self._cond:
            user = self._user_for(user_id)
            target_chat = user_id if chat_id is None else chat_id
            sent = self._sent.get((target_chat, message_id))
            if check:
                if sent is None or sent.deleted:
                    raise ValueError(f"no bot message {message_id} in chat {target_chat}")
                if callback_data not in sent.callback_data():
                    raise ValueError(
                        f"message {message_id} has no button with callback_data {callback_data!r} "
                        f"(has {sent.callback_data()})"
                    )
            self._next_callback += 1
            query_id = str(4_000_000_000_000_000 + self.bot_id % 1000 * 1_000_000 + self._next_callback)
            query: dict[str, Any] = {
                "id": query_id,
                "from": dict(user),
                "chat_instance": str((target_chat * 7_919_131 + self.bot_id) % 10**19),
                "data": callback_data,
            }
            if sent is not None and not sent.deleted:
                query["message"] = self._sent_object(sent)
            self._callback_queries[query_id] = _CallbackQuery(query_id, user_id, time.monotonic())
            return self._enqueue({"callback_query": query})

    def inject_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue any update as given (hostile or malformed ones included); ``update_id`` is assigned when
        absent, and a given one moves the counter past it. Like every update it is subject to
        ``allowed_updates`` (by default Telegram leaves out chat_member and message reactions)."""
        with self._cond:
            return self._enqueue(json.loads(json.dumps(update)))

    def _enqueue(self, update: dict[str, Any]) -> dict[str, Any]:
        """Under the lock: give ``update`` an id and queue it (unless ``allowed_updates`` filters it)."""
        given = update.get("update_id")
        if isinstance(given, int) and not isinstance(given, bool):
            self._next_update_id = max(self._next_update_id, given + 1)
        else:
            update = {"update_id": self._next_update_id, **{k: v for k, v in update.items() if k != "update_id"}}
            self._next_update_id += 1
        kinds = [key for key in update if key != "update_id"]
        kind = kinds[0] if kinds else ""
        allowed = self._allowed_updates
        wanted = kind in allowed if allowed else kind not in DEFAULT_EXCLUDED_UPDATES
        if wanted:
            self._updates.append(update)
            self._cond.notify_all()
        return json.loads(json.dumps(update))

    # -- scripting: what the bot did ----------------------------------------------------------

    def messages(self, chat_id: int, *, include_deleted: bool = True) -> list[SentMessage]:
        """The bot's messages in ``chat_id``, oldest first (edits show in their current state)."""
        with self._lock:
            return [m for m in self._sent_order if m.chat_id == chat_id and (include_deleted or not m.deleted)]

    def all_messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._sent_order)

    def message(self, chat_id: int, message_id: int) -> SentMessage | None:
        with self._lock:
            return self._sent.get((chat_id, message_id))

    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed (getUpdates) or delivered (webhook)."""
        with self._lock:
            return len(self._updates)

    def user(self, user_id: int) -> dict[str, Any] | None:
        with self._lock:
            user = self._users.get(user_id)
            return dict(user) if user else None

    def commands(self, scope: dict[str, Any] | None = None, language_code: str = "") -> list[dict[str, str]]:
        with self._lock:
            return list(self._commands.get(self._commands_key(scope, language_code), []))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "a condition") -> None:
        """Block until ``predicate()`` (called under the lock) is true; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waited {timeout}s for {what}")
                self._cond.wait(min(left, 0.1))

    def wait_for_messages(self, chat_id: int, count: int = 1, timeout: float = 5.0) -> list[SentMessage]:
        """Block until the bot has sent at least ``count`` messages to ``chat_id``; returns them all."""
        try:
            self.wait_until(lambda: len(self.messages(chat_id)) >= count, timeout, f"{count} messages")
        except TimeoutError:
            texts = [m.text[:60] for m in self.messages(chat_id)]
            raise TimeoutError(
                f"waited {timeout}s for {count} bot message(s) in chat {chat_id}, got {len(texts)}: {texts}"
            ) from None
        return self.messages(chat_id)

    def max_sends_in_window(self, window: float = 1.0, chat_id: int | None = None) -> int:
        """The most accepted sends (all chats, or ``chat_id``) in any sliding ``window`` seconds."""
        with self._lock:
            times = [s.at for s in self.sends if chat_id is None or s.chat_id == chat_id]
        best = 0
        start = 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- plumbing --------------------------------------------------------------------------------

    def _take_fault(self, method: str) -> Fault | None:
        if not self._faults:  # the common case, without the lock
            return None
        with self._lock:
            for fault in reversed(self._faults):
                if fault.method in ("*", method.lower()):
                    if fault.skip:
                        fault.skip -= 1
                        return None
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _log(self, method: str, status: int) -> None:
        self.request_log.append((method, status))  # list.append is atomic
        if self.verbose:
            print(f"{method} {status}", file=sys.stderr, flush=True)

    def respond(self, http_method: str, raw_path: str, headers: Any, body: bytes) -> tuple[str, Reply]:
        """The reply to one HTTP request, and the Bot API method name to log it under."""
        name, outcome = self._respond(http_method, raw_path, headers, body)
        if isinstance(outcome, TelegramError):
            with self._lock:
                self.errors.append((name, outcome.status, outcome.description))
            return name, _error_reply(outcome)
        return name, outcome

    def _respond(self, http_method: str, raw_path: str, headers: Any, body: bytes) -> tuple[str, Reply | TelegramError]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        file_match = _FILE_PATH.match(path)
        if file_match and http_method in ("GET", "HEAD"):
            return "file", self._download(file_match.group("token"), file_match.group("path"))
        match = _PATH.match(path)
        if match is None:
            return path, TelegramError(404, "Not Found")
        name = match.group("method")
        if match.group("token") != self.token:
            return name, TelegramError(401, "Unauthorized")
        known = self._methods.get(name.lower())
        if known is None:
            return name, TelegramError(404, "Not Found")
        name, fn = known
        fault = self._take_fault(name)
        if fault is not None:
            reply = self._fault_reply(fault)
            if reply is not None:
                return name, reply
        try:
            params, files = parse_params(headers.get("Content-Type") or "", body, parts.query)
            with self._lock:
                self.requests.append({"method": name, "params": params, "at": time.monotonic()})
            result = fn(params, files)
        except TelegramError as error:
            return name, error
        if isinstance(result, _Described):
            return name, _json_reply(200, {"ok": True, "result": result.result, "description": result.description})
        return name, _ok_reply(result)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run an API method in-process (no HTTP, no faults); raises :class:`TelegramError`."""
        known = self._methods.get(method.lower())
        if known is None:
            raise TelegramError(404, "Not Found")
        result = known[1](params, {})
        return json.loads(result) if isinstance(result, _Serialized) else result

    def _fault_reply(self, fault: Fault) -> Reply | None:
        kind, params = fault.kind, fault.params
        if kind == "error_500":
            return _error_reply(TelegramError(500, str(params.get("description", "Internal Server Error"))))
        if kind == "bad_gateway":
            page = (
                b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
                b"</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
            )
            return Reply(502, page, "text/html")
        if kind == "bad_request":
            return _error_reply(_bad(str(params.get("description", "message can't be edited"))))
        if kind == "too_many_requests":
            return _error_reply(_too_many(max(1, int(params.get("retry_after", 1)))))
        if kind == "timeout":
            if self._stopping.wait(float(params.get("seconds", 30))):
                return Reply(drop="close")
            return None
        if kind == "drop":
            return Reply(drop=str(params.get("mode", "close")))
        raise ValueError(f"unknown fault kind {kind!r}")

    def _download(self, token: str, file_path: str) -> Reply:
        if token != self.token:
            return _error_reply(TelegramError(401, "Unauthorized"))
        with self._lock:
            stored = self._file_paths.get(file_path)
        if stored is None:
            return _error_reply(TelegramError(404, "Not Found"))
        return Reply(200, stored.data, stored.mime_type or "application/octet-stream")

    # -- chats, messages, limits (called with the lock held unless noted) -------------------------

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name, "username": self.username}

    def _resolve_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            name = raw[1:].lower()
            with self._lock:
                for chat in self._chats.values():
                    if chat["type"] != "private" and str(chat.get("username", "")).lower() == name:
                        return chat
            raise _bad("chat not found")
        try:
            chat_id = _param_int(params, "chat_id")
        except TelegramError:
            raise _bad("chat not found") from None
        with self._lock:
            chat = self._chats.get(chat_id) if chat_id is not None else None
        if chat is None:
            raise _bad("chat not found")
        return chat

    def _check_reachable(self, chat: dict[str, Any]) -> None:
        chat_id = chat["id"]
        if chat_id in self.deactivated:
            raise TelegramError(403, "Forbidden: user is deactivated")
        if chat_id in self.blocked:
            if chat["type"] == "private":
                raise TelegramError(403, "Forbidden: bot was blocked by the user")
            raise TelegramError(403, f"Forbidden: bot was kicked from the {chat['type']} chat")

    def _admit(self, method: str, chat: dict[str, Any], now: float) -> None:
        """Flood control for one send: raise 429 or count the send in the windows."""
        chat_id = chat["id"]
        windows: list[tuple[str, deque[float], int | None, float]] = [
            ("global", self._global_window, self.global_rate, 1.0),
            ("chat", self._chat_windows[chat_id], self.per_chat_rate, 1.0),
        ]
        if chat["type"] != "private":
            windows.append(("group", self._group_windows[chat_id], self.group_rate, GROUP_WINDOW))
        if self.enforce_limits:
            for scope, window, rate, span in windows:
                while window and window[0] <= now - span:
                    window.popleft()
                if rate is not None and len(window) >= rate + self.burst_tolerance:
                    retry_after = max(1, math.ceil(window[0] + span - now - 1e-9))
                    self.too_many_requests += 1
                    self.too_many_requests_per_chat[chat_id] += 1
                    self.throttled.append(Throttle(method, chat_id, scope, retry_after, now))
                    raise _too_many(retry_after)
        for _scope, window, _rate, span in windows:
            while window and window[0] <= now - span:
                window.popleft()
            window.append(now)

    def _new_message_id(self, chat_id: int) -> int:
        self._next_message_id[chat_id] += 1
        return self._next_message_id[chat_id]

    def _sent_object(self, sent: SentMessage, *, copy: bool = True) -> dict[str, Any]:
        """The Message object of a sent message; ``copy=False`` when it is only serialized at once (the
        answer to a send: it shares the stored lists, so it must not be kept or changed)."""
        message: dict[str, Any] = {
            "message_id": sent.message_id,
            "from": self._bot_user(),
            "chat": dict(self._chats[sent.chat_id]),
            "date": sent.date,
        }
        if sent.edit_date is not None:
            message["edit_date"] = sent.edit_date
        if sent.reply_to_message_id is not None:
            replied = self._message_object(sent.chat_id, sent.reply_to_message_id, nested=False)
            if replied is not None:
                message["reply_to_message"] = replied
        if sent.document is not None:
            message["document"] = dict(sent.document)
            if sent.text:
                message["caption"] = sent.text
                if sent.entities:
                    message["caption_entities"] = [dict(e) for e in sent.entities]
        else:
            message["text"] = sent.text
            if sent.entities:
                message["entities"] = [dict(e) for e in sent.entities]
            if sent.link_preview_options:
                message["link_preview_options"] = sent.link_preview_options
        if sent.reply_markup and "inline_keyboard" in sent.reply_markup:
            message["reply_markup"] = {"inline_keyboard": sent.reply_markup["inline_keyboard"]}
        return json.loads(json.dumps(message)) if copy else message

    def _message_object(self, chat_id: int, message_id: int, *, nested: bool = True) -> dict[str, Any] | None:
        sent = self._sent.get((chat_id, message_id))
        if sent is not None and not sent.deleted:
            obj = self._sent_object(sent)
        elif (chat_id, message_id) in self._user_messages:
            obj = json.loads(json.dumps(self._user_messages[(chat_id, message_id)]))
        else:
            return None
        if not nested:
            obj.pop("reply_to_message", None)
        return obj

    def _formatted(
        self, params: dict[str, Any], text_key: str, entities_key: str, limit: int, *, caption: bool
    ) -> tuple[str, str, str | None, list[dict[str, Any]]]:
        """(plain text, raw text, parse mode, entities) of a text or caption, validated like Telegram."""
        raw = _param_str(params, text_key) or ""
        parse_mode = _param_str(params, "parse_mode") or None
        given = _param_json(params, entities_key, f"can't parse {entities_key} JSON object")
        if given:
            if not isinstance(given, list) or not all(isinstance(e, dict) for e in given):
                raise _bad(f"can't parse {entities_key} JSON object")
            plain, entities = raw, _sorted_entities([e for e in given if isinstance(e.get("length"), int)])
        elif parse_mode:
            parser = PARSERS.get(parse_mode.lower())
            if parser is None:
                raise _bad(f"unsupported parse_mode {parse_mode!r}")
            try:
                plain, entities = parser(raw)
            except EntityParseError as exc:
                raise _bad(f"can't parse entities: {exc}") from None
        else:
            plain, entities = raw, []
        plain, entities = trim_text(plain, entities)
        if not plain and not caption:
            raise _bad("message text is empty")
        if utf16_len(plain) > limit:
            raise _bad("message caption is too long" if caption else "message is too long")
        return plain, raw, parse_mode, entities

    def _reply_to(self, params: dict[str, Any], chat_id: int) -> int | None:
        reply = _param_json(params, "reply_parameters", "can't parse reply parameters JSON object")
        message_id = _param_int(params, "reply_to_message_id")
        allow_missing = _param_bool(params, "allow_sending_without_reply")
        if isinstance(reply, dict):
            message_id = _param_int(reply, "message_id")
            allow_missing = allow_missing or _param_bool(reply, "allow_sending_without_reply")
        if message_id is None:
            return None
        with self._lock:
            exists = self._message_object(chat_id, message_id) is not None
        if exists:
            return message_id
        if allow_missing:
            return None
        raise _bad("message to be replied not found")

    def _record_send(
        self, method: str, chat: dict[str, Any], build: Callable[[int, int, float], SentMessage]
    ) -> SentMessage:
        """Check reachability and flood control, then create the message (all under the lock)."""
        with self._cond:
            self._check_reachable(chat)
            now = time.monotonic()
            self._admit(method, chat, now)
            message_id = self._new_message_id(chat["id"])
            sent = build(message_id, int(time.time()), now)
            self._sent[(chat["id"], message_id)] = sent
            self._sent_order.append(sent)
            self.sends.append(SendRecord(method, chat["id"], message_id, now))
            self._cond.notify_all()
            return sent

    # -- methods ---------------------------------------------------------------------------------

    def _get_me(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _log_out(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        return True

    def _get_updates(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        offset = _param_int(params, "offset")
        limit = _param_int(params, "limit")
        limit = 100 if limit is None else min(max(limit, 1), 100)
        timeout = _param_int(params, "timeout") or 0
        allowed = _param_json(params, "allowed_updates", "can't parse allowed_updates JSON object")
        deadline = time.monotonic() + max(timeout, 0)
        with self._cond:
            if self._webhook is not None:
                raise TelegramError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                    "the webhook first",
                )
            if isinstance(allowed, list):
                self._allowed_updates = [str(kind) for kind in allowed]
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # an older long poll ends with a conflict
            self._confirm(offset)
            while True:
                batch = [u for u in self._updates if offset is None or offset <= 0 or u["update_id"] >= offset]
                if batch:
                    return json.loads(json.dumps(batch[:limit]))
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return []
                self._cond.wait(min(left, 0.5))
                if self._poll_generation != generation:
                    raise TelegramError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
                        "is running",
                    )
                if self._webhook is not None:
                    raise TelegramError(409, "Conflict: terminated by setWebhook request")

    def _confirm(self, offset: int | None) -> None:
        """Drop the updates an ``offset`` confirms (all below it; a negative one keeps the last -offset)."""
        if offset is None or offset == 0:
            return
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        else:
            self._updates = self._updates[offset:] if -offset < len(self._updates) else self._updates

    def _set_webhook(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        url = (_param_str(params, "url") or "").strip()
        if not url:
            self._delete_webhook(params, files)
            return _Described(True, "Webhook was deleted")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = _param_str(params, "secret_token")
        if secret is not None and not _SECRET.match(secret):
            raise _bad("bad webhook: secret token contains unallowed characters")
        allowed = _param_json(params, "allowed_updates", "can't parse allowed_updates JSON object")
        max_connections = _param_int(params, "max_connections") or 40
        with self._cond:
            if isinstance(allowed, list):
                self._allowed_updates = [str(kind) for kind in allowed]
            if _param_bool(params, "drop_pending_updates"):
                self._updates.clear()
            same = self._webhook is not None and self._webhook["url"] == url
            self._webhook = {"url": url, "secret_token": secret, "max_connections": max_connections}
            self._webhook_error = None
            self._webhook_generation += 1
            generation = self._webhook_generation
            self._cond.notify_all()
        threading.Thread(
            target=self._deliver_webhooks, args=(generation,), daemon=True, name=f"telegram-webhook-{self.port}"
        ).start()
        return _Described(True, "Webhook is already set" if same else "Webhook was set")

    def _delete_webhook(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        with self._cond:
            had = self._webhook is not None
            self._webhook = None
            self._webhook_generation += 1
            if _param_bool(params, "drop_pending_updates"):
                self._updates.clear()
            self._cond.notify_all()
        return _Described(True, "Webhook was deleted" if had else "Webhook is already deleted")

    def _get_webhook_info(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        with self._lock:
            info: dict[str, Any] = {
                "url": self._webhook["url"] if self._webhook else "",
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }
            if self._webhook:
                info["max_connections"] = self._webhook["max_connections"]
                if self._allowed_updates:
                    info["allowed_updates"] = list(self._allowed_updates)
            if self._webhook_error:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
            return info

    def _deliver_webhooks(self, generation: int) -> None:
        """Background thread: POST queued updates, oldest first, to the webhook of ``generation``."""
        while True:
            with self._cond:
                while self._webhook_generation == generation and not self._updates:
                    self._cond.wait(0.5)
                if self._webhook_generation != generation or self._webhook is None:
                    return
                update = self._updates[0]
                url = self._webhook["url"]
                secret = self._webhook["secret_token"]
            delivery = self._post_update(url, secret, update)
            with self._cond:
                if self._updates and self._updates[0] is update:
                    self._updates.pop(0)
                self.webhook_deliveries.append(delivery)
                if not delivery.delivered:
                    self._webhook_error = (int(time.time()), delivery.error or "delivery failed")
                self._cond.notify_all()

    def _post_update(self, url: str, secret: str | None, update: dict[str, Any]) -> WebhookDelivery:
        body = json.dumps(update, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        status: int | None = None
        error: str | None = None
        attempts = 0
        for attempt in range(max(1, self.webhook_attempts)):
            if attempt and self._stopping.wait(self.webhook_retry_delay):
                break
            attempts += 1
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.webhook_timeout) as response:
                    status = response.status
                    answer = response.read()
                self._run_webhook_answer(answer)
                return WebhookDelivery(update["update_id"], attempts, status, True, None, time.monotonic())
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"Wrong response from the webhook: {exc.code} {exc.reason}"
                exc.close()
            except (OSError, ValueError) as exc:
                status, error = None, f"Connection failed: {exc}"
        return WebhookDelivery(update["update_id"], attempts, status, False, error, time.monotonic())

    def _run_webhook_answer(self, answer: bytes) -> None:
        """A webhook may answer with a method call (``{"method": "sendMessage", ...}``); run it."""
        try:
            data = json.loads(answer.decode("utf-8")) if answer.strip() else None
        except (UnicodeDecodeError, ValueError):
            return
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            params = {k: v for k, v in data.items() if k != "method"}
            try:
                self.call(data["method"], params)
                self._log(data["method"], 200)
            except TelegramError as error:
                self._log(data["method"], error.status)

    def _send_message(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        plain, raw, parse_mode, entities = self._formatted(params, "text", "entities", MAX_TEXT_UTF16, caption=False)
        markup = validate_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_to(params, chat["id"])
        preview = _param_json(params, "link_preview_options", "can't parse link preview options JSON object")

        def build(message_id: int, date: int, now: float) -> SentMessage:
            return SentMessage(
                message_id=message_id,
                chat_id=chat["id"],
                text=plain,
                raw_text=raw,
                parse_mode=parse_mode,
                entities=entities,
                reply_markup=markup,
                date=date,
                sent_at=now,
                reply_to_message_id=reply_to,
                link_preview_options=preview if isinstance(preview, dict) else None,
                disable_notification=_param_bool(params, "disable_notification"),
            )

        sent = self._record_send("sendMessage", chat, build)
        with self._lock:
            return _Serialized(json.dumps(self._sent_object(sent, copy=False), ensure_ascii=False))

    def _editable(self, params: dict[str, Any]) -> tuple[dict[str, Any], SentMessage]:
        if params.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._resolve_chat(params)
        message_id = _param_int(params, "message_id")
        if message_id is None:
            raise _bad("message identifier is not specified")
        with self._lock:
            sent = self._sent.get((chat["id"], message_id))
            if sent is None or sent.deleted:
                if (chat["id"], message_id) in self._user_messages:
                    raise _bad("message can't be edited")
                raise _bad("message to edit not found")
        return chat, sent

    def _apply_edit(
        self,
        method: str,
        chat: dict[str, Any],
        sent: SentMessage,
        content: tuple[str, str, str | None, list[dict[str, Any]]],
        markup: dict[str, Any] | None,
    ) -> Any:
        plain, raw, parse_mode, entities = content
        with self._cond:
            if sent.deleted:
                raise _bad("message to edit not found")
            if plain == sent.text and entities == sent.entities and markup == sent.reply_markup:
                raise _bad(
                    "message is not modified: specified new message content and reply markup are exactly the same "
                    "as a current content and reply markup of the message"
                )
            self._check_reachable(chat)
            now = time.monotonic()
            self._admit(method, chat, now)
            date = int(time.time())
            sent.text, sent.raw_text, sent.parse_mode, sent.entities = plain, raw, parse_mode, entities
            sent.reply_markup = markup
            sent.edit_date = date
            sent.edits.append(MessageEdit(method, plain, raw, parse_mode, entities, markup, date, now))
            self.sends.append(SendRecord(method, chat["id"], sent.message_id, now))
            self._cond.notify_all()
            return self._sent_object(sent)

    def _edit_message_text(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat, sent = self._editable(params)
        if sent.document is not None:
            raise _bad("there is no text in the message to edit")
        content = self._formatted(params, "text", "entities", MAX_TEXT_UTF16, caption=False)
        # like Telegram: an edit without reply_markup removes the inline keyboard
        markup = validate_reply_markup(params.get("reply_markup"))
        return self._apply_edit("editMessageText", chat, sent, content, markup)

    def _edit_message_reply_markup(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat, sent = self._editable(params)
        markup = validate_reply_markup(params.get("reply_markup"))
        with self._lock:
            content = (sent.text, sent.raw_text, sent.parse_mode, sent.entities)
        return self._apply_edit("editMessageReplyMarkup", chat, sent, content, markup)

    def _delete_message(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        message_id = _param_int(params, "message_id")
        with self._cond:
            key = (chat["id"], message_id or 0)
            sent = self._sent.get(key)
            if sent is not None and not sent.deleted:
                sent.deleted = True
            elif key in self._user_messages:
                del self._user_messages[key]
            else:
                raise _bad("message to delete not found")
            self._cond.notify_all()
        return True

    def _answer_callback_query(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        query_id = _param_str(params, "callback_query_id") or ""
        text = _param_str(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_CHARS:
            raise _bad("MESSAGE_TOO_LONG")
        with self._cond:
            query = self._callback_queries.get(query_id)
            if query is None or query.answered:
                raise _bad("query is too old and response timeout expired or query ID is invalid")
            query.answered = True
            self.callback_answers.append(
                CallbackAnswer(
                    callback_query_id=query_id,
                    user_id=query.user_id,
                    text=text,
                    show_alert=_param_bool(params, "show_alert"),
                    url=_param_str(params, "url"),
                    cache_time=_param_int(params, "cache_time") or 0,
                    at=time.monotonic(),
                )
            )
            self._cond.notify_all()
        return True

    def _store_file(self, data: bytes, file_name: str | None, mime_type: str | None) -> _StoredFile:
        with self._lock:
            number = len(self._files) + 1
            unique = f"AgAD{self.bot_id % 10_000:04d}{number:08d}"
            file_id = f"BQACAgIAAxkBAAI{self.bot_id % 10_000:04d}{number:08d}sandbox"
            suffix = (file_name or "").rsplit(".", 1)[-1] if file_name and "." in file_name else "bin"
            stored = _StoredFile(file_id, unique, data, file_name, mime_type, f"documents/file_{number}.{suffix}")
            self._files[file_id] = stored
            self._file_paths[stored.file_path] = stored
            return stored

    def _document_input(self, params: dict[str, Any], files: dict[str, Upload]) -> _StoredFile:
        value = params.get("document")
        upload = files.get("document")
        if isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value[len("attach://") :])
        if upload is not None:
            if not upload.data:
                raise _bad("file must be non-empty")
            if len(upload.data) > MAX_UPLOAD_BYTES:
                raise TelegramError(413, "Request Entity Too Large")
            mime = upload.content_type
            if not mime or mime == "application/octet-stream":
                mime = mimetypes.guess_type(upload.filename or "")[0] or mime
            return self._store_file(upload.data, upload.filename, mime)
        if not isinstance(value, str) or not value:
            raise _bad("there is no document in the request")
        with self._lock:
            known = self._files.get(value)
        if known is not None:
            return known
        if urlsplit(value).scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(value, timeout=10) as response:
                    data = response.read(MAX_UPLOAD_BYTES + 1)
                    mime = response.headers.get_content_type()
            except (OSError, ValueError):
                raise _bad("failed to get HTTP URL content") from None
            if not data or len(data) > MAX_UPLOAD_BYTES:
                raise _bad("failed to get HTTP URL content")
            name = urlsplit(value).path.rsplit("/", 1)[-1] or "file"
            return self._store_file(data, name, mime)
        raise _bad("wrong file identifier/HTTP URL specified")

    def _send_document(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        stored = self._document_input(params, files)
        plain, raw, parse_mode, entities = self._formatted(
            params, "caption", "caption_entities", MAX_CAPTION_UTF16, caption=True
        )
        markup = validate_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_to(params, chat["id"])
        document: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if stored.file_name:
            document["file_name"] = stored.file_name
        if stored.mime_type:
            document["mime_type"] = stored.mime_type
        document["file_size"] = len(stored.data)

        def build(message_id: int, date: int, now: float) -> SentMessage:
            return SentMessage(
                message_id=message_id,
                chat_id=chat["id"],
                text=plain,
                raw_text=raw,
                parse_mode=parse_mode,
                entities=entities,
                reply_markup=markup,
                date=date,
                sent_at=now,
                method="sendDocument",
                document=document,
                reply_to_message_id=reply_to,
                disable_notification=_param_bool(params, "disable_notification"),
            )

        sent = self._record_send("sendDocument", chat, build)
        with self._lock:
            self.documents.append(
                SentDocument(
                    chat["id"],
                    sent.message_id,
                    stored.file_id,
                    stored.file_unique_id,
                    stored.file_name,
                    stored.mime_type,
                    stored.data,
                    plain,
                    sent.sent_at,
                )
            )
            return self._sent_object(sent)

    def _get_file(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        file_id = _param_str(params, "file_id") or ""
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise _bad("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    def _send_chat_action(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        action = _param_str(params, "action")
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        with self._lock:
            self._check_reachable(chat)
            self.chat_actions.append((chat["id"], action))
        return True

    @staticmethod
    def _commands_key(scope: Any, language_code: str | None) -> str:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True) + "|" + (language_code or "")

    def _set_my_commands(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        commands = _param_json(params, "commands", "can't parse commands JSON object")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > MAX_COMMANDS:
            raise _bad("too many commands specified")
        clean = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("can't parse BotCommand JSON object")
            name = command.get("command")
            description = command.get("description")
            if not isinstance(name, str) or not _COMMAND.match(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            clean.append({"command": name, "description": description})
        scope = _param_json(params, "scope", "can't parse BotCommandScope JSON object")
        with self._lock:
            self._commands[self._commands_key(scope, _param_str(params, "language_code"))] = clean
        return True

    def _get_my_commands(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        scope = _param_json(params, "scope", "can't parse BotCommandScope JSON object")
        with self._lock:
            return list(self._commands.get(self._commands_key(scope, _param_str(params, "language_code")), []))

    def _delete_my_commands(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        scope = _param_json(params, "scope", "can't parse BotCommandScope JSON object")
        with self._lock:
            self._commands.pop(self._commands_key(scope, _param_str(params, "language_code")), None)
        return True

    def _get_chat(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        with self._lock:
            full = {
                **chat,
                "accent_color_id": chat["id"] % 7,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": True,
                    "limited_gifts": True,
                    "unique_gifts": True,
                    "premium_subscription": True,
                    "gifts_from_channels": True,
                },
            }
        return full


class _Headers(dict):
    """Request headers by lower-case name (the first of repeated ones), read with ``get`` like the
    ``email.message.Message`` the base class builds."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100


class _Handler(SandboxHandler):
    server_version = "TelegramSandbox/1.0"

    def parse_request(self) -> bool:
        """A well-formed HTTP/1.x request line and its headers, read without the email parser the base
        class uses (a fifth of the CPU of a send); anything else goes to the base class."""
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return super().parse_request()
        self.requestline = line
        self.command, path, self.request_version = words
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(raw) > _MAX_HEADER_LINE:
                self.close_connection = True
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if colon:
                headers.setdefault(name.strip().lower(), value.strip())
        else:
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (words[2] == "HTTP/1.0" and connection != "keep-alive")
        if headers.get("expect", "").lower() == "100-continue" and words[2] == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _serve(self, method: str) -> None:
        telegram = self.server.telegram
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            return
        name, reply = telegram.respond(method, self.path, self.headers, body)
        if reply.drop is not None:
            self._drop(reply.drop)
            telegram._log(name, 0)
            return
        telegram._log(name, reply.status)
        self._reply(reply.status, reply.content_type, list(reply.headers), reply.body)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hnpal.sandbox.telegram_api",
        description="Serve a local Telegram Bot API for python-telegram-bot (base_url = the printed URL).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the only bot token accepted")
    parser.add_argument("--username", default="hnpal_sandbox_bot", help="the bot's username")
    parser.add_argument("--global-rate", type=int, default=30, help="messages per second across all chats")
    parser.add_argument("--per-chat-rate", type=int, default=1, help="messages per second in one chat")
    parser.add_argument("--no-limits", action="store_true", help="turn flood control off")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="ID[:NAME]",
        help="register a user (repeatable), e.g. --user 42:Ada",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print every request to stderr")
    args = parser.parse_args(argv)
    server = TelegramServer(
        host=args.host,
        port=args.port,
        token=args.token,
        username=args.username,
        enforce_limits=not args.no_limits,
        global_rate=args.global_rate,
        per_chat_rate=args.per_chat_rate,
        verbose=args.verbose,
    )
    for spec in args.user:
        user_id, _, name = spec.partition(":")
        server.add_user(int(user_id), first_name=name or "Test")
    return server.serve_cli(server.base_url)


if __name__ == "__main__":
    raise SystemExit(main())
