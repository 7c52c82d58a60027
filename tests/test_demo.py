"""``hnpal demo`` end to end, as ``make demo`` runs it on a fresh machine.

The demo runs in a subprocess with a data directory of its own and no database or Redis configured, so
it starts the embedded PostgreSQL and Redis there, then the sandbox HN and Telegram servers, the workers,
beat and the bot; three simulated users get their digests and press buttons. The test checks that it
exits 0, that its output has each user's digest and the database summary, and that nothing it started
(children, embedded servers: any process that names the data directory) is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

DEMO_TIMEOUT = 600


def _hnpal() -> str:
    candidate = Path(sys.executable).parent / "hnpal"
    return str(candidate if candidate.exists() else REPO / ".venv" / "bin" / "hnpal")


def _processes_naming(marker: str) -> list[str]:
    """Processes whose command line or environment contains ``marker`` (pid and command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state == "Z":  # exited; only waiting for its parent to reap it
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command[:200]}")
    return found


@pytest.mark.timeout(DEMO_TIMEOUT + 120)
def test_demo_runs_the_main_job_offline_and_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HNPAL_")}
    env.update({"HNPAL_DATA_DIR": str(data_dir), "HNPAL_DATABASE_URL": "", "HNPAL_REDIS_URL": ""})
    proc = subprocess.Popen(
        [_hnpal(), "demo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the demo stops what it started on its way out
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail(f"hnpal demo did not finish within {DEMO_TIMEOUT}s:\n{output[-6000:]}")

    tail = output[-8000:]
    assert proc.returncode == 0, tail
    assert "demo finished in" in output, tail
    for name in ("Ada", "Linus", "Grace"):
        assert f"{name}'s digest" in output, tail
        assert f"HN Pal → {name}" in output, tail
    assert "Your HN digest" in output  # Linus's brief digest: one message listing his posts
    assert "Back to the list" in output  # ... whose number button opened a post in place
    for heading in ("the database afterwards", "users", "digests", "deliveries per user", "telegram_updates"):
        assert heading in output, tail

    deadline = time.monotonic() + 15
    while (left := _processes_naming(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "still running after the demo:\n" + "\n".join(left)
