"""Kill -9 the whole crawl worker (main process and pool children) in the middle of 100 crawls, then
start a new one.

The pipeline runs on a private PostgreSQL and Redis with its beat. Pages come from the sandbox HN replay
server over loopback, each answered after a short delay, so the kill lands while crawls are downloading.
Three posts link to pages that answer 404: they must fail for that reason, once. Every other post must end
crawled, with no retry charged to it by the kill: a crawl records nothing until it has a result; its
message (acks_late, reject_on_worker_lost) comes back from Redis after the visibility timeout, and a
message lost between Redis's BRPOP and its record as unacknowledged is dispatched again by the beat from
the post's ``queued`` row.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.reliability.conftest import Pipeline, wait_until

POSTS = 100
BROKEN = 3  # pages that answer 404: a real reason to fail


@pytest.mark.slow
def test_crawl_worker_killed_mid_batch(pipeline: Pipeline) -> None:
    post_ids = pipeline.add_posts(POSTS, delay=0.25)
    broken = sorted(pipeline.pages)[:BROKEN]
    for hn_id in broken:
        pipeline.replay.add_page(f"/pipe/{hn_id}.html", "<html><body>Not here</body></html>", status=404)
    stack = pipeline.stack
    pipeline.start_crawling()
    crawler = next(p for p in stack.procs if p.name == "crawl")

    wait_until(
        lambda: pipeline.finished(post_ids) >= 25,
        120,
        lambda: f"crawls did not start: {pipeline.statuses(post_ids)}\n{stack.logs()}",
    )
    at_kill = pipeline.finished(post_ids)
    killed = crawler.kill9()
    assert killed >= 3, killed  # the main process and its two pool children
    assert at_kill < POSTS, "every crawl finished before the kill"

    stack.worker("crawl", concurrency=2, name="crawl2").wait_ready()
    wait_until(
        lambda: pipeline.finished(post_ids) == POSTS,
        180,
        lambda: f"not every post finished: {pipeline.statuses(post_ids)}\n{stack.logs()}",
    )
    posts = pipeline.posts(post_ids)
    crawled = [p for p in posts if p["crawl_status"] in ("success", "reused")]
    failed = [p for p in posts if p["crawl_status"] == "failed"]
    inflated = [p for p in crawled if p["crawl_retry_count"] != 0 or p["crawl_error"] is not None]
    inflated += [p for p in failed if p["crawl_retry_count"] != 1]
    with pipeline.replay._lock:
        hits = Counter(path for _m, path, _s in pipeline.replay.request_log if path.startswith("/pipe/"))
    asked_again = sum(1 for n in hits.values() if n > 1)
    print(
        f"reliability crawl-kill: posts={POSTS} kills=1 finished_at_kill={at_kill} crawled={len(crawled)} "
        f"failed={len(failed)} pages_asked_again={asked_again} inflated_retries={len(inflated)}"
    )
    assert sorted(p["hn_id"] for p in failed) == broken, failed
    assert all("404" in (p["crawl_error"] or "") for p in failed), failed
    assert len(crawled) == POSTS - BROKEN
    assert all(p["has_html"] and p["has_text"] and p["has_markdown"] for p in crawled)
    assert inflated == [], inflated
    # The kill interrupted crawls mid-download: those pages were asked for again by the new worker.
    assert asked_again >= 1, hits
