"""Tasks of the ``content`` queue: its single worker is the only process that writes RocksDB."""

from __future__ import annotations

from celery.signals import worker_process_shutdown

from hnpal.celery import app
from hnpal.content import host


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
