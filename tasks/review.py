"""Review tasks: the send that follows a decision and a silenced user's released messages (``telegram``
queue); the sweep (``default``)."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from hnpal.celery import app
from hnpal.db.session import session_scope
from hnpal.review import service
from hnpal.state.store import StateStore
from hnpal.telegram.client import NetworkError, RetryAfter
from hnpal.telegram.ratelimit import LimiterTimeout

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, NetworkError, RetryAfter, LimiterTimeout)


# Idempotent: the row is claimed before the send and recorded after it; a second delivery finds it taken.
@app.task(name="hnpal.review.send", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8)
def send(self, send_id: int) -> str:
    """Send the text a review decision chose, once."""
    try:
        return service.send(send_id)
    except TRANSIENT as exc:
        countdown = getattr(exc, "retry_after", None) or min(60, 2 ** (self.request.retries + 1))
        raise self.retry(countdown=countdown) from None


@app.task(name="hnpal.review.sweep")
def sweep() -> dict[str, int]:
    with session_scope() as session:
        swept = service.sweep(session)
    for send_id in swept.sends:  # after the commit
        app.send_task("hnpal.review.send", args=[send_id])
    return {"decided": len(swept.decided), "sends": len(swept.sends), "expired": swept.expired}


# Idempotent: each released message is handled and marked processed in one transaction.
@app.task(name="hnpal.review.release", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5)
def release(self, user_id: int) -> int:
    """Handle a user's quarantined messages in the order they came (after an operator lifted the silence
    and chose to process them). Returns how many were handled."""
    from hnpal.telegram import service as telegram
    from tasks.telegram import _outbox

    handled = 0
    while True:
        try:
            with session_scope() as session:
                if service.silenced(session, user_id) is not None:  # silenced again meanwhile: they wait
                    return handled
                held = service.next_held(session, user_id)
                if held is None:
                    return handled
                effects = telegram.handle_update(session=session, out=_outbox(), store=StateStore(),
                                                 update=dict(held.payload))  # fmt: skip
                held.status = "processed"
        except TRANSIENT as exc:
            raise self.retry(countdown=min(60, 2 ** (self.request.retries + 1))) from exc
        handled += 1
        for task_name, args, options in effects.tasks:  # after the commit
            app.send_task(task_name, args=list(args), **options)
