"""Run side effects only once the transaction that caused them has committed.

Celery tasks are enqueued this way (the Polar and Saleor pattern): a worker must never pick up an id
whose row is not visible yet, and a rolled-back transaction must enqueue nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
_KEY = "hnpal_after_commit"


def after_commit(session: Session, callback: Callable[[], object]) -> None:
    """Call ``callback`` after ``session`` commits; drop it if the session rolls back."""
    session.info.setdefault(_KEY, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_callbacks(session: Session) -> None:
    for callback in session.info.pop(_KEY, []):
        try:
            callback()
        except Exception:  # the commit stands; a failed side effect is logged, a sweep catches up
            log.exception("after-commit callback %r failed", callback)


@event.listens_for(Session, "after_rollback")
def _drop_callbacks(session: Session) -> None:
    session.info.pop(_KEY, None)
