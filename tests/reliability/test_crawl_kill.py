"""Kill -9 the whole crawl worker in the middle of 100 crawls, then start a new one.

Pages come from the sandbox HN replay server over loopback, each answered after a short delay, so the
kill lands while crawls are downloading. Three posts link to pages that answer 404: they must fail for
that reason, once. Every other post must end crawled, with no retry charged to it by the kill: the
crawl records nothing until it has a result, and its message (acks_late, reject_on_worker_lost) comes
back from Redis after the visibility timeout.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from sqlalchemy import delete, func, select

from hnpal.db.session import session_scope
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot
from tests.reliability.conftest import wait_until

POSTS = 100
BROKEN = 3  # pages that answer 404: a real reason to fail
TERMINAL = ("success", "reused", "failed", "skipped")


def page(n: int) -> str:
    words = " ".join(f"word{(n * 7 + i) % 97}" for i in range(60))
    paragraphs = "".join(f"<p>Paragraph {i} of article {n}: {words}.</p>" for i in range(12))
    head = f"<html><head><title>Article {n}</title></head>"
    return f"{head}<body><article><h1>Article {n}</h1>{paragraphs}</article></body></html>"


@pytest.mark.slow
def test_crawl_worker_killed_mid_batch(shared_env, stack_factory, tmp_path) -> None:
    server = HNReplayServer(Snapshot.empty()).start()
    base = 900_000_000 + uuid.uuid4().int % 10_000_000
    post_ids: list[int] = []
    try:
        for n in range(POSTS):
            status = 404 if n < BROKEN else 200
            server.add_page(f"/rel/{n}.html", page(n), status=status)
        server.set_fault("/rel/", "slow", seconds=0.25)  # every page: a quarter of a second before the answer
        with session_scope() as session:
            for n in range(POSTS):
                post = Post(
                    hn_id=base + n,
                    type="story",
                    title=f"Reliability article {n}",
                    url=server.url(f"/rel/{n}.html"),
                    domain="127.0.0.1",
                    score=10,
                    comment_count=0,
                    crawl_status="queued",
                )
                session.add(post)
                session.flush()
                post_ids.append(post.id)
        env = {
            **shared_env,
            "HNPAL_CRAWL_ALLOW_HOSTS": "127.0.0.1",
            "HNPAL_CONTENT_PATH": str(tmp_path / "content.rocksdb"),
            "HNPAL_CRAWL_READ_TIMEOUT": "5",
            "HNPAL_CRAWL_TOTAL_TIMEOUT": "10",
            "HNPAL_CRAWL_RETRY_BACKOFF": "0.5",
        }
        stack = stack_factory(env)
        writer = stack.worker("content", name="content")
        crawler = stack.worker("crawl", concurrency=2, name="crawl")
        writer.wait_ready()
        crawler.wait_ready()
        stack.send("hnpal.crawl.post", [(i,) for i in post_ids], queue="crawl")

        def statuses() -> dict[str, int]:
            with session_scope() as session:
                rows = session.execute(
                    select(Post.crawl_status, func.count()).where(Post.id.in_(post_ids)).group_by(Post.crawl_status)
                ).all()
            return dict(rows)

        def finished() -> int:
            return sum(n for s, n in statuses().items() if s in TERMINAL)

        wait_until(lambda: finished() >= 25, 120, lambda: f"crawls did not start: {statuses()}\n{stack.logs()}")
        at_kill = finished()
        killed = crawler.kill9()
        assert killed >= 3, killed  # the main process and its two pool children
        assert at_kill < POSTS, "every crawl finished before the kill"

        replacement = stack.worker("crawl", concurrency=2, name="crawl2")
        replacement.wait_ready()
        wait_until(lambda: finished() == POSTS, 180, lambda: f"not every post finished: {statuses()}\n{stack.logs()}")
        with session_scope() as session:
            posts = session.scalars(select(Post).where(Post.id.in_(post_ids)).order_by(Post.hn_id)).all()
        crawled = [p for p in posts if p.crawl_status in ("success", "reused")]
        failed = [p for p in posts if p.crawl_status == "failed"]
        broken = {base + n for n in range(BROKEN)}
        inflated = [p for p in crawled if p.crawl_retry_count != 0 or p.crawl_error is not None]
        inflated += [p for p in failed if p.crawl_retry_count != 1]
        with server._lock:
            hits = Counter(path for _m, path, _s in server.request_log if path.startswith("/rel/"))
        redelivered = sum(1 for n in hits.values() if n > 1)
        print(
            f"reliability crawl-kill: posts={POSTS} kills=1 finished_at_kill={at_kill} crawled={len(crawled)} "
            f"failed={len(failed)} redelivered={redelivered} inflated_retries={len(inflated)}"
        )
        assert {p.hn_id for p in failed} == broken, [(p.hn_id, p.crawl_error) for p in failed]
        assert all("404" in (p.crawl_error or "") for p in failed), [p.crawl_error for p in failed]
        assert len(crawled) == POSTS - BROKEN
        assert all(p.has_html and p.has_text and p.has_markdown for p in crawled)
        assert inflated == [], [(p.hn_id, p.crawl_status, p.crawl_retry_count, p.crawl_error) for p in inflated]
        # The kill interrupted crawls mid-download: those pages were asked for twice (the killed attempt,
        # then the redelivered message on the new worker), and the retry counts above did not move.
        assert redelivered >= 1, hits
    finally:
        server.stop()
        with session_scope() as session:
            session.execute(delete(Post).where(Post.id.in_(post_ids)))
