"""The Celery app. ``celery -A hnpal worker``, ``celery -A hnpal call hnpal.health.ping``.

Configuration lives in the top-level ``celeryconfig`` module; task modules live in the top-level
``tasks`` package and are thin: load by id, call a service, return ids.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging, worker_process_init

app = Celery("hnpal")
app.config_from_object("celeryconfig")


@setup_logging.connect
def _setup_logging(**_: object) -> None:
    from config.logging import configure_logging

    configure_logging()


@worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    # Pooled connections must not be shared with the parent process.
    from hnpal.db.session import dispose_engines

    dispose_engines()


def enqueue_after_commit(session, task, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """``task.apply_async(args, kwargs)`` once ``session`` commits (nothing on rollback)."""
    from hnpal.db.hooks import after_commit

    after_commit(session, lambda: task.apply_async(args=args, kwargs=kwargs))
