"""Summary tasks. Generation runs on the ``llm`` queue (a thread pool overlaps LLM I/O); the sweep and
the comment-refresh scan run on ``default``."""

from __future__ import annotations

from config.settings import get_settings
from hnpal.celery import app
from hnpal.db.session import session_scope
from hnpal.llm.base import LLMError
from hnpal.summaries import service


# Idempotent (generated once per post and style), so a redelivered message only finds the row.
@app.task(name="hnpal.summaries.summarize", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=20)
def summarize(self, post_id: int, style: str | None = None, interests: list[str] | None = None) -> dict:
    """Make sure one summary exists. Returns what happened (generated, existing, refreshed, skipped)."""
    style = style or get_settings().summary_default_style
    try:
        outcome = service.summarize(post_id=post_id, style=style, interests=interests)
    except service.Busy:
        raise self.retry(countdown=1.0) from None  # another worker is writing it; it will be there
    except LLMError as exc:
        if style == get_settings().summary_default_style:
            service.mark_failed(post_id=post_id, error=exc)
        return {"post_id": post_id, "style": style, "status": "failed", "error": str(exc)}
    except Exception as exc:  # anything after the call (a write refused...): counted, so the sweep stops
        if style == get_settings().summary_default_style:
            service.mark_failed(post_id=post_id, error=exc)
        raise
    return {"post_id": post_id, "style": style, "status": outcome.status, "summary_id": outcome.summary_id}


@app.task(name="hnpal.summaries.sweep")
def sweep() -> int:
    """Retry summaries that failed transiently or never ran (their message was lost)."""
    with session_scope() as session:
        ids = service.due_for_sweep(session=session, limit=500)
    for post_id in ids:
        summarize.delay(post_id)
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
