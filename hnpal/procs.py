"""Child processes of HN Pal (workers, beat, the bot): start them, wait for them, stop them warmly.

Used by ``hnpal demo``; every child gets its own log file and its own process group, and is stopped with
SIGTERM (Celery's warm shutdown: running tasks finish, nothing is lost), then SIGKILL only if it does not
exit in time. Whatever it left behind in its process group (a pool process orphaned by a crash) is
killed too, so a stopped child leaves nothing running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Child:
    name: str
    cmd: list[str]
    log_path: Path
    ready_marker: str = " ready."  # the log line that says the child is ready (see wait_ready)
    proc: subprocess.Popen | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    _log_start: int = field(default=0, repr=False)  # where this start's output begins in the log file

    def start(self, env: dict[str, str], cwd: Path | None = None) -> Child:
        """Start the child (again, after it exited: its output is appended to the same log)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self.proc = subprocess.Popen(
            self.cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ready(self) -> bool:
        """Whether the current start has logged its ready marker (an earlier start's does not count)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return self.ready_marker in log.read().decode(errors="replace")
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc.pid)
                self.proc.wait()
        # The leader is gone; give the rest of its group (pool processes finishing) a moment, then kill
        # what is left, and wait until it is gone.
        if not _group_gone(self.proc.pid, timeout=10):
            _kill_group(self.proc.pid)
            _group_gone(self.proc.pid, timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still runs (a zombie counts until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the group's id was reused by another user's process
        return False
    return True


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def celery_worker(name: str, queues: str, *, concurrency: int, log_dir: Path, pool: str = "prefork") -> Child:
    cmd = [
        sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", queues, "-c", str(concurrency),
        "-P", pool, "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", "INFO",
    ]  # fmt: skip
    return Child(name, cmd, log_dir / f"{name}.log")


def celery_beat(log_dir: Path, schedule: Path) -> Child:
    cmd = [sys.executable, "-m", "celery", "-A", "hnpal", "beat", "-s", str(schedule), "-l", "INFO"]
    return Child("beat", cmd, log_dir / "beat.log", ready_marker="beat: Starting...")


def telegram_bot(log_dir: Path) -> Child:
    """``hnpal bot``: polls Telegram (or the sandbox), stores each update and enqueues it."""
    cmd = [sys.executable, "-m", "hnpal.cli.main", "bot"]
    return Child("bot", cmd, log_dir / "bot.log", ready_marker=" started (")


def wait_ready(children: list[Child], timeout: float = 90) -> None:
    """Wait until every child logs its ready marker (workers 'ready', beat and the bot that they started)."""
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending:
        for child in list(pending):
            if not child.alive():
                raise RuntimeError(f"{child.name} exited early; see {child.log_path}:\n{child.log_text()[-2000:]}")
            if child.ready():
                pending.remove(child)
        if time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise TimeoutError(f"{names} not ready after {timeout:.0f}s")
        time.sleep(0.2)
