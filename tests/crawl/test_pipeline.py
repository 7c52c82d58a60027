"""fetch -> crawl -> content writer, through real workers, the real broker, PostgreSQL and RocksDB.

The bundled snapshot holds every case: articles, a repost, a PDF, text posts, and hostile links
(slow, huge, binary, latin-1, redirect loop, 404). Every post must end with a recorded outcome.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from hnpal.content import ContentStore
from hnpal.db.session import session_scope
from hnpal.ingest import service
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer

TERMINAL = ("success", "reused", "failed", "skipped")


@pytest.fixture
def pipeline_env(tmp_path: Path, settings_env):
    server = HNReplayServer().start()
    values = {
        "hn_api_base_url": server.api_url,
        "crawl_allow_hosts": "127.0.0.1",
        "content_path": str(tmp_path / "content.rocksdb"),
        "crawl_read_timeout": "1",
        "crawl_total_timeout": "3",
        "crawl_max_bytes": str(1024 * 1024),
        "crawl_retry_backoff": "0.2",
        "hn_concurrency": "8",
    }
    settings_env(**values)
    env = {f"HNPAL_{k.upper()}": v for k, v in values.items()}
    with session_scope() as session:  # committed rows of earlier tests must not count here
        session.execute(Post.__table__.delete())
    yield server, env, tmp_path / "content.rocksdb"
    server.stop()
    with session_scope() as session:
        session.execute(Post.__table__.delete())


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(message)


def posts_by_url_fragment() -> dict[str, Post]:
    with session_scope() as session:
        posts = session.scalars(select(Post)).all()
    return {p.url or f"text:{p.hn_id}": p for p in posts}


def all_done() -> bool:
    with session_scope() as session:
        statuses = session.scalars(select(Post.crawl_status)).all()
    return bool(statuses) and all(s in TERMINAL for s in statuses)


def comments_done() -> bool:
    with session_scope() as session:
        waiting = session.scalars(
            select(Post.id).where(Post.is_crawl_success, Post.comment_count > 0, Post.comments_fetched_at.is_(None))
        ).all()
    return not waiting


@pytest.mark.slow
def test_snapshot_flows_through_the_pipeline(pipeline_env, spawn_worker) -> None:
    server, env, store_path = pipeline_env
    content = spawn_worker("content", env=env)
    general = spawn_worker("default,crawl", env=env, concurrency=2)
    content.wait_ready()
    general.wait_ready()

    with session_scope() as session:
        report = service.fetch_lists(session=session, lists=["new", "job"], limit=500)
    assert report.inserted >= 35 and report.skipped["deleted"] and report.skipped["dead"] and report.skipped["null"]

    wait_until(all_done, 120, "posts still in flight")
    wait_until(comments_done, 60, "comment threads not stored")
    posts = posts_by_url_fragment()

    def find(fragment: str) -> Post:
        matches = [p for key, p in posts.items() if fragment in key]
        assert matches, fragment
        return matches[0]

    import httpx

    articles = [
        p
        for p in posts.values()
        if p.url and "/articles/" in p.url and p.repost_of_post_id is None and httpx.head(p.url).status_code == 200
    ]
    assert len(articles) >= 20
    with ContentStore.open_reader(store_path) as store:
        for post in articles:
            if post.crawl_status == "reused":
                continue
            assert post.crawl_status == "success", (post.url, post.crawl_error)
            assert post.has_html and post.has_text and post.has_markdown and post.crawled_at
            assert post.extraction_method == "trafilatura" and post.crawl_retry_count == 0
            assert len((store.get_text(post.hn_id, "text") or "").split()) > 150

        # the repost reuses the earlier crawl and links to it
        reposts = [p for p in posts.values() if p.crawl_status == "reused"]
        assert len(reposts) == 1
        repost = reposts[0]
        original = next(p for p in posts.values() if p.id == repost.repost_of_post_id)
        assert original.canonical_url == repost.canonical_url
        assert store.get(repost.hn_id, "text") == store.get(original.hn_id, "text")

        pdf = find(".pdf")
        assert pdf.crawl_status == "success" and pdf.extraction_method == "pdf"

        latin1 = find("/hostile/latin1")
        assert latin1.crawl_status == "success"
        assert "café" in store.get_text(latin1.hn_id, "text")

        text_posts = [p for p in posts.values() if p.url is None and p.type in ("ask_hn", "show_hn", "job")]
        assert text_posts and all(p.crawl_status == "success" and p.extraction_method == "hn_text" for p in text_posts)
        assert all(store.get_text(p.hn_id, "text") for p in text_posts)

        threads = [p for p in posts.values() if p.is_crawl_success and p.comment_count > 0]
        assert threads
        for post in threads:
            doc = json.loads(store.get_text(post.hn_id, "comments"))
            assert doc["hn_id"] == post.hn_id and doc["comments"]
            assert all(c["text"] for c in doc["comments"])

    # hostile links end in a recorded, honest outcome
    not_found = next(p for p in posts.values() if p.crawl_error and "HTTP 404" in p.crawl_error)
    assert not_found.crawl_status == "failed" and "HTTP 404" in not_found.crawl_error
    assert not_found.crawl_retry_count == 1  # permanent: not retried
    binary = find("/hostile/binary")
    assert binary.crawl_status == "failed" and binary.crawl_retry_count == 1
    loop = find("redirect")
    assert loop.crawl_status == "failed" and "redirect" in loop.crawl_error
    slow = find("/hostile/slow")
    assert slow.crawl_status == "failed" and slow.crawl_retry_count == 3  # transient: retried, then permanent
    assert "timeout" in slow.crawl_error
    huge = find("/hostile/huge")
    assert huge.crawl_status in ("success", "failed") and (huge.crawl_status == "success" or huge.crawl_error)

    for post in posts.values():
        assert post.crawl_status in TERMINAL
        assert post.is_crawl_success == (post.crawl_status in ("success", "reused"))
        if post.crawl_status == "failed":
            assert post.crawl_error and 1 <= post.crawl_retry_count <= 3


@pytest.mark.slow
def test_a_killed_crawl_is_redelivered_without_counting_an_attempt(pipeline_env, spawn_worker) -> None:
    server, env, _store = pipeline_env
    server.add_page("/kill/article.html", (Path(__file__).parent / "_long_article.html").read_bytes())
    story = server.add_story(title="A long article", url=server.url("/kill/article.html"))
    server.set_fault("/kill/article.html", "slow", seconds=6, count=1)
    env = {**env, "HNPAL_CRAWL_READ_TIMEOUT": "10", "HNPAL_CRAWL_TOTAL_TIMEOUT": "20"}  # patient crawler
    content = spawn_worker("content", env=env)
    crawler = spawn_worker("crawl", env=env)
    content.wait_ready()
    crawler.wait_ready()
    with session_scope() as session:
        service.fetch_items(session=session, hn_ids=[story])

    task_process = psutil.Process(crawler.proc.pid).children()[0]
    port = int(server.base_url.rsplit(":", 1)[1])

    def downloading() -> bool:  # the task process holds a connection to the page's server
        return any(c.raddr and c.raddr.port == port for c in task_process.net_connections(kind="tcp"))

    wait_until(downloading, 30, "the crawl never started")
    os.kill(task_process.pid, signal.SIGKILL)  # killed mid-download (the server is still holding the answer)

    def stored() -> bool:
        with session_scope() as session:
            return session.scalar(select(Post.crawl_status).where(Post.hn_id == story)) == "success"

    wait_until(stored, 60, "the redelivered crawl did not finish")
    with session_scope() as session:
        post = session.scalar(select(Post).where(Post.hn_id == story))
    assert post.crawl_retry_count == 0 and post.crawl_error is None
    assert "WorkerLostError" in crawler.log() and crawler.log().count("Task hnpal.crawl.post[") >= 2

    def hits() -> list[str]:  # the server logs a slow answer when its delay ends, after the kill
        return [p for _m, p, _s in server.request_log if p.startswith("/kill/article.html")]

    wait_until(lambda: len(hits()) == 2, 15, "expected the killed attempt and the redelivery")
