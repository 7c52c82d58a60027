"""Crawl tasks: fetch and extract one post (``crawl`` queue); dispatch and sweep (``default``)."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.crawl import service
from hnpal.db.retry import DB_RETRY
from hnpal.errors import WorkFailed


# Idempotent (a crawl records nothing until it has a result), so a message whose worker died is
# redelivered rather than lost, and the kill costs no attempt. A crawl that failed for good is committed
# (crawl_status 'failed', listed by `hnpal quarantine`) and then raised as WorkFailed: the task ends in
# FAILURE, is acknowledged and not retried (a redelivered copy would find the post failed and skip it).
@app.task(name="hnpal.crawl.post", queue=queues.CRAWL, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None, throws=(WorkFailed,), **DB_RETRY)  # fmt: skip
def crawl_post(self, post_id: int) -> dict:
    """Crawl one post by id; the content goes to the content writer. Retries transient failures."""
    result = service.crawl(post_id=post_id, fetcher=service.fetcher())
    if result.outcome == "retry" and result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    if result.outcome == "failed":
        raise WorkFailed(f"crawl of post {post_id} failed for good: {result.detail}")
    return {"post_id": post_id, "outcome": result.outcome, "detail": result.detail}


@app.task(name="hnpal.crawl.dispatch", queue=queues.DEFAULT)
def dispatch() -> int:
    """Enqueue crawls for pending posts and for in-flight posts whose message was lost."""
    return service.dispatch_pending()


@app.task(name="hnpal.crawl.sweep", queue=queues.DEFAULT)
def sweep() -> dict:
    """The content sweep: content handed to the writer but never stored is produced again."""
    return service.sweep_handoffs()
