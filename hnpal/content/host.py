"""The process's content-store handles.

Only the single worker of the ``content`` queue calls :func:`writer`; every other process calls
:func:`reader`. Handles are opened lazily, once per process, and closed at worker shutdown.
"""

from __future__ import annotations

import atexit
import threading

from config.settings import get_settings
from hnpal.content.store import ContentStore

_lock = threading.Lock()
_handles: dict[str, ContentStore] = {}


def _open(mode: str) -> ContentStore:
    with _lock:
        handle = _handles.get(mode)
        if handle is None:
            settings = get_settings()
            if mode == "writer":
                handle = ContentStore.open_writer(settings.content_dir, block_cache_mb=settings.content_block_cache_mb)
            else:
                handle = ContentStore.open_reader(settings.content_dir, block_cache_mb=settings.content_block_cache_mb)
            _handles[mode] = handle
        return handle


def writer() -> ContentStore:
    """The read-write handle (content-queue worker only; a second writer fails with ContentStoreLocked)."""
    return _open("writer")


def reader() -> ContentStore:
    """A read-only (secondary) handle that catches up with the writer on demand."""
    return _open("reader")


def close_all() -> None:
    with _lock:
        for handle in _handles.values():
            handle.close()
        _handles.clear()


atexit.register(close_all)
