"""Summary tasks. Generation runs on the ``llm`` queue at bulk priority (a thread pool overlaps model
I/O); the sweep and the comment-refresh scan run on ``default``. The work is :mod:`hnpal.summaries.runs`."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.errors import WorkFailed
from hnpal.summaries import runs, service


# Idempotent (generated once per post and style), so a redelivered message only finds the row.
# A failed model call is recorded (posts.summary_status, the sweep retries it) and then raised as
# WorkFailed, so Flower counts the task as failed.
@app.task(name="hnpal.summaries.summarize", queue=queues.LLM, priority=queues.BULK_PRIORITY, bind=True,
          acks_late=True, reject_on_worker_lost=True, max_retries=20, throws=(WorkFailed,))  # fmt: skip
def summarize(
    self, post_id: int, style: str | None = None, interests: list[str] | None = None, upgrade: bool = False
) -> dict:
    """Make sure one summary exists (see :func:`hnpal.summaries.runs.summarize`)."""
    try:
        return runs.summarize(post_id=post_id, style=style, interests=interests, upgrade=upgrade)
    except service.Busy:
        raise self.retry(countdown=1.0) from None  # another worker is writing it; it will be there


@app.task(name="hnpal.summaries.sweep", queue=queues.DEFAULT)
def sweep() -> int:
    """Retry summaries that failed or were lost; re-make offline ones once the model key works again."""
    return runs.sweep()


@app.task(name="hnpal.summaries.refresh_comments", queue=queues.DEFAULT)
def refresh_comments() -> int:
    """Threads that grew by half since their summary: fetch them again (the summary follows)."""
    return runs.refresh_comments()
