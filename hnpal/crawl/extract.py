"""Extraction: clean text with trafilatura, markdown from trafilatura's main-content HTML via markitdown.

A quick precision-oriented trafilatura pass, checked against the page's visible text (see
PRECISION_PASS), yields both: the plain text is rendered from its content tree, and the same tree rendered
as HTML goes through markitdown's HTML converter (not the whole page: on the shared real pages that is
token-F1 0.935 against 0.543). When trafilatura finds nothing, a recall-oriented pass and then the
page's visible body text are tried, so nothing empty is stored; ``method`` records the path used.
PDFs go through markitdown.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import TypedDict

import lxml.html
from markitdown import MarkItDown
from markitdown.converters import HtmlConverter
from trafilatura import bare_extraction
from trafilatura.core import build_html_output, normalize_unicode, xmltotxt
from trafilatura.settings import Document

from hnpal.errors import HNPalError

log = logging.getLogger(__name__)

MIN_TEXT_CHARS = 200  # below this a trafilatura result is treated as "found nothing"
MIN_FALLBACK_CHARS = 40
_html_converter = HtmlConverter()
_markitdown: MarkItDown | None = None
_SPACES = re.compile(r"[ \t\r\f\v]+")
# What a script-only page says to a client without JavaScript: not an article.
_NO_JS = re.compile(r"enable javascript|javascript is (?:disabled|required)|requires javascript", re.IGNORECASE)
_BLANKS = re.compile(r"\n{3,}")


class ExtractionError(HNPalError):
    """Nothing worth storing could be extracted."""


@dataclass(frozen=True)
class Extraction:
    text: str
    markdown: str
    method: str  # trafilatura | trafilatura_recall | body_text | pdf | hn_text
    title: str | None = None


def html_to_markdown(html: str) -> str:
    return _html_converter.convert_string(html).markdown.strip()


# The passes, chosen by 5-fold cross-validation over the 123 shared real pages (repeated 40 times,
# the ratio tuned inside the training folds; bench/crawl.py measures it again on every run): a quick
# precision-oriented pass, kept unless its text is under KEEP_RATIO of the page's visible text (then it
# dropped the article: about one page in twenty), when trafilatura's default pass, with its fallback
# extractors, is run instead. Cross-validated token-F1 0.967, against 0.960 for the former ``fast``
# pass alone, 0.950 for trafilatura's default options and 0.935 for plain ``trafilatura.extract``; on
# all shared pages 0.968. Checking against the visible text (an lxml pass) instead of a second
# trafilatura pass keeps one pass per page. The recall pass, when both find nothing, runs everything.


class PassOptions(TypedDict, total=False):
    """The options of ``trafilatura.bare_extraction`` that tell one pass from another."""

    favor_precision: bool
    favor_recall: bool
    fast: bool


PRECISION_PASS: PassOptions = {"favor_precision": True, "fast": True}
CHECK_PASS: PassOptions = {}
RECALL_PASS: PassOptions = {"favor_recall": True}
KEEP_RATIO = 0.15


def keep_first_pass(chars: int, visible_chars: int, ratio: float = KEEP_RATIO) -> bool:
    """The precision pass is kept unless it found too little, or under ``ratio`` of the visible text."""
    return chars >= MIN_TEXT_CHARS and chars >= ratio * visible_chars


@dataclass(frozen=True)
class _Pass:
    text: str
    document: Document

    def result(self) -> tuple[str, str, str | None]:
        markdown = html_to_markdown(build_html_output(self.document))
        return self.text, markdown, self.document.title


def _trafilatura(html: str, url: str | None, options: PassOptions) -> _Pass | None:
    document = bare_extraction(
        html,
        url=url,
        include_comments=False,
        include_formatting=True,
        include_tables=True,
        with_metadata=False,
        **options,
    )
    if not isinstance(document, Document) or document.body is None:  # None, or a dict if as_dict were set
        return None
    # Plain text first: xmltotxt only reads the tree, build_html_output (in result()) rewrites its tags.
    text = normalize_unicode(xmltotxt(document.body, False)).strip()
    if not text:
        return None
    return _Pass(text, document)


def _safe_pass(html: str, url: str | None, options: PassOptions) -> _Pass | None:
    try:
        return _trafilatura(html, url, options)
    except Exception as exc:  # noqa: BLE001 - trafilatura fails on some pathological trees; fall back
        log.warning("trafilatura %s failed on %s: %s", options, url, exc)
        return None


def pass_text(html: str, url: str | None, options: PassOptions) -> str:
    """The text of one trafilatura pass with ``options``, exactly as the pipeline runs it ("" when it finds
    nothing or fails): what ``bench/_extraction_cv.py`` compares the options with."""
    found = _safe_pass(html, url, options)
    return found.text if found is not None else ""


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
    precise = _safe_pass(html, url, PRECISION_PASS)
    visible, title = _body_text(html)
    chosen = precise if precise is not None and keep_first_pass(len(precise.text), len(visible)) else None
    check = None
    if chosen is None:
        check = _safe_pass(html, url, CHECK_PASS)
        for candidate in (check, precise):
            if candidate is not None and len(candidate.text) >= MIN_TEXT_CHARS:
                chosen = candidate
                break
    if chosen is not None:
        text, markdown, found_title = chosen.result()
        return Extraction(text, markdown, "trafilatura", found_title)
    recall = _safe_pass(html, url, RECALL_PASS)
    if recall is not None and len(recall.text) >= MIN_TEXT_CHARS:
        text, markdown, found_title = recall.result()
        return Extraction(text, markdown, "trafilatura_recall", found_title)
    candidates = [c for c in (precise, check, recall) if c is not None]
    if candidates:
        longest = max(candidates, key=lambda c: len(c.text))
        if (len(longest.text) >= len(visible) or not _worth_storing(visible)) and _worth_storing(longest.text):
            text, markdown, found_title = longest.result()
            return Extraction(text, markdown, "trafilatura_recall", found_title)
    if _worth_storing(visible):
        return Extraction(visible, visible, "body_text", title)
    raise ExtractionError("no article text found on the page")


def extract_pdf(data: bytes) -> Extraction:
    """Text (as markdown) of a PDF, via markitdown."""
    global _markitdown
    if _markitdown is None:
        _markitdown = MarkItDown(enable_plugins=False)
    try:
        result = _markitdown.convert_stream(io.BytesIO(data), file_extension=".pdf")
    except Exception as exc:  # noqa: BLE001 - a PDF parser fails in many ways; each is an unreadable PDF
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
