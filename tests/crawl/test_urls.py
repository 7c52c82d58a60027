"""URL canonicalization (repost detection) and domains."""

from __future__ import annotations

import pytest

from hnpal.crawl.urls import canonical_url, domain_of


@pytest.mark.parametrize(
    "variant",
    [
        "https://example.com/blog/post",
        "http://example.com/blog/post",
        "https://www.example.com/blog/post",
        "https://example.com/blog/post/",
        "https://example.com/blog/post#comments",
        "https://EXAMPLE.com/blog/post?utm_source=hn&utm_medium=social",
        "https://example.com:443/blog/post?fbclid=abc",
        "http://www.example.com//blog/post/?ref=hackernews#top",
    ],
)
def test_variants_share_one_canonical_url(variant: str) -> None:
    assert canonical_url(variant) == "https://example.com/blog/post"


def test_meaningful_parameters_are_kept_and_sorted() -> None:
    assert canonical_url("https://example.com/a?b=2&a=1&utm_campaign=x") == "https://example.com/a?a=1&b=2"
    assert canonical_url("https://example.com/watch?v=1") != canonical_url("https://example.com/watch?v=2")


def test_non_default_ports_and_paths_matter() -> None:
    assert canonical_url("http://example.com:8080/x") == "https://example.com:8080/x"
    assert canonical_url("https://example.com/") == "https://example.com/"
    assert canonical_url("https://example.com/a") != canonical_url("https://example.com/b")


@pytest.mark.parametrize(
    "bad", [None, "", "javascript:alert(1)", "mailto:a@b.c", "ftp://x/y", "http://", "http://[::1"]
)
def test_unusable_urls(bad: str | None) -> None:
    assert canonical_url(bad) is None


def test_domain_of() -> None:
    assert domain_of("https://www.Example.co.uk/x") == "example.co.uk"
    assert domain_of("http://blog.example.com:8080/") == "example.com"  # the registrable domain, as on HN
    assert domain_of(None) is None
    assert domain_of("not a url") is None
