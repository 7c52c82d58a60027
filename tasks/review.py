"""Review tasks: the send that follows a decision and a silenced user's released messages (``telegram``
queue); the sweep (``default``)."""

from __future__ import annotations

from hnpal import jobs, queues
from hnpal.celery import app
from hnpal.db.session import session_scope
from hnpal.errors import Retry
from hnpal.review import service
from hnpal.telegram import updates


# Idempotent: the row is claimed before the send and recorded after it; a second delivery finds it taken.
@app.task(name="hnpal.review.send", queue=queues.TELEGRAM, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=8)  # fmt: skip
def send(self, send_id: int) -> str:
    """Send the text a review decision chose, once."""
    try:
        return service.send(send_id)
    except updates.TRANSIENT as exc:
        countdown = getattr(exc, "retry_after", None) or min(60, 2 ** (self.request.retries + 1))
        raise self.retry(countdown=countdown) from None


@app.task(name="hnpal.review.sweep", queue=queues.DEFAULT)
def sweep() -> dict[str, int]:
    """Decide held items past HNPAL_REVIEW_TIMEOUT, send what was left behind, drop expired quarantine."""
    with session_scope() as session:
        swept = service.sweep(session)
        for send_id in swept.sends:  # sent after the commit
            jobs.enqueue(session, jobs.REVIEW_SEND, send_id)
    return {"decided": len(swept.decided), "sends": len(swept.sends), "expired": swept.expired}


# Idempotent: each released message is handled and marked processed in one transaction.
@app.task(name="hnpal.review.release", queue=queues.TELEGRAM, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=5)  # fmt: skip
def release(self, user_id: int) -> int:
    """Handle a user's quarantined messages in the order they came. Returns how many were handled."""
    try:
        return updates.release_held(user_id, retries=self.request.retries)
    except Retry as retry:
        raise self.retry(countdown=retry.countdown) from retry.__cause__
