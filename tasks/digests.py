"""Digest tasks: the schedule, preparation and sweep (``default``); the sends (``telegram``, bulk priority).
The run itself is :mod:`hnpal.deliveries.runs`; the sending is :mod:`hnpal.deliveries.sender`."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.deliveries import runs, sender
from hnpal.errors import WorkFailed


@app.task(name="hnpal.digests.schedule", queue=queues.DEFAULT)
def schedule() -> int:
    """Create the digests that are due (each batch once per user) and fan out their preparation."""
    return runs.schedule_due()


# Idempotent: only digests still 'pending' are selected and reserved (row locks, skip locked).
@app.task(name="hnpal.digests.prepare", queue=queues.DEFAULT, acks_late=True, reject_on_worker_lost=True)
def prepare(digest_ids: list[int]) -> int:
    """Select and reserve the posts of up to 500 digests in one statement, then fan out the sends."""
    return runs.prepare_batch(digest_ids)


# Idempotent: reservation rows and stored message ids make a redelivered task resume where the digest
# stopped (at worst repeating the one message in flight). A digest Telegram refused for good is recorded
# (status 'failed' with the reason), then the task raises WorkFailed: a FAILURE in Flower, acknowledged,
# not retried.
@app.task(name="hnpal.digests.send", queue=queues.TELEGRAM, priority=queues.BULK_PRIORITY, acks_late=True,
          reject_on_worker_lost=True, throws=(WorkFailed,))  # fmt: skip
def send(digest_id: int) -> dict:
    """Send one user's digest (the messages reserved and not sent yet)."""
    outcome = sender.send_digests(digest_ids=[digest_id], threads=1)
    runs.follow_up(outcome)
    if outcome.refused:
        raise WorkFailed(f"digest {digest_id} refused by Telegram (digests.error has the reason)")
    return {"digest_id": digest_id, "sent": outcome.sent.get(digest_id, 0), "retry": digest_id in outcome.retry}


@app.task(name="hnpal.digests.send_batch", queue=queues.TELEGRAM, priority=queues.BULK_PRIORITY, acks_late=True,
          reject_on_worker_lost=True, throws=(WorkFailed,))  # fmt: skip
def send_batch(digest_ids: list[int]) -> dict:
    """Send many users' digests at once (paid broadcasts); each digest succeeds or fails on its own (the
    task fails when Telegram refused any of them for good, after every other one was sent)."""
    outcome = sender.send_digests(digest_ids=digest_ids, threads=sender.SEND_THREADS)
    runs.follow_up(outcome)
    if outcome.refused:
        raise WorkFailed(
            f"{len(outcome.refused)} of {len(digest_ids)} digests refused by Telegram: {outcome.refused}"[:500]
        )
    return {"sent": sum(outcome.sent.values()), "retry": len(outcome.retry), "waiting": len(outcome.waiting)}


@app.task(name="hnpal.digests.sweep", queue=queues.DEFAULT)
def sweep() -> int:
    """Send on digests whose task was lost (pending or half-sent for over ten minutes, or the visibility
    timeout when that is shorter)."""
    return runs.sweep()
