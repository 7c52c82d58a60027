"""Operations tasks (``default`` queue): the daily prune, and a slow debug task for drills.

``celery -A hnpal call hnpal.ops.sleep --args '[5, "drill-1"]'`` runs a task that takes five seconds and
records its completion in ``audit_log`` (action ``ops.sleep``, ``details.token``): the warm-shutdown test
of ``hnpal up`` enqueues a batch of them, stops the stack in the middle and counts completions.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import text

from config.settings import get_settings
from hnpal import queues
from hnpal.celery import app
from hnpal.db.session import get_engine
from hnpal.ops.retention import prune_agent_calls

SLEEP_RECORD = text(
    "INSERT INTO audit_log (actor_type, action, details) "
    "VALUES ('system', 'ops.sleep', jsonb_build_object('token', CAST(:token AS text), 'pid', CAST(:pid AS int)))"
)
MAX_SLEEP = 600.0


@app.task(name="hnpal.ops.prune", queue=queues.DEFAULT)
def prune() -> dict:
    """Delete ``agent_calls`` older than HNPAL_AGENT_CALLS_RETENTION_DAYS, in batches, and the model-call
    reservations lost workers left (they stopped counting when they expired)."""
    from hnpal.usage import allowance

    settings = get_settings()
    deleted = prune_agent_calls(
        engine=get_engine(),
        older_than=timedelta(days=settings.agent_calls_retention_days),
        batch_size=settings.prune_batch_size,
    )
    return {"agent_calls": deleted, "llm_reservations": allowance.prune()}


# Late acknowledgement: a task that was running when its worker died is delivered again, so a drill can
# tell "lost" from "ran twice" (each completion is a row; duplicates are counted, never hidden).
@app.task(name="hnpal.ops.sleep", queue=queues.DEFAULT, acks_late=True, reject_on_worker_lost=True)
def sleep(seconds: float, token: str) -> str:
    """Sleep ``seconds`` (at most 600), then record ``token`` as completed. Returns the token."""
    time.sleep(min(max(float(seconds), 0.0), MAX_SLEEP))
    with get_engine().begin() as conn:
        conn.execute(SLEEP_RECORD, {"token": str(token)[:200], "pid": os.getpid()})
    return str(token)
