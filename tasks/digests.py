"""Digest tasks.

``hnpal.digests.schedule`` (beat, ``default``) creates the digests that are due and fans out
``hnpal.digests.prepare`` per 500 of them (set-based selection and reservation, in parallel on the
workers), which fans out the sends on the ``telegram`` queue: one ``hnpal.digests.send`` task per user,
or, with paid broadcasts (1000 messages/s), ``hnpal.digests.send_batch`` per 50 users, because at that
rate the cost of a task per message would be the bottleneck.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import celeryconfig
from config.settings import get_settings
from hnpal.celery import WorkFailed, app
from hnpal.db.session import session_scope
from hnpal.deliveries import sender, service

log = logging.getLogger(__name__)
PREPARE_BATCH = 500  # digests per prepare task (one statement); tasks run in parallel on the workers
PAID_SEND_BATCH = 50
SEND_THREADS = 2  # per send_batch task: each thread sends brief digests 8 at a time (sender.GROUP), holding a
# pooled connection; two per task keep pace at 1000 messages/s with less thread switching than four


@app.task(name="hnpal.digests.schedule")
def schedule() -> int:
    """Create the digests that are due (each batch once per user) and fan out their preparation."""
    with session_scope() as session:
        ids = service.create_due_digests(session=session)
    for start in range(0, len(ids), PREPARE_BATCH):
        prepare.delay(ids[start : start + PREPARE_BATCH])
    return len(ids)


# Idempotent: only digests still 'pending' are selected and reserved (row locks, skip locked).
@app.task(name="hnpal.digests.prepare", acks_late=True, reject_on_worker_lost=True)
def prepare(digest_ids: list[int]) -> int:
    """Select and reserve the posts of up to 500 digests in one statement, then fan out the sends."""
    with session_scope() as session:
        reserved = service.prepare(session=session, digest_ids=digest_ids)
    ready = [digest_id for digest_id, count in reserved.items() if count]
    fan_out(ready)
    return len(ready)


def fan_out(digest_ids: list[int]) -> None:
    if get_settings().telegram_paid_broadcast:
        for start in range(0, len(digest_ids), PAID_SEND_BATCH):
            send_batch.delay(digest_ids[start : start + PAID_SEND_BATCH])
    else:
        for digest_id in digest_ids:
            send.delay(digest_id)


def _follow_up(outcome: sender.Outcome) -> None:
    """Digests that could not finish now: summaries to wait for, or Telegram to wait for."""
    if outcome.waiting:
        from tasks.summaries import summarize

        with session_scope() as session:
            for digest_id, post_ids in outcome.waiting.items():
                style, interests = _style_of(session, digest_id)
                for post_id in post_ids:
                    summarize.delay(post_id, style, interests if style == "personalized" else None)
        for digest_id in outcome.waiting:
            send.apply_async((digest_id,), countdown=10)
    for digest_id, wait in outcome.retry.items():
        send.apply_async((digest_id,), countdown=wait)  # capped at HNPAL_MAX_COUNTDOWN (hnpal.celery.Task)


# Idempotent: reservation rows and stored message ids make a redelivered task resume where the digest
# stopped (at worst repeating the one message in flight). A digest Telegram refused for good is recorded
# (status 'failed' with the reason), then the task raises WorkFailed: a FAILURE in Flower, acknowledged,
# not retried.
@app.task(name="hnpal.digests.send", acks_late=True, reject_on_worker_lost=True, throws=(WorkFailed,))
def send(digest_id: int) -> dict:
    """Send one user's digest (the messages reserved and not sent yet)."""
    from hnpal.telegram.outbox import TelegramOutbox

    outcome = sender.send_digests(digest_ids=[digest_id], send=TelegramOutbox().send, threads=1)
    _follow_up(outcome)
    if outcome.refused:
        raise WorkFailed(f"digest {digest_id} refused by Telegram (digests.error has the reason)")
    return {"digest_id": digest_id, "sent": outcome.sent.get(digest_id, 0), "retry": digest_id in outcome.retry}


@app.task(name="hnpal.digests.send_batch", acks_late=True, reject_on_worker_lost=True, throws=(WorkFailed,))
def send_batch(digest_ids: list[int]) -> dict:
    """Send many users' digests at once (paid broadcasts); each digest succeeds or fails on its own (the
    task fails when Telegram refused any of them for good, after every other one was sent)."""
    from hnpal.telegram.outbox import TelegramOutbox

    outcome = sender.send_digests(digest_ids=digest_ids, send=TelegramOutbox().send, threads=SEND_THREADS)
    _follow_up(outcome)
    if outcome.refused:
        raise WorkFailed(
            f"{len(outcome.refused)} of {len(digest_ids)} digests refused by Telegram: {outcome.refused}"[:500]
        )
    return {"sent": sum(outcome.sent.values()), "retry": len(outcome.retry), "waiting": len(outcome.waiting)}


def _style_of(session, digest_id: int) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    from hnpal.deliveries.models import Digest
    from hnpal.users.models import User

    digest = session.get(Digest, digest_id)
    user = session.get(User, digest.user_id)
    return service.preferences(user.digest_preferences).summary_style, list(user.interests)


# A send task can be lost without any worker failing for good: a Redis restart, or a worker killed
# between taking the message off the queue and recording it as unacknowledged.
STALE_DIGEST = min(timedelta(minutes=10), timedelta(seconds=celeryconfig.VISIBILITY_TIMEOUT))


@app.task(name="hnpal.digests.sweep")
def sweep() -> int:
    """Send on digests whose task was lost (pending or half-sent for over ten minutes, or the visibility
    timeout when that is shorter)."""
    with session_scope() as session:
        ids = service.unfinished_digests(session=session, older_than=STALE_DIGEST)
    for digest_id in ids:
        send.delay(digest_id)
    return len(ids)
