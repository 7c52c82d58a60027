"""ContentStore against a real RocksDB in tmp_path; writers in other processes are real processes."""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hnpal.content import KINDS, ContentStore, ContentStoreError, ContentStoreLocked, ContentStoreMissing

# A writer process driven over stdin/stdout, one command per line:
#   put <id> <kind> <text> -> "ok"        get <id> <kind> -> repr(bytes|None)
#   exit                   -> closes the store and exits 0
WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from hnpal.content import ContentStore

    store = ContentStore.open_writer(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split(" ", 3)
        cmd = cmd.strip()
        if cmd == "put":
            hn_id, kind, value = args
            store.put(int(hn_id), **{kind: value.rstrip("\\n")})
            print("ok", flush=True)
        elif cmd == "get":
            print(repr(store.get(int(args[0]), args[1].strip())), flush=True)
        elif cmd == "exit":
            break
    store.close()
    print("closed", flush=True)
    """
)


class WriterProcess:
    """A separate Python process holding the store open for writing."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._readline()
        assert line == "ready", f"writer did not start: {line!r} {self.proc.stderr.read()}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._readline()

    def put(self, hn_id: int, kind: str, value: str) -> None:
        assert self.command(f"put {hn_id} {kind} {value}") == "ok"

    def get(self, hn_id: int, kind: str) -> str:
        return self.command(f"get {hn_id} {kind}")

    def exit(self) -> None:
        assert self.command("exit") == "closed"
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "content.rocksdb"


@pytest.fixture
def writer(store_path: Path):
    with ContentStore.open_writer(store_path) as store:
        yield store


@pytest.fixture
def writer_process(store_path: Path):
    procs: list[WriterProcess] = []

    def start() -> WriterProcess:
        proc = WriterProcess(store_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.cleanup()


def test_put_all_kinds_in_one_batch_and_get_back(writer: ContentStore) -> None:
    comments = json.dumps({"id": 7, "kids": [{"id": 8, "text": "ünïcode"}]})
    written = writer.put(7, html="<p>hé</p>", text="hé", markdown="# hé\n", comments=comments, hn_text="mine")
    assert written == list(KINDS)
    assert writer.get_text(7, "hn_text") == "mine"
    assert writer.get(7, "html") == "<p>hé</p>".encode()
    assert writer.get_text(7, "text") == "hé"
    assert writer.get_text(7, "markdown") == "# hé\n"
    assert json.loads(writer.get_text(7, "comments")) == json.loads(comments)
    assert all(writer.has(7, kind) for kind in KINDS)


def test_put_only_given_kinds_and_missing_keys_are_none(writer: ContentStore) -> None:
    assert writer.put(3, text=b"\xff raw bytes") == ["text"]
    assert writer.get(3, "text") == b"\xff raw bytes"
    assert writer.get_text(3, "text") == "\ufffd raw bytes"
    assert writer.get(3, "html") is None
    assert writer.get_text(3, "html") is None
    assert not writer.has(3, "markdown")
    assert writer.get(4, "text") is None


def test_put_overwrites_and_delete_removes_all_kinds(writer: ContentStore) -> None:
    writer.put(5, html="old", text="old")
    writer.put(5, html="new")
    assert writer.get(5, "html") == b"new"
    assert writer.get(5, "text") == b"old"
    writer.delete(5)
    assert [writer.get(5, kind) for kind in KINDS] == [None] * len(KINDS)


@pytest.mark.parametrize("hn_id", [0, -1, "12", 1.0, True, None])
def test_bad_hn_id_is_rejected(writer: ContentStore, hn_id: object) -> None:
    with pytest.raises(ValueError, match="hn_id"):
        writer.get(hn_id, "html")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hn_id"):
        writer.put(hn_id, html="x")  # type: ignore[arg-type]


def test_bad_kind_and_bad_values_are_rejected(writer: ContentStore) -> None:
    with pytest.raises(ValueError, match="unknown content kind 'pdf'"):
        writer.get(1, "pdf")
    with pytest.raises(ValueError, match="at least one"):
        writer.put(1)
    with pytest.raises(TypeError, match="comments must be str or bytes"):
        writer.put(1, comments={"id": 1})  # type: ignore[arg-type]
    assert writer.get(1, "comments") is None


def test_reader_cannot_write(writer: ContentStore, store_path: Path) -> None:
    writer.put(1, text="x")
    with ContentStore.open_reader(store_path) as reader:
        assert reader.get(1, "text") == b"x"
        for action in (lambda: reader.put(1, text="y"), lambda: reader.delete(1), reader.flush):
            with pytest.raises(ContentStoreError, match="read-only"):
                action()
    assert writer.get(1, "text") == b"x"


def test_closed_store_refuses_use_and_close_is_idempotent(store_path: Path) -> None:
    store = ContentStore.open_writer(store_path)
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(ContentStoreError, match="closed"):
        store.get(1, "html")
    with pytest.raises(ContentStoreError, match="closed"):
        store.put(1, html="x")


def test_reader_sees_writes_of_a_writer_process(store_path: Path, writer_process) -> None:
    proc = writer_process()
    proc.put(1, "text", "first")
    with ContentStore.open_reader(store_path, catch_up_interval=3600) as reader:
        assert reader.get(1, "text") == b"first"
        # A key that is missing makes the reader catch up and retry once.
        proc.put(2, "html", "<b>later</b>")
        assert reader.get(2, "html") == b"<b>later</b>"
        # An overwrite of a present key shows up after refresh() (the interval is an hour).
        proc.put(1, "text", "second")
        assert reader.get(1, "text") == b"first"
        reader.refresh()
        assert reader.get(1, "text") == b"second"
    with ContentStore.open_reader(store_path, catch_up_interval=0.0) as reader:
        proc.put(1, "text", "third")
        assert reader.get(1, "text") == b"third"
        assert reader.get(99, "text") is None
    proc.exit()


def test_second_writer_process_fails_at_once_and_first_is_unharmed(store_path: Path, writer_process) -> None:
    proc = writer_process()
    proc.put(1, "text", "before")
    started = time.monotonic()
    with pytest.raises(ContentStoreLocked) as excinfo:
        ContentStore.open_writer(store_path)
    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert str(store_path) in message
    assert f"pid {proc.pid} " in message
    assert "open it as readers" in message
    # Record of the holder is intact, and the holder keeps working.
    record = json.loads((store_path / "WRITER.lock").read_text())
    assert record["pid"] == proc.pid
    assert {"hostname", "argv", "started_at"} <= record.keys()
    proc.put(2, "text", "after")
    assert proc.get(1, "text") == repr(b"before")
    assert proc.get(2, "text") == repr(b"after")
    proc.exit()
    with ContentStore.open_reader(store_path) as reader:
        assert reader.get(2, "text") == b"after"


def test_second_writer_in_same_process_is_locked_out(writer: ContentStore, store_path: Path) -> None:
    writer.put(1, html="x")
    with pytest.raises(ContentStoreLocked, match=f"by pid {os.getpid()} "):
        ContentStore.open_writer(store_path)
    writer.put(2, html="y")
    assert writer.get(1, "html") == b"x"
    assert writer.get(2, "html") == b"y"


def test_rocksdb_lock_held_without_lock_file_is_reported_as_locked(store_path: Path) -> None:
    with ContentStore.open_writer(store_path) as store:
        store.put(1, text="x")
    # A process that opens the database directly (bypassing WRITER.lock) holds RocksDB's LOCK.
    code = (
        "import sys, rocksdict\n"
        "from hnpal.content.store import KINDS, build_options\n"
        "opts = build_options(8)\n"
        "db = rocksdict.Rdict(sys.argv[1], opts, column_families={k: opts for k in KINDS})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "db.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(ContentStoreLocked, match="RocksDB's own LOCK") as excinfo:
            ContentStore.open_writer(store_path)
        assert str(store_path) in str(excinfo.value)
        assert (store_path / "WRITER.lock").read_text() == ""  # our failed attempt left no record
    finally:
        proc.communicate("\n", timeout=30)
    with ContentStore.open_writer(store_path) as store:
        assert store.get(1, "text") == b"x"


def test_lock_is_released_on_close(store_path: Path) -> None:
    with ContentStore.open_writer(store_path) as first:
        first.put(1, text="one")
    with ContentStore.open_writer(store_path) as second:
        assert second.get(1, "text") == b"one"
        second.put(2, text="two")
    with ContentStore.open_reader(store_path) as reader:
        assert reader.get(2, "text") == b"two"


def test_lock_is_released_when_holder_is_killed(store_path: Path, writer_process) -> None:
    proc = writer_process()
    proc.put(1, "text", "survives")
    with pytest.raises(ContentStoreLocked):
        ContentStore.open_writer(store_path)
    proc.kill()
    # The dead process's record is still in WRITER.lock; it must not block the next writer.
    assert json.loads((store_path / "WRITER.lock").read_text())["pid"] == proc.pid
    with ContentStore.open_writer(store_path) as store:
        assert store.get(1, "text") == b"survives"  # recovered from the WAL
        assert json.loads((store_path / "WRITER.lock").read_text())["pid"] == os.getpid()


def test_missing_store_raises_for_reader(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here"
    with pytest.raises(ContentStoreMissing) as excinfo:
        ContentStore.open_reader(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "content-queue worker" in message and "hnpal content init" in message
    assert not path.exists()


@pytest.mark.parametrize("target", ["CURRENT", "MANIFEST-*"])
@pytest.mark.parametrize("mode", ["reader", "writer"])
def test_corrupt_store_raises_with_path(store_path: Path, target: str, mode: str) -> None:
    with ContentStore.open_writer(store_path) as store:
        store.put(1, html="x" * 1000)
        store.flush()
    (victim,) = glob.glob(str(store_path / target))
    Path(victim).write_bytes(b"\x00garbage\xff" * 64)
    with pytest.raises(ContentStoreError, match="Corruption") as excinfo:
        ContentStore(store_path, mode=mode)
    assert str(store_path) in str(excinfo.value)
    assert not isinstance(excinfo.value, ContentStoreLocked | ContentStoreMissing)
    if mode == "writer":  # the failed open released the lock
        with pytest.raises(ContentStoreError, match="Corruption"):
            ContentStore.open_writer(store_path)


def test_corrupt_block_is_logged_and_read_as_missing(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with ContentStore.open_writer(store_path) as store:
        store.put(1, html=os.urandom(20_000))
        store.flush()
    (sst,) = glob.glob(str(store_path / "*.sst"))
    data = bytearray(Path(sst).read_bytes())
    data[100:200] = bytes(100)
    Path(sst).write_bytes(bytes(data))
    with ContentStore.open_writer(store_path) as store, caplog.at_level(logging.ERROR):
        assert store.get(1, "html") is None
    assert str(store_path) in caplog.text
    assert "hn_id 1" in caplog.text
    assert "Corruption" in caplog.text


def test_checkpoint_of_open_writer_includes_unflushed_data(
    writer: ContentStore, store_path: Path, tmp_path: Path
) -> None:
    for hn_id in range(1, 51):
        writer.put(hn_id, html=f"<p>{hn_id}</p>", text=str(hn_id))
    assert writer.stats()["kinds"]["html"]["sst_bytes"] == 0  # still only in the memtable
    dest = writer.checkpoint(tmp_path / "backup")
    assert dest == tmp_path / "backup"
    writer.put(51, text="after the checkpoint")
    with ContentStore.open_reader(dest) as backup:
        assert [backup.get(i, "text") for i in range(1, 51)] == [str(i).encode() for i in range(1, 51)]
        assert backup.get(50, "html") == b"<p>50</p>"
        assert backup.get(51, "text") is None
    with pytest.raises(ContentStoreError, match="already exists"):
        writer.checkpoint(dest)


def test_reader_refuses_checkpoint(writer: ContentStore, store_path: Path, tmp_path: Path) -> None:
    writer.put(1, text="x")
    with ContentStore.open_reader(store_path) as reader:
        with pytest.raises(ContentStoreError, match="taken by the writer"):
            reader.checkpoint(tmp_path / "backup")
    assert not (tmp_path / "backup").exists()


def test_stats_after_writes(writer: ContentStore, store_path: Path) -> None:
    for hn_id in range(1, 101):
        writer.put(hn_id, html="<html>" + "x" * 2000 + "</html>", text="t" * 500, comments="[]")
    writer.flush()
    stats = writer.stats()
    assert stats["path"] == str(store_path)
    assert stats["mode"] == "writer"
    for kind in ("html", "text", "comments"):
        assert stats["kinds"][kind]["estimated_keys"] > 0
        assert stats["kinds"][kind]["sst_bytes"] > 0
    assert stats["kinds"]["markdown"]["estimated_keys"] == 0
    assert stats["disk_bytes"] >= sum(k["sst_bytes"] for k in stats["kinds"].values()) > 0
    # zstd: 100 x 2 kB of repetitive HTML compresses to much less than its raw size
    assert stats["kinds"]["html"]["sst_bytes"] < 100 * 2000 / 2
    with ContentStore.open_reader(store_path) as reader:
        reader_stats = reader.stats()
        assert reader_stats["mode"] == "reader"
        assert reader_stats["kinds"]["html"]["sst_bytes"] == stats["kinds"]["html"]["sst_bytes"]


def test_compact_keeps_data(writer: ContentStore) -> None:
    for hn_id in range(1, 21):
        writer.put(hn_id, markdown=f"# {hn_id}")
    writer.flush()
    writer.delete(3)
    writer.compact()
    assert writer.get(4, "markdown") == b"# 4"
    assert writer.get(3, "markdown") is None


def test_reader_removes_its_secondary_dir_on_close(writer: ContentStore, store_path: Path) -> None:
    writer.put(1, text="x")
    reader = ContentStore.open_reader(store_path)
    secondary = reader._secondary_dir
    assert secondary is not None and os.path.isdir(secondary)
    reader.close()
    assert not os.path.exists(secondary)


def test_bad_mode_is_rejected(store_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        ContentStore(store_path, mode="admin")  # type: ignore[arg-type]


def test_a_reader_of_a_store_without_the_newer_kinds_finds_nothing_there(tmp_path) -> None:
    """A store written before ``hn_text`` existed: readers open it before its writer adds the family."""
    import rocksdict

    from hnpal.content.store import build_options

    path = tmp_path / "old.rocksdb"
    options = build_options(8)
    old = rocksdict.Rdict(str(path), options, column_families={k: options for k in KINDS if k != "hn_text"})
    old.close()
    with ContentStore.open_reader(path) as reader:
        assert reader.get(7, "hn_text") is None and reader.get(7, "text") is None
    with ContentStore.open_writer(path) as writer:
        writer.put(7, hn_text="now")
    with ContentStore.open_reader(path) as reader:
        assert reader.get_text(7, "hn_text") == "now"
