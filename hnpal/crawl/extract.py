"""Extraction: clean text with trafilatura, markdown from trafilatura's main-content HTML via markitdown.

One trafilatura pass yields both: the plain text is rendered from its content tree, and the same tree
rendered as HTML goes through markitdown's HTML converter (not the whole page: on the shared real pages
that is token-F1 0.935 against 0.543). When trafilatura finds nothing, a recall-oriented pass and then
the page's visible body text are tried, so nothing empty is stored; ``method`` records the path used.
PDFs go through markitdown.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

import lxml.html
from markitdown import MarkItDown
from markitdown.converters import HtmlConverter
from trafilatura import bare_extraction
from trafilatura.core import build_html_output, normalize_unicode, xmltotxt

log = logging.getLogger(__name__)

MIN_TEXT_CHARS = 200  # below this a trafilatura result is treated as "found nothing"
MIN_FALLBACK_CHARS = 40
_html_converter = HtmlConverter()
_markitdown: MarkItDown | None = None
_SPACES = re.compile(r"[ \t\r\f\v]+")
# What a script-only page says to a client without JavaScript: not an article.
_NO_JS = re.compile(r"enable javascript|javascript is (?:disabled|required)|requires javascript", re.IGNORECASE)
_BLANKS = re.compile(r"\n{3,}")


class ExtractionError(Exception):
    """Nothing worth storing could be extracted."""


@dataclass(frozen=True)
class Extraction:
    text: str
    markdown: str
    method: str  # trafilatura | trafilatura_recall | body_text | pdf | hn_text
    title: str | None = None


def html_to_markdown(html: str) -> str:
    return _html_converter.convert_string(html).markdown.strip()


def _trafilatura(html: str, url: str | None, *, recall: bool) -> tuple[str, str, str | None] | None:
    # The first pass skips trafilatura's slower fallback extractors (``fast``): on the 123 shared real
    # pages it is a third faster and scores a higher token-F1 (0.960 against 0.950). The recall pass,
    # used only when that finds nothing, runs everything.
    document = bare_extraction(
        html,
        url=url,
        fast=not recall,
        include_comments=False,
        include_formatting=True,
        include_tables=True,
        favor_recall=recall,
        with_metadata=False,
    )
    if document is None or document.body is None:
        return None
    # Plain text first: xmltotxt only reads the tree, build_html_output then rewrites its tags.
    text = normalize_unicode(xmltotxt(document.body, False)).strip()
    if not text:
        return None
    markdown = html_to_markdown(build_html_output(document))
    return text, markdown, document.title


def _body_text(html: str) -> tuple[str, str | None]:
    try:
        tree = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return "", None
    for bad in tree.xpath("//script|//style|//noscript|//template|//svg|//nav|//footer|//header|//form"):
        bad.drop_tree()
    title = tree.findtext(".//title")
    body = tree.find("body")
    raw = (body if body is not None else tree).text_content()
    lines = [_SPACES.sub(" ", line).strip() for line in raw.splitlines()]
    text = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
    return text, (title.strip() if title else None)


def _worth_storing(text: str) -> bool:
    if len(text) < MIN_FALLBACK_CHARS:
        return False
    return not (len(text) < 400 and _NO_JS.search(text))


def extract_html(html: str, url: str | None = None) -> Extraction:
    """Text and markdown of an article page. Raises ExtractionError when the page holds no text."""
    best: tuple[str, str, str | None] | None = None
    try:
        best = _trafilatura(html, url, recall=False)
    except Exception as exc:  # trafilatura fails on some pathological trees; fall back
        log.warning("trafilatura failed on %s: %s", url, exc)
    if best is not None and len(best[0]) >= MIN_TEXT_CHARS:
        return Extraction(best[0], best[1], "trafilatura", best[2])
    try:
        recall = _trafilatura(html, url, recall=True)
    except Exception as exc:
        log.warning("trafilatura (recall) failed on %s: %s", url, exc)
        recall = None
    if recall is not None and len(recall[0]) >= MIN_TEXT_CHARS:
        return Extraction(recall[0], recall[1], "trafilatura_recall", recall[2])
    text, title = _body_text(html)
    candidates = [c for c in (best, recall) if c is not None]
    if candidates:
        longest = max(candidates, key=lambda c: len(c[0]))
        if (len(longest[0]) >= len(text) or not _worth_storing(text)) and _worth_storing(longest[0]):
            return Extraction(longest[0], longest[1], "trafilatura_recall", longest[2])
    if _worth_storing(text):
        return Extraction(text, text, "body_text", title)
    raise ExtractionError("no article text found on the page")


def extract_pdf(data: bytes) -> Extraction:
    """Text (as markdown) of a PDF, via markitdown."""
    global _markitdown
    if _markitdown is None:
        _markitdown = MarkItDown(enable_plugins=False)
    try:
        result = _markitdown.convert_stream(io.BytesIO(data), file_extension=".pdf")
    except Exception as exc:
        raise ExtractionError(f"PDF could not be read: {exc}") from None
    markdown = (result.text_content or "").strip()
    if len(markdown) < MIN_FALLBACK_CHARS:
        raise ExtractionError("PDF holds no extractable text")
    text = _BLANKS.sub("\n\n", markdown)
    return Extraction(text, markdown, "pdf", result.title)


def expand_hn_links(tree: lxml.html.HtmlElement) -> None:
    """HN shows a long link as its first characters and ``...``: put the whole URL back as its text."""
    for link in tree.iter("a"):
        href = link.get("href") or ""
        shown = link.text_content().strip()
        if href and shown.endswith("...") and shown[:-3] and shown[:-3] in href:
            for child in list(link):
                link.remove(child)
            link.text = href


def extract_hn_text(html_text: str) -> Extraction:
    """The HTML ``text`` of an Ask HN / Show HN / job / poll item, as text and markdown."""
    try:
        tree = lxml.html.fragment_fromstring(html_text, create_parent="div")
    except (ValueError, lxml.etree.ParserError):
        tree = None
    if tree is None:
        markdown = html_to_markdown(f"<div>{html_text}</div>")
        text = markdown
    else:
        expand_hn_links(tree)
        markdown = html_to_markdown(lxml.html.tostring(tree, encoding="unicode"))
        # HN separates paragraphs with a bare <p>: keep those breaks in the plain text too.
        for para in tree.iter("p"):
            para.text = "\n\n" + (para.text or "")
        text = _BLANKS.sub("\n\n", tree.text_content()).strip()
    if not text:
        raise ExtractionError("the item has no text")
    return Extraction(text, markdown, "hn_text")
