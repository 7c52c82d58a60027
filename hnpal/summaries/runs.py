"""The summary work the tasks run: one summary with its failure bookkeeping, the sweep, the comment
refresh. Follow-up jobs are enqueued through :mod:`hnpal.jobs`."""

from __future__ import annotations

from typing import Any

from config.settings import get_settings
from hnpal import jobs
from hnpal.db.session import session_scope
from hnpal.errors import WorkFailed
from hnpal.llm import health
from hnpal.llm.base import LLMError
from hnpal.summaries import service


def summarize(*, post_id: int, style: str | None, interests: list[str] | None, upgrade: bool) -> dict[str, Any]:
    """Make sure one summary exists. Returns what happened (generated, existing, refreshed, upgraded,
    skipped). ``upgrade``: make a summary the offline summarizer wrote while the model refused the key
    again, with the model (the default style, then the post's other shared styles, enqueued).

    Raises ``service.Busy`` while another worker writes the same summary (the task tries again in a
    moment), and :class:`WorkFailed` once a failed model call is recorded (``posts.summary_status``, which
    the sweep retries) so Flower counts the task as failed."""
    default = get_settings().summary_default_style
    style = style or default
    try:
        outcome = service.summarize(post_id=post_id, style=style, interests=interests, upgrade=upgrade)
    except service.Busy:
        raise
    except LLMError as exc:
        if style == default:
            service.mark_failed(post_id=post_id, error=exc, upgrade=upgrade)
        raise WorkFailed(f"summary {style} of post {post_id}: {exc}") from None
    except Exception as exc:  # anything after the call (a write refused...): counted, so the sweep stops
        if style == default:
            service.mark_failed(post_id=post_id, error=exc, upgrade=upgrade)
        raise
    if style == default and outcome.status == "skipped":
        service.mark_skipped(post_id=post_id)
    if upgrade and style == default and outcome.status == "upgraded":
        for other in service.offline_styles(post_id=post_id):
            jobs.enqueue(None, jobs.SUMMARIES_SUMMARIZE, post_id, other, None, True)
    return {"post_id": post_id, "style": style, "status": outcome.status, "summary_id": outcome.summary_id}


RISEN_PER_SWEEP = 100  # posts that rose to the paid tier, made again with the model per sweep (best first)


def sweep() -> int:
    """Retry summaries that failed transiently or never ran (their message was lost); once the model
    accepts the key again (re-checked with one cheap request, see hnpal.llm.health), make the summaries
    written offline meanwhile again with the model; and make again with the model the offline summaries of
    posts that have risen to the paid tier since (within the day's budget). Returns the jobs enqueued."""
    settings = get_settings()
    with session_scope() as session:
        ids = service.due_for_sweep(session=session, limit=500)
        offline = service.offline_due(session=session, limit=500)
        upgrades = service.risen_due(session=session, settings=settings, limit=RISEN_PER_SWEEP)
    for post_id in ids:
        jobs.enqueue(None, jobs.SUMMARIES_SUMMARIZE, post_id)
    if offline and health.recheck():
        upgrades = [*offline, *upgrades]
    for post_id in upgrades:
        jobs.enqueue(None, jobs.SUMMARIES_SUMMARIZE, post_id, None, None, True)
    return len(ids) + len(upgrades)


def refresh_comments() -> int:
    """Threads that grew by half since their summary: fetch them again (the summary follows)."""
    with session_scope() as session:
        ids = service.comment_refresh_due(session=session, limit=200)
    for post_id in ids:
        jobs.enqueue(None, jobs.INGEST_COMMENTS, post_id)
    return len(ids)
