"""Child processes of HN Pal (workers, beat): start them, wait for them, stop them warmly.

Used by ``hnpal demo``; every child gets its own log file and is stopped with SIGTERM (Celery's warm
shutdown: running tasks finish, nothing is lost), then SIGKILL only if it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    name: str
    cmd: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    _log: object = field(default=None, repr=False)

    def start(self, env: dict[str, str], cwd: Path | None = None) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
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

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
        return self.proc.returncode


def celery_worker(name: str, queues: str, *, concurrency: int, log_dir: Path, pool: str = "prefork") -> Child:
    cmd = [
        sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", queues, "-c", str(concurrency),
        "-P", pool, "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", "INFO",
    ]  # fmt: skip
    return Child(name, cmd, log_dir / f"{name}.log")


def celery_beat(log_dir: Path, schedule: Path) -> Child:
    cmd = [sys.executable, "-m", "celery", "-A", "hnpal", "beat", "-s", str(schedule), "-l", "INFO"]
    return Child("beat", cmd, log_dir / "beat.log")


def wait_ready(children: list[Child], timeout: float = 90) -> None:
    """Wait until every worker logs 'ready' and beat logs that it started."""
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending:
        for child in list(pending):
            if not child.alive():
                raise RuntimeError(f"{child.name} exited early; see {child.log_path}:\n{child.log_text()[-2000:]}")
            text = child.log_text()
            if " ready." in text or "beat: Starting..." in text:
                pending.remove(child)
        if time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise TimeoutError(f"{names} not ready after {timeout:.0f}s")
        time.sleep(0.2)
