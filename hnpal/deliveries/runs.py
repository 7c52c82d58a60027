"""A digest run, from the schedule to the sends, and what follows a send that could not finish.

``schedule_due`` (beat, every minute) creates the digests that are due and enqueues their preparation per
500 (set-based selection and reservation, in parallel on the workers); ``prepare_batch`` fans out the
sends on the ``telegram`` queue: one ``hnpal.digests.send`` per user, or, with paid broadcasts (1000
messages/s), one ``hnpal.digests.send_batch`` per 50 users, because at that rate the cost of a task per
message would be the bottleneck. Every job is enqueued after the commit of the rows it names.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from config.settings import get_settings
from hnpal import jobs
from hnpal.db.session import session_scope
from hnpal.deliveries import service
from hnpal.deliveries.models import Digest
from hnpal.deliveries.sender import Outcome
from hnpal.users.models import User

PREPARE_BATCH = 500  # digests per prepare task (one statement); tasks run in parallel on the workers
PAID_SEND_BATCH = 50
SUMMARY_WAIT_SECONDS = 10  # a digest waiting for its posts' summaries is sent again this much later
# A send task can be lost without any worker failing for good: a Redis restart, or a worker killed
# between taking the message off the queue and recording it as unacknowledged.
STALE_DIGEST = min(timedelta(minutes=10), timedelta(seconds=get_settings().broker_visibility_timeout))


def schedule_due() -> int:
    """Create the digests that are due (each batch once per user) and enqueue their preparation."""
    with session_scope() as session:
        ids = service.create_due_digests(session=session)
        for start in range(0, len(ids), PREPARE_BATCH):
            jobs.enqueue(session, jobs.DIGESTS_PREPARE, ids[start : start + PREPARE_BATCH])
    return len(ids)


def prepare_batch(digest_ids: list[int]) -> int:
    """Select and reserve the posts of up to 500 digests in one statement, then fan out the sends of those
    that have posts. Returns how many digests are ready."""
    with session_scope() as session:
        reserved = service.prepare(session=session, digest_ids=digest_ids)
        ready = [digest_id for digest_id, count in reserved.items() if count]
        fan_out(session, ready)
    return len(ready)


def fan_out(session: Session | None, digest_ids: list[int]) -> None:
    """Enqueue the sends of prepared digests (after ``session`` commits; at once without one)."""
    if get_settings().telegram_paid_broadcast:
        for start in range(0, len(digest_ids), PAID_SEND_BATCH):
            jobs.enqueue(session, jobs.DIGESTS_SEND_BATCH, digest_ids[start : start + PAID_SEND_BATCH])
    else:
        for digest_id in digest_ids:
            jobs.enqueue(session, jobs.DIGESTS_SEND, digest_id)


def follow_up(outcome: Outcome) -> None:
    """Digests that could not finish now: the summaries they wait for are asked for (in the reader's
    style) and the digest is sent again shortly; a digest Telegram asked to wait is sent again then."""
    if outcome.waiting:
        with session_scope() as session:
            for digest_id, post_ids in outcome.waiting.items():
                style, interests = _style_of(session, digest_id)
                for post_id in post_ids:
                    personal = interests if style == "personalized" else None
                    jobs.enqueue(session, jobs.SUMMARIES_SUMMARIZE, post_id, style, personal)
            for digest_id in outcome.waiting:
                jobs.enqueue(session, jobs.DIGESTS_SEND, digest_id, countdown=SUMMARY_WAIT_SECONDS)
    for digest_id, wait in outcome.retry.items():
        jobs.enqueue(None, jobs.DIGESTS_SEND, digest_id, countdown=wait)  # capped at HNPAL_MAX_COUNTDOWN


def _style_of(session: Session, digest_id: int) -> tuple[str, list[str]]:
    digest = session.get(Digest, digest_id)
    assert digest is not None  # a digest is never deleted while its send runs (only with its user, purged later)
    user = session.get(User, digest.user_id)
    assert user is not None
    return service.preferences(user.digest_preferences).summary_style, list(user.interests)


def sweep() -> int:
    """Send on digests whose task was lost (pending or half-sent for over ten minutes, or the visibility
    timeout when that is shorter)."""
    with session_scope() as session:
        ids = service.unfinished_digests(session=session, older_than=STALE_DIGEST)
        for digest_id in ids:
            jobs.enqueue(session, jobs.DIGESTS_SEND, digest_id)
    return len(ids)
