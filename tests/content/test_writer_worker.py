"""The content queue's worker is the single RocksDB writer: a real worker process, real store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hnpal.content import ContentStore


def hnpal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hnpal.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_content_worker_is_the_writer_and_backs_up_while_running(tmp_path: Path, spawn_worker) -> None:
    store_path = tmp_path / "content.rocksdb"
    env = {"HNPAL_CONTENT_PATH": str(store_path)}
    worker = spawn_worker("content", env=env)
    worker.wait_ready()
    assert (store_path / "CURRENT").exists(), "the content worker creates the store on first start"
    _wait_for_task_process_lock(store_path, worker.proc.pid)

    # A second writer fails at once, naming the path and the worker's task process.
    second = hnpal("content", "init", env=env)
    assert second.returncode == 1
    assert str(store_path) in second.stderr
    assert "already open for writing by pid" in second.stderr
    holder_pid = int(second.stderr.split("by pid ")[1].split()[0])
    # the prefork task process (a child of the worker) holds the lock
    assert any(holder_pid == c for c in _children(worker.proc.pid)), (holder_pid, _children(worker.proc.pid))

    # The backup goes through the running writer, and the worker is unharmed by the failed open.
    dest = tmp_path / "backup"
    backup = hnpal("content", "backup", str(dest), env=env)
    assert backup.returncode == 0, backup.stderr
    assert "by the content worker" in backup.stdout
    with ContentStore.open_reader(dest) as copy:
        assert copy.stats()["path"] == str(dest)

    stats = hnpal("content", "stats", env=env)
    assert stats.returncode == 0, stats.stderr
    assert '"mode": "reader"' in stats.stdout


def test_content_worker_refuses_several_processes(tmp_path: Path, spawn_worker) -> None:
    worker = spawn_worker("content", env={"HNPAL_CONTENT_PATH": str(tmp_path / "s")}, concurrency=2)
    assert worker.proc.wait(timeout=60) != 0
    assert "--concurrency 1" in worker.log()


def test_backup_without_a_running_writer(tmp_path: Path) -> None:
    store_path = tmp_path / "content.rocksdb"
    with ContentStore.open_writer(store_path) as store:
        store.put(7, html="<p>x</p>", text="x", markdown="x")
    env = {"HNPAL_CONTENT_PATH": str(store_path)}
    backup = hnpal("content", "backup", str(tmp_path / "b"), env=env)
    assert backup.returncode == 0, backup.stderr
    with ContentStore.open_reader(tmp_path / "b") as copy:
        assert copy.get_text(7, "text") == "x"
    got = hnpal("content", "get", "7", "--kind", "markdown", env=env)
    assert got.returncode == 0 and got.stdout == "x\n"
    missing = hnpal("content", "get", "8", env=env)
    assert missing.returncode == 1 and "no markdown stored for HN item 8" in missing.stderr


def _wait_for_task_process_lock(store_path: Path, worker_pid: int, timeout: float = 30) -> None:
    """The worker reports ready before its forked task process has opened the store: wait for that."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            holder = json.loads((store_path / "WRITER.lock").read_text() or "{}").get("pid")
        except (OSError, ValueError):
            holder = None
        if holder in _children(worker_pid):
            return
        time.sleep(0.1)
    raise TimeoutError("the content worker's task process never opened the store")


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def test_content_worker_writes_and_stops_cleanly(tmp_path: Path, spawn_worker) -> None:
    """The task process flushes (a checkpoint backup) and closes the store on a warm shutdown. (The store
    is created by a probe process, never opened in the worker's main process: a task process forked from
    a parent that had RocksDB open would lack RocksDB's background threads.)"""
    import signal

    store_path = tmp_path / "content.rocksdb"
    env = {"HNPAL_CONTENT_PATH": str(store_path)}
    worker = spawn_worker("content", env=env)
    worker.wait_ready()
    _wait_for_task_process_lock(store_path, worker.proc.pid)
    backup = hnpal("content", "backup", str(tmp_path / "backup"), env=env)  # a flush in the task process
    assert backup.returncode == 0, backup.stderr
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 0, worker.log()[-3000:]
    assert "Warm shutdown" in worker.log()
    with ContentStore.open_reader(store_path) as store:  # closed cleanly, readable
        assert store.stats()["path"] == str(store_path)
