"""Text and entities: HTML, MarkdownV2 and legacy Markdown parsed into plain text plus ``entities``
(offsets and lengths in UTF-16 code units), as Telegram does; URL, mention and command detection."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hnpal.sandbox.telegram_api.constants import BOT_COMMAND, HTML_SPECIAL, URL_IN_TEXT


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


def sorted_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    return plain, sorted_entities(kept)


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
            end = HTML_SPECIAL.search(text, i)
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
    return out.text(), sorted_entities(entities)


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
    return out.text(), sorted_entities(entities)


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
    elif looks_like_url(url):
        entities.append(_entity("text_link", mark.start, length, url=url))
    return end


def looks_like_url(url: str) -> bool:
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
            if looks_like_url(url):
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
    return out.text(), sorted_entities(entities)


PARSERS: dict[str, Callable[[str], tuple[str, list[dict[str, Any]]]]] = {
    "html": parse_html,
    "markdownv2": parse_markdown_v2,
    "markdown": parse_markdown,
}


def detect_entities(text: str) -> list[dict[str, Any]]:
    """What Telegram marks up in a user's plain message: a leading bot command and http(s) URLs."""
    entities = []
    command = BOT_COMMAND.match(text)
    if command:
        entities.append(_entity("bot_command", 0, utf16_len(command.group())))
    for match in URL_IN_TEXT.finditer(text):
        entities.append(_entity("url", utf16_len(text[: match.start()]), utf16_len(match.group())))
    return sorted_entities(entities)
