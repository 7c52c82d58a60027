"""Tasks of the ``content`` queue: its single worker is the only process that writes RocksDB."""

from __future__ import annotations

from celery.signals import worker_process_shutdown

from hnpal import queues
from hnpal.celery import app
from hnpal.content import host, service
from hnpal.db.retry import DB_RETRY
from hnpal.errors import Retry, WorkFailed


@worker_process_shutdown.connect
def _close_store(**_: object) -> None:
    host.close_all()


@app.task(name="hnpal.content.backup", queue=queues.CONTENT, ignore_result=False)
def backup(dest_dir: str) -> str:
    """Take a consistent checkpoint of the live store into ``dest_dir`` (which must not exist yet).

    Runs in the writer because a checkpoint from a reader would miss the writer's unflushed data.
    """
    return str(host.writer().checkpoint(dest_dir))


@app.task(name="hnpal.content.stats", queue=queues.CONTENT, ignore_result=False)
def stats() -> dict:
    """The writer's view of the store (key estimates and sizes per column family)."""
    return host.writer().stats()


# Idempotent (the same payload writes the same bytes and flags), so a killed writer's message is
# redelivered and its content rewritten. A payload that keeps failing is quarantined (WorkFailed).
@app.task(name="hnpal.content.store", queue=queues.CONTENT, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=12, throws=(WorkFailed,), **DB_RETRY)  # fmt: skip
def store_content(self, post_id: int, payload: str) -> int | None:
    """Write a post's content (one RocksDB batch), then its flags in PostgreSQL. Returns the post id."""
    store = host.writer()  # a store that cannot be opened fails the task: that is no fault of the payload
    try:
        return service.store_or_quarantine(store=store, post_id=post_id, payload=payload, retries=self.request.retries)
    except Retry as again:
        raise self.retry(exc=again, countdown=again.countdown) from None


@app.task(name="hnpal.content.copy", queue=queues.CONTENT, acks_late=True, reject_on_worker_lost=True,
          max_retries=12, **DB_RETRY)  # fmt: skip
def copy_content(post_id: int, source_post_id: int) -> int | None:
    """A repost: copy the earlier post's content under this post's key. Returns the post id."""
    return service.copy_stored(store=host.writer(), post_id=post_id, source_post_id=source_post_id)
