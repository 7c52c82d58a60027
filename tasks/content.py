"""Tasks of the ``content`` queue: its single worker is the only process that writes RocksDB."""

from __future__ import annotations

from celery.signals import worker_process_shutdown

from hnpal.celery import WorkFailed, app
from hnpal.content import host
from tasks.crawl import DB_RETRY, DB_TRANSIENT  # the database down a moment: retried with backoff


@worker_process_shutdown.connect
def _close_store(**_: object) -> None:
    host.close_all()


@app.task(name="hnpal.content.backup", ignore_result=False)
def backup(dest_dir: str) -> str:
    """Take a consistent checkpoint of the live store into ``dest_dir`` (which must not exist yet).

    Runs in the writer because a checkpoint from a reader would miss the writer's unflushed data.
    """
    return str(host.writer().checkpoint(dest_dir))


@app.task(name="hnpal.content.stats", ignore_result=False)
def stats() -> dict:
    """The writer's view of the store (key estimates and sizes per column family)."""
    return host.writer().stats()


# A payload that cannot be decoded or written is tried this many more times (a write may fail for a
# moment), then quarantined: its post is marked failed and listed by `hnpal quarantine`.
STORE_RETRIES = 3


# Idempotent (the same payload writes the same bytes and flags), so a killed writer's message is
# redelivered and its content rewritten.
@app.task(name="hnpal.content.store", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=12,
          throws=(WorkFailed,), **DB_RETRY)  # fmt: skip
def store_content(self, post_id: int, payload: str) -> int | None:
    """Write a post's content (one RocksDB batch), then its flags in PostgreSQL. Returns the post id."""
    from hnpal.content.service import quarantine_payload, store_payload
    from hnpal.db.session import session_scope

    store = host.writer()  # a store that cannot be opened fails the task: that is no fault of the payload
    try:
        with session_scope() as session:
            result = store_payload(session=session, store=store, post_id=post_id, payload=payload)
    except DB_TRANSIENT:
        raise  # retried with backoff (DB_RETRY)
    except Exception as exc:
        if self.request.retries < STORE_RETRIES:
            raise self.retry(exc=exc, countdown=2**self.request.retries) from None
        with session_scope() as session:
            quarantine_payload(session=session, post_id=post_id, error=f"{type(exc).__name__}: {exc}")
        raise WorkFailed(f"content of post {post_id} not stored, quarantined: {type(exc).__name__}: {exc}") from None
    return result.post_id if result.status == "stored" else None


@app.task(name="hnpal.content.copy", acks_late=True, reject_on_worker_lost=True, max_retries=12, **DB_RETRY)
def copy_content(post_id: int, source_post_id: int) -> int | None:
    """A repost: copy the earlier post's content under this post's key. Returns the post id."""
    from hnpal.content.service import copy_content as copy
    from hnpal.db.session import session_scope

    with session_scope() as session:
        result = copy(session=session, store=host.writer(), post_id=post_id, source_post_id=source_post_id)
    return result.post_id if result.status == "stored" else None
