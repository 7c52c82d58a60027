"""Digest tasks: the every-minute schedule (``default``) and one send task per user (``telegram``)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.exc import OperationalError

from hnpal.celery import app
from hnpal.db.session import session_scope, work_session
from hnpal.deliveries import service
from hnpal.telegram.client import NetworkError, RetryAfter
from hnpal.telegram.ratelimit import LimiterTimeout

log = logging.getLogger(__name__)
PREPARE_BATCH = 1000


@app.task(name="hnpal.digests.schedule")
def schedule() -> int:
    """Create the digests that are due, select and reserve their posts, fan out one send per user."""
    with session_scope() as session:
        ids = service.create_due_digests(session=session)
    for start in range(0, len(ids), PREPARE_BATCH):
        chunk = ids[start : start + PREPARE_BATCH]
        with session_scope() as session:
            service.prepare(session=session, digest_ids=chunk)
        for digest_id in chunk:
            send.delay(digest_id)
    return len(ids)


# Idempotent: the reservation rows and stored message ids make a redelivered task resume where the
# digest stopped (at worst repeating the one message in flight).
@app.task(name="hnpal.digests.send", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=12)
def send(self, digest_id: int) -> dict:
    from hnpal.telegram.outbox import TelegramOutbox

    outbox = TelegramOutbox()
    sender = service.Sender(send=outbox.send)
    try:
        with work_session() as session:
            result = service.send_digest(session=session, digest_id=digest_id, sender=sender)
    except RetryAfter as exc:
        raise self.retry(countdown=max(1.0, exc.retry_after or 1.0)) from None
    except (NetworkError, LimiterTimeout, OperationalError) as exc:
        raise self.retry(countdown=min(300, 5 * 2**self.request.retries), exc=exc) from None
    if result.status == "waiting" and result.missing_summaries:
        from tasks.summaries import summarize

        with session_scope() as session:
            style, interests = _style_of(session, digest_id)
        for post_id in result.missing_summaries:
            summarize.delay(post_id, style, interests if style == "personalized" else None)
        raise self.retry(countdown=10)
    return {"digest_id": digest_id, "status": result.status, "sent": result.sent}


def _style_of(session, digest_id: int) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    from hnpal.deliveries.models import Digest
    from hnpal.users.models import User

    digest = session.get(Digest, digest_id)
    user = session.get(User, digest.user_id)
    return service.preferences(user.digest_preferences).summary_style, list(user.interests)


@app.task(name="hnpal.digests.sweep")
def sweep() -> int:
    """Send on digests whose task was lost (pending or half-sent for over ten minutes)."""
    with session_scope() as session:
        ids = service.unfinished_digests(session=session, older_than=timedelta(minutes=10))
    for digest_id in ids:
        send.delay(digest_id)
    return len(ids)
