"""Summaries as plain text: they are shown in Telegram's HTML mode, where Markdown marks show literally.

A model (or the offline summarizer quoting an article's markdown) may write ``**bold**``, ``*italics*``,
``_emphasis_``, escaped marks (``\\*``), ``# headings``, ``[links](url)``, code ticks and list bullets, at
a line's start or mid-line once lines were joined. All are removed, their words kept; a sentence that
starts in lower case after another one (a joined fragment) gets its capital.
"""

from __future__ import annotations

import re

_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()\s]|\([^()\s]*\))+\)")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~>])")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.MULTILINE)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[*+\-•]|\d{1,3}[.)])[ \t]+(?=\S)", re.MULTILINE)
# a bullet left mid-line when list items were joined into one line: "... done. * Deploys ..."
_INLINE_BULLET = re.compile(r"(?<=[.!?:;])[ \t]+[*+•][ \t]+(?=\S)")
_EMPHASIS = re.compile(r"(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_CODE = re.compile(r"`+([^`]*)`+")
_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.MULTILINE)
_STRAY = re.compile(r"(?<!\w)[*_]{1,3}(?=\w)|(?<=\w)[*_]{1,3}(?!\w)|(?<!\S)[*_]{1,3}(?!\S)")
_LOWER_START = re.compile(r"(\b[\w.]+)([.!?][\"')\]]?[ \t]+)([a-z])")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "vs", "cf", "al", "approx", "incl", "esp", "no", "fig"})
_SPACES = re.compile(r"[ \t]{2,}")


def _capital(match: re.Match[str]) -> str:
    word, end, letter = match.groups()
    if word.lower().rstrip(".") in _ABBREVIATIONS or "." in word.rstrip("."):  # e.g. / v1.2. / a.m.
        return match.group(0)
    return word + end + letter.upper()


def plain_text(text: str) -> str:
    """``text`` without Markdown marks (see the module's docstring); line breaks are kept."""
    text = _LINK.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    text = _ESCAPED.sub(lambda m: "\x00" if m.group(1) in "*_" else m.group(1), text)  # literal marks: drop
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _INLINE_BULLET.sub(" ", text)
    for _ in range(2):  # nested emphasis (***bold italics***, **_both_**)
        text = _EMPHASIS.sub(r"\2", text)
    text = _STRAY.sub("", text).replace("\x00", "")
    text = _LOWER_START.sub(_capital, text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
