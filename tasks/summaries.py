"""Summary tasks. Generation runs on the ``llm`` queue (a thread pool overlaps LLM I/O); the sweep and
the comment-refresh scan run on ``default``."""

from __future__ import annotations

from config.settings import get_settings
from hnpal.celery import WorkFailed, app
from hnpal.db.session import session_scope
from hnpal.llm import health
from hnpal.llm.base import LLMError
from hnpal.summaries import service


# Idempotent (generated once per post and style), so a redelivered message only finds the row.
# A failed model call is recorded (posts.summary_status, the sweep retries it) and then raised as
# WorkFailed, so Flower counts the task as failed.
@app.task(name="hnpal.summaries.summarize", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=20,
          throws=(WorkFailed,))  # fmt: skip
def summarize(
    self, post_id: int, style: str | None = None, interests: list[str] | None = None, upgrade: bool = False
) -> dict:
    """Make sure one summary exists. Returns what happened (generated, existing, refreshed, upgraded,
    skipped). ``upgrade``: make a summary the offline summarizer wrote while the model refused the key
    again, with the model (the default style, then the post's other shared styles)."""
    default = get_settings().summary_default_style
    style = style or default
    try:
        outcome = service.summarize(post_id=post_id, style=style, interests=interests, upgrade=upgrade)
    except service.Busy:
        raise self.retry(countdown=1.0) from None  # another worker is writing it; it will be there
    except LLMError as exc:
        if style == default:
            service.mark_failed(post_id=post_id, error=exc, upgrade=upgrade)
        raise WorkFailed(f"summary {style} of post {post_id}: {exc}") from None
    except Exception as exc:  # anything after the call (a write refused...): counted, so the sweep stops
        if style == default:
            service.mark_failed(post_id=post_id, error=exc, upgrade=upgrade)
        raise
    if upgrade and style == default and outcome.status == "upgraded":
        for other in service.offline_styles(post_id=post_id):
            summarize.delay(post_id, other, None, True)
    return {"post_id": post_id, "style": style, "status": outcome.status, "summary_id": outcome.summary_id}


@app.task(name="hnpal.summaries.sweep")
def sweep() -> int:
    """Retry summaries that failed transiently or never ran (their message was lost); and, once the
    model accepts the key again (re-checked with one cheap request, see hnpal.llm.health), make the
    summaries written offline meanwhile again with the model. Returns the number of tasks enqueued."""
    with session_scope() as session:
        ids = service.due_for_sweep(session=session, limit=500)
        offline = service.offline_due(session=session, limit=500)
    for post_id in ids:
        summarize.delay(post_id)
    if offline and health.recheck():
        for post_id in offline:
            summarize.delay(post_id, None, None, True)
        return len(ids) + len(offline)
    return len(ids)


@app.task(name="hnpal.summaries.refresh_comments")
def refresh_comments() -> int:
    """Threads that grew by half since their summary: fetch them again (the summary follows)."""
    from tasks.ingest import fetch_comments

    with session_scope() as session:
        ids = service.comment_refresh_due(session=session, limit=200)
    for post_id in ids:
        fetch_comments.delay(post_id)
    return len(ids)
