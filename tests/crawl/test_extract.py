"""Extraction quality on the shared real pages, and the fallbacks."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hnpal.crawl.extract import ExtractionError, extract_hn_text, extract_html
from hnpal.crawl.pages import load_page
from hnpal.crawl.service import extract_page


def token_f1(predicted: str, truth: str) -> float:
    p, t = Counter(predicted.split()), Counter(truth.split())
    common = sum((p & t).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def test_token_f1_on_the_shared_real_pages(shared_articles: Path) -> None:
    truth = json.loads((shared_articles / "ground-truth.json").read_text())
    text_scores, markdown_scores, methods = [], [], Counter()
    for page_id, record in sorted(truth.items()):
        html = gzip.decompress((shared_articles / "html" / f"{page_id}.html.gz").read_bytes()).decode("utf-8")
        extraction = extract_html(html, record["url"])
        methods[extraction.method] += 1
        assert extraction.text.strip() and extraction.markdown.strip(), page_id
        text_scores.append(token_f1(extraction.text, record["articleBody"]))
        markdown_scores.append(token_f1(extraction.markdown, record["articleBody"]))
    text_f1 = sum(text_scores) / len(text_scores)
    markdown_f1 = sum(markdown_scores) / len(markdown_scores)
    print(f"pages={len(text_scores)} text_f1={text_f1:.3f} markdown_f1={markdown_f1:.3f} methods={dict(methods)}")
    assert len(text_scores) == 123
    assert text_f1 >= 0.93
    assert markdown_f1 >= 0.90


def test_markdown_keeps_structure() -> None:
    paragraphs = "".join(f"<p>Paragraph {i} explains a detail of the storage engine at length.</p>" for i in range(8))
    html = (
        "<html><head><title>Engine notes</title></head><body><nav>Home | About</nav><article>"
        "<h1>Engine notes</h1>" + paragraphs + "<h2>Steps</h2><ul><li>first step</li><li>second step</li></ul>"
        "</article><footer>© 2026 Example</footer></body></html>"
    )
    extraction = extract_html(html, "https://example.com/notes")
    assert "Paragraph 0 explains" in extraction.text
    assert "Home | About" not in extraction.text
    assert "- first step" in extraction.markdown or "* first step" in extraction.markdown
    assert "## Steps" in extraction.markdown or "Steps\n" in extraction.markdown


def test_fallback_when_trafilatura_finds_nothing() -> None:
    html = "<html><body><div><span>Short announcement: the meetup moved to Thursday evening.</span></div></body></html>"
    extraction = extract_html(html, "https://example.com/")
    assert "meetup moved to Thursday" in extraction.text
    assert extraction.method in ("trafilatura_recall", "body_text")


def test_empty_page_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(ExtractionError):
        extract_html("<html><head><script>var x = 1;</script></head><body></body></html>")


def test_hn_text_keeps_paragraphs_and_links() -> None:
    extraction = extract_hn_text('What&#x27;s your stack?<p>We use <a href="https://pg.example">Postgres</a>.')
    assert extraction.text == "What's your stack?\n\nWe use Postgres."
    assert "[Postgres](https://pg.example)" in extraction.markdown
    assert extraction.method == "hn_text"


def test_extract_cli_on_a_shared_page(shared_articles: Path) -> None:
    page = sorted((shared_articles / "html").glob("*.html.gz"))[0]
    env = dict(os.environ)
    for fmt in ("text", "markdown"):
        result = subprocess.run(
            [sys.executable, "-m", "hnpal.cli.main", "extract", str(page), "--format", fmt],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        # exactly the pipeline's code path
        assert result.stdout.strip() == getattr(extract_page(load_page(str(page))), fmt).strip()


def test_extract_cli_reports_a_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hnpal.cli.main", "extract", str(tmp_path / "nope.html")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "nope.html" in result.stderr
