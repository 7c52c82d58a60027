"""Memory tasks (``llm`` queue): extract what to remember from a discussion once it has ended."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.errors import WorkFailed
from hnpal.memory import service

MAX_RETRIES = 3


# Idempotent: the outcome is recorded on the conversation under a row lock, so a redelivered message
# finds it and stores nothing twice.
# An extraction whose model call failed for good (or answered nothing usable) is recorded on the
# conversation, then raised as WorkFailed: the task is a FAILURE in Flower, acknowledged, not retried.
@app.task(name="hnpal.memory.extract", queue=queues.LLM, priority=queues.BULK_PRIORITY, bind=True, acks_late=True,
          reject_on_worker_lost=True, max_retries=MAX_RETRIES, throws=(WorkFailed,))  # fmt: skip
def extract(self, conversation_id: int) -> dict:
    """Extract memory from one ended conversation. Returns its outcome and the ids of the rows stored."""
    try:
        outcome = service.extract(conversation_id=conversation_id, may_retry=self.request.retries < MAX_RETRIES)
    except service.RetryLater as exc:  # the model is unreachable for now: try again later, then give up
        raise self.retry(countdown=min(3600, 60 * 4**self.request.retries)) from exc
    if outcome.status in ("failed", "malformed"):
        error = outcome.detail.get("error", "") if isinstance(outcome.detail, dict) else ""
        raise WorkFailed(f"memory extraction of conversation {conversation_id} {outcome.status}: {error}"[:500])
    return {"conversation_id": conversation_id, "status": outcome.status, "stored": outcome.stored}
