"""Crawl tasks (``crawl`` queue): fetch and extract one post; dispatch and sweep on ``default``."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import InterfaceError, OperationalError

import celeryconfig
from config.settings import get_settings
from hnpal.celery import WorkFailed, app
from hnpal.crawl import service
from hnpal.crawl.fetch import Fetcher
from hnpal.db.hooks import after_commit
from hnpal.db.session import session_scope

_fetcher: Fetcher | None = None


def fetcher() -> Fetcher:
    global _fetcher
    if _fetcher is None:
        _fetcher = Fetcher()
    return _fetcher


# The database unreachable for a moment (a restart, a failover) is retried with backoff, not failed:
# it is no crawl attempt, and the post would otherwise wait for the dispatch's staleness limit.
DB_TRANSIENT = (OperationalError, InterfaceError)
DB_RETRY = {
    "autoretry_for": DB_TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": min(60, celeryconfig.MAX_COUNTDOWN),
    "retry_jitter": True,
}


# Idempotent (a crawl records nothing until it has a result), so a message whose worker died is
# redelivered rather than lost, and the kill costs no attempt. A crawl that failed for good is committed
# (crawl_status 'failed', listed by `hnpal quarantine`) and then raised as WorkFailed: the task ends in
# FAILURE, is acknowledged and not retried (a redelivered copy would find the post failed and skip it).
@app.task(name="hnpal.crawl.post", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
          throws=(WorkFailed,), **DB_RETRY)  # fmt: skip
def crawl_post(self, post_id: int) -> dict:
    """Crawl one post by id; the content goes to the content writer. Retries transient failures."""
    result = service.crawl(post_id=post_id, fetcher=fetcher())
    if result.outcome == "retry" and result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    if result.outcome == "failed":
        raise WorkFailed(f"crawl of post {post_id} failed for good: {result.detail}")
    return {"post_id": post_id, "outcome": result.outcome, "detail": result.detail}


# Stale means older than any retry countdown could make it: past the visibility timeout, after which
# the broker itself would have redelivered a message that still existed (a Redis restart loses them).
STALE_IN_FLIGHT = timedelta(seconds=celeryconfig.VISIBILITY_TIMEOUT)
STALE_HANDOFF = min(timedelta(minutes=15), STALE_IN_FLIGHT)


@app.task(name="hnpal.crawl.dispatch")
def dispatch() -> int:
    """Enqueue crawls for pending posts and for in-flight posts whose message was lost."""
    settings = get_settings()
    with session_scope() as session:
        ids = service.dispatch(session=session, limit=settings.crawl_dispatch_batch, stale_after=STALE_IN_FLIGHT)
        after_commit(session, lambda: [crawl_post.delay(i) for i in ids])
    return len(ids)


@app.task(name="hnpal.crawl.sweep")
def sweep() -> dict:
    """The content sweep: content handed to the writer but never stored is produced again."""
    from hnpal.ingest.service import resend_texts

    settings = get_settings()
    with session_scope() as session:
        ids = service.dispatch(
            session=session,
            limit=settings.crawl_dispatch_batch,
            stale_after=STALE_HANDOFF,
            stale_statuses=("fetched",),
            include_pending=False,
        )
        after_commit(session, lambda: [crawl_post.delay(i) for i in ids])
    with session_scope() as session:
        hn_ids = service.stale_text_posts(
            session=session, stale_after=STALE_HANDOFF, limit=settings.crawl_dispatch_batch
        )
        resent = resend_texts(session=session, hn_ids=hn_ids)
    return {"recrawled": len(ids), "texts_resent": resent}
