"""Every hostile link ends in a recorded outcome on the post (service level, real PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from config.settings import load_settings
from hnpal.crawl import service
from hnpal.crawl.fetch import Fetcher
from hnpal.db.session import session_scope
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer


@pytest.fixture(scope="module")
def replay():
    server = HNReplayServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fetcher():
    settings = load_settings(
        crawl_allow_hosts="127.0.0.1", crawl_read_timeout=1, crawl_total_timeout=3, crawl_max_bytes=256 * 1024
    )
    with Fetcher(settings) as f:
        yield f


@pytest.fixture
def new_post():
    created: list[int] = []

    def make(url: str | None) -> int:
        with session_scope() as session:
            post = Post(
                hn_id=8_000_000 + len(created) + 1, type="story", title="hostile", url=url, crawl_status="queued"
            )
            session.add(post)
            session.flush()
            created.append(post.id)
            return post.id

    yield make
    with session_scope() as session:
        session.execute(Post.__table__.delete().where(Post.id.in_(created)))


def load(post_id: int) -> Post:
    with session_scope() as session:
        return session.scalar(select(Post).where(Post.id == post_id))


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/hostile/404", "HTTP 404"),
        ("/hostile/403", "HTTP 403"),
        ("/hostile/binary?size=50000", "content type"),
        ("/hostile/binary-lie?size=50000", "binary body"),
        ("/hostile/redirect-loop", "redirect loop"),
        ("/hostile/redirect-private", "refused link-local address"),
        ("/hostile/redirect-internal", "refused private address"),
        ("/hostile/redirect-file", "scheme 'file'"),
        ("/hostile/spa", "extraction: no article text"),
        ("/hostile/empty", "extraction: no article text"),
    ],
)
def test_permanent_failures_are_recorded_once(replay, fetcher, new_post, path: str, error: str) -> None:
    post_id = new_post(replay.url(path))
    result = service.crawl(post_id=post_id, fetcher=fetcher)
    assert result.outcome == "failed"
    post = load(post_id)
    assert post.crawl_status == "failed" and post.crawl_retry_count == 1 and error in post.crawl_error
    assert not post.is_crawl_success
    # a second delivery of the same task changes nothing
    assert service.crawl(post_id=post_id, fetcher=fetcher).outcome == "skipped"
    assert load(post_id).crawl_retry_count == 1


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/hostile/500", "HTTP 500"),
        ("/hostile/503", "HTTP 503"),
        ("/hostile/429?seconds=1", "HTTP 429"),
        ("/hostile/slow?seconds=3", "timeout"),
        ("/hostile/drop", "connection error"),
    ],
)
def test_transient_failures_retry_then_become_permanent(replay, fetcher, new_post, path: str, error: str) -> None:
    post_id = new_post(replay.url(path))
    for attempt in (1, 2):
        result = service.crawl(post_id=post_id, fetcher=fetcher)
        assert result.outcome == "retry" and result.retry_in and result.retry_in > 0
        post = load(post_id)
        assert post.crawl_status == "retrying" and post.crawl_retry_count == attempt and error in post.crawl_error
    assert service.crawl(post_id=post_id, fetcher=fetcher).outcome == "failed"
    post = load(post_id)
    assert post.crawl_status == "failed" and post.crawl_retry_count == 3


@pytest.mark.parametrize(
    "path", ["/hostile/latin1", "/hostile/no-charset", "/hostile/huge?size=2000000", "/hostile/redirect"]
)
def test_odd_but_readable_pages_are_handed_to_the_writer(replay, fetcher, new_post, path: str) -> None:
    post_id = new_post(replay.url(path))
    result = service.crawl(post_id=post_id, fetcher=fetcher)
    assert result.outcome == "fetched", result
    post = load(post_id)
    assert post.crawl_status == "fetched" and post.crawl_retry_count == 0 and post.crawl_error is None


def test_retry_after_sets_the_minimum_delay(replay, fetcher, new_post, settings_env) -> None:
    settings_env(crawl_retry_backoff="0.01")
    post_id = new_post(replay.url("/hostile/429?seconds=40"))
    result = service.crawl(post_id=post_id, fetcher=fetcher)
    assert result.outcome == "retry" and result.retry_in >= 40


def test_posts_without_url_or_missing_are_skipped(fetcher, new_post) -> None:
    post_id = new_post(None)
    assert service.crawl(post_id=post_id, fetcher=fetcher).outcome == "skipped"
    assert load(post_id).crawl_status == "skipped"
    assert service.crawl(post_id=999_999_999, fetcher=fetcher).outcome == "missing"


def test_backoff_grows_and_is_capped() -> None:
    delays = [service.backoff_seconds(n, base=60, cap=3600) for n in (1, 2, 3, 10)]
    assert 45 <= delays[0] <= 75 and 90 <= delays[1] <= 150 and 180 <= delays[2] <= 300
    assert delays[3] == 3600
