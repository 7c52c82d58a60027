"""A slow task for reliability drills: ``celery -A hnpal call hnpal.ops.sleep --args '[5, "drill-1"]'``
runs a task that takes five seconds and records its completion in ``audit_log`` (action ``ops.sleep``,
``details.token``): the warm-shutdown test of ``hnpal up`` enqueues a batch of them, stops the stack in the
middle and counts completions."""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from hnpal.db.session import get_engine

SLEEP_RECORD = text(
    "INSERT INTO audit_log (actor_type, action, details) "
    "VALUES ('system', 'ops.sleep', jsonb_build_object('token', CAST(:token AS text), 'pid', CAST(:pid AS int)))"
)
MAX_SLEEP = 600.0


def sleep(*, seconds: float, token: str) -> str:
    """Sleep ``seconds`` (at most 600), then record ``token`` as completed (one row per completion: a
    task run twice leaves two). Returns the token."""
    time.sleep(min(max(float(seconds), 0.0), MAX_SLEEP))
    with get_engine().begin() as conn:
        conn.execute(SLEEP_RECORD, {"token": str(token)[:200], "pid": os.getpid()})
    return str(token)
