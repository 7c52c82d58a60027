"""One structured log line per task outcome, with no secret in any line of a real worker's log.

A real worker (``celery -A hnpal worker``, on a queue of this test's own) runs ``hnpal.ops.sleep`` twice:
once with a bot token, an API key, a database URL with its password and the configured OpenAI key (a
value no pattern would recognise) as its arguments, so that the task fails and the exception text
repeats them; once with them as the token it returns. The whole log of the worker (Celery's own
lines, tracebacks and ours) must show none of them, in the text and the JSON log formats.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from hnpal.ops.tasklog import outcome_line

BOT_TOKEN = "7312345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
API_KEY = "sk-proj-Zx81kLmN0pQrStUvWxYz1234"
DB_PASSWORD = "Pa55-w0rd-xyz"
DB_URL = f"postgresql://hnpal:{DB_PASSWORD}@db.internal:5432/hnpal"
CONFIGURED_KEY = "opaque-key-value-42"  # shaped like nothing: masked because it is the configured key
SECRETS = ("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "Zx81kLmN0pQrStUvWxYz1234", DB_PASSWORD, CONFIGURED_KEY)
LOADED = f"{BOT_TOKEN} {API_KEY} {DB_URL} {CONFIGURED_KEY}"


def _wait_for(worker, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = worker.log()
        if re.search(pattern, log):
            return log
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{log[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{worker.log()[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_task_outcomes_are_logged_once_each_with_secrets_masked(spawn_worker, log_format: str) -> None:
    from tasks.ops import sleep

    queue = f"ops-tasklog-{uuid.uuid4().hex[:8]}"
    worker = spawn_worker(
        queue, env={"HNPAL_OPENAI_API_KEY": CONFIGURED_KEY, "HNPAL_LOG_FORMAT": log_format}, pool="solo"
    )
    worker.wait_ready()
    failing = sleep.apply_async(args=[LOADED, "never"], queue=queue)  # float(LOADED) raises ValueError
    passing = sleep.apply_async(args=[0, LOADED], queue=queue)
    _wait_for(worker, rf"id={failing.id} state=FAILURE")
    log = _wait_for(worker, rf"id={passing.id} state=SUCCESS")

    leaked = [s for s in SECRETS if s in log]
    assert not leaked, f"secrets in the worker log: {leaked}\n{log[-4000:]}"
    lines = [line for line in log.splitlines() if "task=hnpal.ops.sleep" in line]
    assert len([line for line in lines if failing.id in line]) == 1, lines
    assert len([line for line in lines if passing.id in line]) == 1, lines
    fail_line = next(line for line in lines if failing.id in line)
    ok_line = next(line for line in lines if passing.id in line)
    if log_format == "json":
        fail_line, ok_line = json.loads(fail_line)["msg"], json.loads(ok_line)["msg"]
    assert "state=FAILURE" in fail_line and "error=" in fail_line and "ValueError" in fail_line
    assert "duration_ms=" in fail_line and "args=[" in fail_line
    assert "state=SUCCESS" in ok_line and "result=" in ok_line
    for line in (fail_line, ok_line):  # the shapes that were there are shown masked
        assert "***:***" in line and "sk-***" in line and "hnpal:***@db.internal" in line and "***" in line
    print(f"{log_format}: {len(log.splitlines())} worker log lines, no secret; outcome lines:\n{fail_line}\n{ok_line}")


def test_outcome_line_shortens_and_masks() -> None:
    line = outcome_line(
        name="hnpal.x.y", task_id="abc", state="RETRY", duration=0.0123, args=[1, "x" * 1000],
        kwargs={"url": DB_URL}, error=f"retry: ConnectionError: {DB_URL}",
    )  # fmt: skip
    assert line.startswith("task=hnpal.x.y id=abc state=RETRY duration_ms=12 args=[1, ")
    assert DB_PASSWORD not in line and line.count("***") == 2
    assert len(line) < 1000 and "…" in line
