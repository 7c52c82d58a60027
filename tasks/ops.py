"""Operations tasks (``default`` queue): the daily prune, and a slow task for drills (:mod:`hnpal.ops.drills`)."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.ops import drills, retention


@app.task(name="hnpal.ops.prune", queue=queues.DEFAULT)
def prune() -> dict:
    """Delete ``agent_calls`` past their retention and the reservations lost workers left."""
    return retention.prune()


# Late acknowledgement: a task that was running when its worker died is delivered again, so a drill can
# tell "lost" from "ran twice" (each completion is a row; duplicates are counted, never hidden).
@app.task(name="hnpal.ops.sleep", queue=queues.DEFAULT, acks_late=True, reject_on_worker_lost=True)
def sleep(seconds: float, token: str) -> str:
    """Sleep ``seconds`` (at most 600), then record ``token`` as completed. Returns the token."""
    return drills.sleep(seconds=seconds, token=token)
