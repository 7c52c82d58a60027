"""RocksDB content store: page HTML, extracted text, markdown and comment threads per HN item.

One RocksDB database with one column family per kind (:data:`KINDS`). The key is the HN id as
a decimal ASCII string; values are raw bytes (``str`` values are stored as UTF-8).

Exactly one process writes the store (the content-queue worker). It holds an exclusive
``flock`` on ``<path>/WRITER.lock`` for as long as the store is open; a second writer fails
at once with :class:`ContentStoreLocked`, naming the holder. Every other process opens the
store as a reader: a RocksDB *secondary* instance with a private scratch directory that
catches up with the writer on demand (on a missing key, and at most once per
``catch_up_interval`` seconds otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import rocksdict

from hnpal.errors import HNPalError

__all__ = [
    "KINDS",
    "ContentStore",
    "ContentStoreError",
    "ContentStoreLocked",
    "ContentStoreMissing",
    "build_options",
]

logger = logging.getLogger(__name__)

# hn_text: the submitter's own text of a post that also links an article (Show HN, Launch HN...);
# a post without a URL keeps its HN text as its text and markdown.
KINDS: tuple[str, ...] = ("html", "text", "markdown", "comments", "hn_text")
LOCK_FILE = "WRITER.lock"
Mode = Literal["reader", "writer"]
Value = str | bytes | bytearray | memoryview


class ContentStoreError(HNPalError):
    """The content store cannot be opened or used."""


class ContentStoreLocked(ContentStoreError):
    """Another process already has the content store open for writing."""


class ContentStoreMissing(ContentStoreError):
    """The content store does not exist yet."""


def build_options(block_cache_mb: int = 256) -> rocksdict.Options:
    """RocksDB options used for the database and every column family.

    zstd level 3, 10-bit bloom filters, one shared LRU block cache of ``block_cache_mb`` MB,
    64 MB write buffers (at most 3), 2 background jobs.
    """
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_compression_type(rocksdict.DBCompressionType.zstd())
    opts.set_compression_options(-14, 3, 0, 0)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(rocksdict.Cache(block_cache_mb * 1024 * 1024))
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_size(64 * 1024 * 1024)
    opts.set_max_write_buffer_number(3)
    opts.set_max_background_jobs(2)
    opts.set_keep_log_file_num(5)
    return opts


def _key(hn_id: object) -> bytes:
    """Encode an HN id as its decimal ASCII key; ValueError unless it is a positive int."""
    if type(hn_id) is int and hn_id > 0:
        return b"%d" % hn_id
    if isinstance(hn_id, bool) or not isinstance(hn_id, int) or hn_id <= 0:
        raise ValueError(f"hn_id must be a positive int, got {hn_id!r}")
    return b"%d" % int(hn_id)


def _encode(kind: str, value: Value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{kind} must be str or bytes, got {type(value).__name__}")


def _bad_kind(kind: object) -> ValueError:
    return ValueError(f"unknown content kind {kind!r}; expected one of {', '.join(KINDS)}")


def _describe_holder(raw: bytes) -> str:
    """Human-readable description of the writer recorded in WRITER.lock."""
    try:
        info = json.loads(raw.decode("utf-8").strip() or "null")
    except (UnicodeDecodeError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "another process (its details are not recorded in the lock file yet)"
    return (
        f"pid {info.get('pid', '?')} on host {info.get('hostname', '?')} "
        f"({info.get('argv', '?')}) since {info.get('started_at', '?')}"
    )


def _is_rocksdb_lock_error(message: str) -> bool:
    return "lock" in message.lower() and (
        "Resource temporarily unavailable" in message or "lock hold by current process" in message
    )


class ContentStore:
    """HTML, text, markdown and comments per HN id in one RocksDB database.

    ``mode="writer"`` opens the primary read-write (one process only, enforced with a lock
    file); ``mode="reader"`` opens a secondary instance that follows the writer. Use
    :meth:`open_writer` / :meth:`open_reader`, and :meth:`close` or a ``with`` block.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: Mode = "reader",
        block_cache_mb: int = 256,
        catch_up_interval: float = 1.0,
    ) -> None:
        if mode not in ("reader", "writer"):
            raise ValueError(f"mode must be 'reader' or 'writer', got {mode!r}")
        self.path = Path(path)
        self.mode: Mode = mode
        self.catch_up_interval = float(catch_up_interval)
        self._reader = mode == "reader"
        self._next_catch_up = 0.0
        self._lock_fd: int | None = None
        self._secondary_dir: str | None = None
        self._cleanup: weakref.finalize | None = None
        self._db: rocksdict.Rdict | None = None
        self._cfs: dict[str, rocksdict.Rdict] = {}
        self._handles: dict[str, Any] = {}
        options = build_options(block_cache_mb)
        if self._reader:
            self._open_reader(options)
        else:
            self._open_writer(options)

    @classmethod
    def open_writer(cls, path: str | os.PathLike[str], **kwargs: Any) -> ContentStore:
        """Open the store read-write (creating it if needed); fails if another writer holds it."""
        return cls(path, mode="writer", **kwargs)

    @classmethod
    def open_reader(cls, path: str | os.PathLike[str], **kwargs: Any) -> ContentStore:
        """Open the store as a secondary (read-only) instance that follows the writer."""
        return cls(path, mode="reader", **kwargs)

    # -- opening / closing -------------------------------------------------------------------

    def _open_writer(self, options: rocksdict.Options) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILE
        # Never truncate before holding the flock: the current holder's record must survive.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise ContentStoreError(f"cannot lock content store {self.path}: {exc}") from exc
            try:
                holder = _describe_holder(os.pread(fd, 4096, 0))
            finally:
                os.close(fd)
            raise ContentStoreLocked(self._locked_message(holder)) from None
        try:
            record = {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "argv": " ".join(sys.argv)[:200],
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
            self._lock_fd = fd
            self._open_db(options, access_type=None)
        except BaseException:
            self._release_lock(fd)
            self._lock_fd = None
            raise

    def _open_reader(self, options: rocksdict.Options) -> None:
        if not (self.path / "CURRENT").is_file():
            raise ContentStoreMissing(
                f"content store {self.path} does not exist; the content-queue worker creates it "
                "on first start (or run `hnpal content init`)"
            )
        self._secondary_dir = tempfile.mkdtemp(prefix="hnpal-content-secondary-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._secondary_dir, True)
        try:
            self._open_db(options, access_type=rocksdict.AccessType.secondary(self._secondary_dir))
        except BaseException:
            self._cleanup()
            raise
        self._next_catch_up = time.monotonic() + self.catch_up_interval

    def _open_db(self, options: rocksdict.Options, access_type: Any) -> None:
        kinds = KINDS
        if access_type is not None:
            # A reader opens the families the writer has created: a store written by an older version
            # lacks the newer ones until its writer starts, and reads of those find nothing meanwhile.
            try:
                existing = set(rocksdict.Rdict.list_cf(str(self.path), options))
            except Exception:  # noqa: BLE001 - RocksDB's errors are plain Exceptions; open them all then
                existing = set(KINDS)
            kinds = tuple(kind for kind in KINDS if kind in existing)
        column_families = {kind: options for kind in kinds}
        db = None
        try:
            if access_type is None:
                db = rocksdict.Rdict(str(self.path), options, column_families=column_families)
            else:
                db = rocksdict.Rdict(str(self.path), options, column_families=column_families, access_type=access_type)
            self._cfs = {kind: db.get_column_family(kind) for kind in kinds}
            self._handles = {kind: db.get_column_family_handle(kind) for kind in kinds}
        except Exception as exc:
            self._cfs, self._handles = {}, {}
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
                db = None
            message = str(exc)
            if _is_rocksdb_lock_error(message):
                raise ContentStoreLocked(
                    self._locked_message("another process (RocksDB's own LOCK file is held)")
                ) from exc
            if "Corruption" in message:
                raise ContentStoreError(f"content store {self.path} is corrupt: {message}") from exc
            raise ContentStoreError(f"cannot open content store {self.path}: {message}") from exc
        self._db = db

    def _locked_message(self, holder: str) -> str:
        return (
            f"content store {self.path} is already open for writing by {holder}; only the "
            "content-queue worker writes it, other processes must open it as readers"
        )

    @staticmethod
    def _release_lock(fd: int) -> None:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the database, release the writer lock, remove a reader's scratch dir. Idempotent."""
        db, self._db = self._db, None
        cfs, self._cfs = self._cfs, {}
        self._handles = {}
        errors: list[Exception] = []
        # Column-family objects keep RocksDB alive: close and drop them before the DB itself,
        # so that RocksDB is really shut down before the writer lock is released.
        for rdict in (*cfs.values(), db):
            if rdict is None:
                continue
            try:
                rdict.close()
            except Exception as exc:  # noqa: BLE001 - every handle is closed; the errors are raised after
                errors.append(exc)
        del cfs, db, rdict
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            self._release_lock(fd)
        if self._cleanup is not None:
            self._cleanup()
        if errors:
            raise ContentStoreError(f"content store {self.path}: closing failed: {errors[0]}") from errors[0]

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._db is not None else "closed"
        return f"<ContentStore {self.path} mode={self.mode} {state}>"

    @property
    def closed(self) -> bool:
        return self._db is None

    # -- reads -------------------------------------------------------------------------------

    def _missing_cf(self, kind: object) -> ContentStoreError | ValueError:
        if kind not in KINDS:
            return _bad_kind(kind)
        return ContentStoreError(f"content store {self.path} is closed")

    def get(self, hn_id: int, kind: str) -> bytes | None:
        """Stored bytes of ``kind`` for ``hn_id``, or None if absent.

        Raises ValueError for a bad ``hn_id`` or ``kind``. A RocksDB error while reading (e.g. a
        corrupt block) is logged at ERROR with the store path and the id, and returns None, so
        callers treat it like missing content.
        """
        cf = self._cfs.get(kind)
        if cf is None:
            if kind in KINDS and self._reader and self._db is not None:
                return None  # a family the writer has not created yet
            raise self._missing_cf(kind)
        key = b"%d" % hn_id if type(hn_id) is int and hn_id > 0 else _key(hn_id)
        try:
            if not self._reader:
                return cf.get(key)
            now = time.monotonic()
            if now >= self._next_catch_up:
                self._catch_up(now)
                return cf.get(key)
            value = cf.get(key)
            if value is None:
                self._catch_up(now)
                value = cf.get(key)
            return value
        except Exception as exc:  # noqa: BLE001 - a failed read is a miss (logged), never a failed task
            logger.error("content store %s: reading %s of hn_id %s failed: %s", self.path, kind, hn_id, exc)
            return None

    def _catch_up(self, now: float) -> None:
        self._next_catch_up = now + self.catch_up_interval
        assert self._db is not None  # a reader catches up only while open
        self._db.try_catch_up_with_primary()

    def get_text(self, hn_id: int, kind: str) -> str | None:
        """Like :meth:`get`, decoded as UTF-8 (undecodable bytes replaced)."""
        value = self.get(hn_id, kind)
        return None if value is None else value.decode("utf-8", errors="replace")

    def has(self, hn_id: int, kind: str) -> bool:
        """True if ``kind`` is stored for ``hn_id``."""
        return self.get(hn_id, kind) is not None

    def refresh(self) -> None:
        """Make a reader see everything the writer has written so far (no-op for the writer)."""
        self._require_open()
        if not self._reader:
            return
        try:
            self._catch_up(time.monotonic())
        except Exception as exc:
            raise ContentStoreError(f"content store {self.path}: catching up failed: {exc}") from exc

    # -- writes ------------------------------------------------------------------------------

    def _require_open(self) -> rocksdict.Rdict:
        if self._db is None:
            raise ContentStoreError(f"content store {self.path} is closed")
        return self._db

    def _require_writer(self, action: str) -> rocksdict.Rdict:
        db = self._require_open()
        if self._reader:
            raise ContentStoreError(
                f"content store {self.path} is opened read-only (reader); cannot {action}: "
                "only the content-queue worker writes it"
            )
        return db

    def put(
        self,
        hn_id: int,
        *,
        html: Value | None = None,
        text: Value | None = None,
        markdown: Value | None = None,
        comments: Value | None = None,
        hn_text: Value | None = None,
    ) -> list[str]:
        """Store the given kinds for ``hn_id`` atomically (one write batch); returns the kinds written.

        ``comments`` is a JSON document (str or bytes). At least one kind must be given.
        """
        db = self._require_writer("put")
        key = _key(hn_id)
        values = (html, text, markdown, comments, hn_text)
        written: list[str] = []
        batch = rocksdict.WriteBatch(raw_mode=True)
        handles = self._handles
        for kind, value in zip(KINDS, values, strict=True):
            if value is not None:
                batch.put(key, _encode(kind, value), handles[kind])
                written.append(kind)
        if not written:
            raise ValueError("put() needs at least one of html, text, markdown, comments, hn_text")
        try:
            db.write(batch)
        except Exception as exc:
            raise ContentStoreError(f"content store {self.path}: writing hn_id {hn_id} failed: {exc}") from exc
        return written

    def delete(self, hn_id: int) -> None:
        """Delete every kind stored for ``hn_id`` (one write batch)."""
        db = self._require_writer("delete")
        key = _key(hn_id)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for kind in KINDS:
            batch.delete(key, self._handles[kind])
        try:
            db.write(batch)
        except Exception as exc:
            raise ContentStoreError(f"content store {self.path}: deleting hn_id {hn_id} failed: {exc}") from exc

    def flush(self) -> None:
        """Flush the memtables of all column families to SST files (writer only)."""
        self._require_writer("flush")
        for cf in self._cfs.values():
            cf.flush(True)

    def compact(self) -> None:
        """Compact every column family fully (writer only)."""
        self._require_writer("compact")
        for cf in self._cfs.values():
            cf.compact_range(None, None)

    def checkpoint(self, dest_dir: str | os.PathLike[str]) -> Path:
        """Write a consistent copy of the store to ``dest_dir`` (must not exist); returns its path.

        Writer only: a checkpoint from a secondary instance would miss the writer's unflushed data.
        SST files are hard-linked when ``dest_dir`` is on the same filesystem.
        """
        if self._reader:
            self._require_open()
            raise ContentStoreError(
                f"content store {self.path} is opened as a reader; checkpoints (backups) are taken by "
                "the writer (the content-queue worker), since a reader's view misses the writer's "
                "unflushed data"
            )
        db = self._require_writer("checkpoint")
        dest = Path(dest_dir)
        if dest.exists():
            raise ContentStoreError(f"checkpoint destination {dest} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            rocksdict.Checkpoint(db).create_checkpoint(str(dest))
        except Exception as exc:
            raise ContentStoreError(f"content store {self.path}: checkpoint to {dest} failed: {exc}") from exc
        return dest

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Path, mode, per-kind estimated key count and live SST bytes, and total bytes on disk."""
        self._require_open()
        if self._reader:
            self.refresh()
        kinds: dict[str, dict[str, int]] = {}
        for kind, cf in self._cfs.items():
            kinds[kind] = {
                "estimated_keys": int(cf.property_int_value("rocksdb.estimate-num-keys") or 0),
                "sst_bytes": int(cf.property_int_value("rocksdb.total-sst-files-size") or 0),
            }
        return {
            "path": str(self.path),
            "mode": self.mode,
            "kinds": kinds,
            "disk_bytes": _dir_bytes(self.path, exclude=(LOCK_FILE,)),
        }


def _dir_bytes(path: Path, exclude: Iterable[str] = ()) -> int:
    """Total size of the regular files under ``path`` (not following symlinks)."""
    skip = set(exclude)
    total = 0
    top = os.fspath(path)
    for root, _dirs, files in os.walk(top):
        for name in files:
            if root == top and name in skip:
                continue
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue  # removed by a concurrent compaction
    return total
