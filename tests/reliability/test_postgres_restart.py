"""Restart PostgreSQL (a private instance) while crawls are in flight.

The crawl and content tasks that meet the database down retry with backoff (transient database errors
only) and finish once it is back. The visibility timeout (and with it the dispatch's staleness limit) is
set far beyond the test's wait here, so the tasks' own retries must do it. Nothing is lost: every post
ends crawled, its content stored, with no crawl attempt charged to the outage.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.reliability.conftest import Pipeline, wait_until

POSTS = 40
DOWN_SECONDS = 4


@pytest.mark.slow
def test_postgres_restart_mid_pipeline(pipeline: Pipeline) -> None:
    post_ids = pipeline.add_posts(POSTS)
    # Redelivery and the dispatch's staleness limit far away: only the tasks' own retries can finish in time.
    # (The retries' backoff is capped at HNPAL_MAX_COUNTDOWN: 8 s here.)
    pipeline.stack.env.update({"HNPAL_BROKER_VISIBILITY_TIMEOUT": "900", "HNPAL_MAX_COUNTDOWN": "8"})
    pipeline.start_crawling()
    stack = pipeline.stack
    wait_until(
        lambda: pipeline.finished(post_ids) >= 8,
        120,
        lambda: f"crawls did not start: {pipeline.statuses(post_ids)}\n{stack.logs()}",
    )
    at_stop = pipeline.finished(post_ids)
    pipeline.pg.stop("fast")
    stopped = time.monotonic()
    assert not pipeline.pg.answers()
    time.sleep(DOWN_SECONDS)
    pipeline.pg.start()
    down = time.monotonic() - stopped
    assert at_stop < POSTS, "every crawl finished before PostgreSQL stopped"

    wait_until(
        lambda: pipeline.finished(post_ids) == POSTS,
        180,
        lambda: f"not every post finished: {pipeline.statuses(post_ids)}\n{stack.logs()}",
    )
    posts = pipeline.posts(post_ids)
    crawled = [p for p in posts if p["crawl_status"] == "success"]
    charged = [p for p in posts if p["crawl_retry_count"] or p["crawl_error"]]
    logs = "\n".join(p.log() for p in stack.procs)
    retries = len(re.findall(r"Task hnpal\.(?:crawl\.post|content\.store)\[[^\]]+\] retry: Retry in", logs))
    db_errors = len(re.findall(r"OperationalError", logs))
    print(
        f"reliability pg-restart: posts={POSTS} finished_at_stop={at_stop} pg_down_s={down:.1f} "
        f"crawled={len(crawled)} failed={POSTS - len(crawled)} task_retries={retries} db_errors_logged={db_errors} "
        f"charged_attempts={len(charged)}"
    )
    assert len(crawled) == POSTS, pipeline.statuses(post_ids)
    assert all(p["has_html"] and p["has_text"] and p["has_markdown"] for p in posts)
    assert charged == [], charged
    assert retries >= 1, "no task met the outage (it should have retried)"
