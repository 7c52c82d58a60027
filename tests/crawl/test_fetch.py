"""The fetcher against hostile pages, over real HTTP on loopback (the replay server's /hostile/...)."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from hnpal.crawl.extract import ExtractionError
from hnpal.crawl.fetch import Fetcher, FetchError
from hnpal.crawl.service import extract_page
from hnpal.sandbox.hn_replay import HNReplayServer


@pytest.fixture(scope="module")
def replay():
    server = HNReplayServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fetcher():
    settings = load_settings(
        crawl_allow_hosts="127.0.0.1",
        crawl_connect_timeout=2,
        crawl_read_timeout=1,
        crawl_total_timeout=3,
        crawl_max_bytes=512 * 1024,
    )
    with Fetcher(settings) as f:
        yield f


def fail(fetcher: Fetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url)
    return info.value


def test_snapshot_article_fetches_and_extracts(replay, fetcher) -> None:
    story = next(
        replay.item(i)
        for i, it in sorted(replay.items.items())
        if it.get("type") == "story" and "/articles/" in str(it.get("url"))
    )
    page = fetcher.fetch(story["url"])
    assert page.status == 200 and page.content_type == "html" and not page.truncated
    extraction = extract_page(page)
    assert extraction.method == "trafilatura" and len(extraction.text.split()) > 150


def test_user_agent_is_honest(replay, fetcher) -> None:
    replay.add_page("/ua-echo", b"<html><body>ok</body></html>")
    fetcher.fetch(replay.url("/ua-echo"))
    assert fetcher.client.headers["user-agent"].startswith("HNPalBot/")


@pytest.mark.parametrize(
    ("path", "transient", "message"),
    [
        ("/hostile/404", False, "HTTP 404"),
        ("/hostile/403", False, "HTTP 403"),
        ("/hostile/500", True, "HTTP 500"),
        ("/hostile/503", True, "HTTP 503"),
        ("/hostile/429?seconds=7", True, "HTTP 429"),
        ("/hostile/slow?seconds=3", True, "timeout"),
        ("/hostile/trickle?bytes_per_sec=20", True, "longer than"),
        ("/hostile/binary?size=20000", False, "content type"),
        ("/hostile/binary-lie?size=20000", False, "binary body"),
        ("/hostile/redirect-loop", False, "redirect loop"),
        ("/hostile/redirect-pingpong", False, "redirect"),
        ("/hostile/redirect-private", False, "refused link-local address"),
        ("/hostile/redirect-internal", False, "refused private address"),
        ("/hostile/redirect-localhost", False, "refused loopback address"),
        ("/hostile/redirect-file", False, "scheme 'file'"),
        ("/hostile/drop", True, "connection error"),
        ("/hostile/reset", True, "connection error"),
    ],
)
def test_hostile_pages_end_in_a_clear_error(replay, fetcher, path: str, transient: bool, message: str) -> None:
    error = fail(fetcher, replay.url(path))
    assert error.transient is transient, error
    assert message in str(error)


def test_retry_after_is_reported(replay, fetcher) -> None:
    assert fail(fetcher, replay.url("/hostile/429?seconds=7")).retry_after == 7


def test_huge_pages_are_cut_off(replay, fetcher) -> None:
    for path in ("/hostile/huge?size=3000000", "/hostile/huge-chunked?size=3000000"):
        page = fetcher.fetch(replay.url(path))
        assert page.truncated and len(page.body) == 512 * 1024


def test_legitimate_redirect_is_followed(replay, fetcher) -> None:
    page = fetcher.fetch(replay.url("/hostile/redirect"))
    assert page.final_url.endswith("/hostile/landing") and page.redirects


def test_too_many_redirects(replay) -> None:
    settings = load_settings(crawl_allow_hosts="127.0.0.1", crawl_max_redirects=0)
    with Fetcher(settings) as strict:
        assert "more than 0 redirects" in str(fail(strict, replay.url("/hostile/redirect")))


def test_bad_encodings_are_decoded(replay, fetcher) -> None:
    for path in ("/hostile/latin1", "/hostile/no-charset"):
        text = fetcher.fetch(replay.url(path)).text()
        assert "café" in text and "naïve" in text, path


def test_loopback_is_refused_without_the_allowlist(replay) -> None:
    with Fetcher(load_settings(crawl_allow_hosts="")) as strict:
        error = fail(strict, replay.url("/hostile/landing"))
    assert not error.transient and "refused loopback address" in str(error)


def test_pdf_is_converted(replay, fetcher) -> None:
    page = fetcher.fetch(replay.url("/papers/adaptive-admission-control.pdf"))
    assert page.content_type == "pdf"
    extraction = extract_page(page)
    assert extraction.method == "pdf" and len(extraction.text.split()) > 50


def test_empty_and_script_only_pages_fail_extraction(replay, fetcher) -> None:
    for path in ("/hostile/empty", "/hostile/spa"):
        page = fetcher.fetch(replay.url(path))
        with pytest.raises(ExtractionError):
            extract_page(page)


def test_unreachable_port_is_transient(fetcher) -> None:
    error = fail(fetcher, "http://127.0.0.1:9/")
    assert error.transient
