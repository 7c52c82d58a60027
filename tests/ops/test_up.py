"""``hnpal up`` as an operator runs it: real workers, beat, Flower and the metrics server as children.

One stack (module scope) runs on the test database and a data directory of its own, without a bot token
and with Flower behind basic auth; the tests read its status lines, talk to Flower and the metrics
server, kill -9 a worker and watch it come back. The last test stops the stack with SIGTERM while
``hnpal.ops.sleep`` tasks are in flight, checks that nothing is left running and every task is either
done or back in its queue, starts ``hnpal up`` again and counts each task's completions.

The back-off itself is checked on the supervisor with a child that exits at once (no stack).
"""

from __future__ import annotations

import http.server
import io
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from hnpal.ops.supervisor import Options, Supervised, Supervisor
from hnpal.procs import Child, group_alive
from tests.conftest import REDIS_PREFIX, REPO
from tests.telegram.conftest import free_port, hnpal_executable
from tests.test_demo import _processes_naming

pytestmark = pytest.mark.slow

START_TIMEOUT = 240.0  # the machine is shared: eight Python processes importing HN Pal at once
AUTH = ("ops", f"pw-{uuid.uuid4().hex[:12]}")
QUEUES = ("default", "crawl", "content", "llm", "telegram")
STATUS = re.compile(r"^status \S+ (\S+)\s+pid=(\S+)\s+state=(\S+)\s+restarts=(\d+)", re.MULTILINE)


class Up:
    """``hnpal up`` in its own session; its output goes to a file the tests read."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.out_path = data_dir.parent / f"up-{uuid.uuid4().hex[:6]}.out"
        self._out = self.out_path.open("w")
        self.proc = subprocess.Popen(
            [hnpal_executable(), "up", "--crawl-concurrency", "1", "--default-concurrency", "2", "--llm-threads",
             "2", "--telegram-threads", "2", "--status-interval", "5", "--stop-timeout", "90"],
            cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def status(self) -> dict[str, tuple[str, str, int]]:
        """The latest status of each child: (pid, state, restarts)."""
        latest: dict[str, tuple[str, str, int]] = {}
        for name, pid, state, restarts in STATUS.findall(self.output()):
            latest[name] = (pid, state, int(restarts))
        return latest

    def wait(self, condition, what: str, timeout: float = START_TIMEOUT):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"hnpal up exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}")
            time.sleep(0.5)
        raise AssertionError(f"no {what} after {timeout:.0f}s:\n{self.tail()}")

    def wait_running(self, names: tuple[str, ...]) -> dict[str, tuple[str, str, int]]:
        return self.wait(
            lambda: (s := self.status()) and all(s.get(n, ("", ""))[1] == "running" for n in names) and s,
            f"{', '.join(names)} running",
        )

    def stop(self, timeout: float = 180) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in _processes_naming(str(self.data_dir)):
                os.kill(int(pid.split(":")[0]), signal.SIGKILL)
            raise
        finally:
            self._out.close()
        return code

    def tail(self, n: int = 60) -> str:
        logs = ""
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            logs += f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return "\n".join(self.output().splitlines()[-n:]) + logs


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HNPAL_TELEGRAM_TOKEN", "FLOWER_BASIC_AUTH")}
    env.update(
        {
            "HNPAL_DATA_DIR": str(data_dir),
            "HNPAL_FLOWER_PORT": str(free_port()),
            "HNPAL_METRICS_PORT": str(free_port()),
            "HNPAL_CONSOLE_PORT": str(free_port()),
            "HNPAL_FLOWER_BASIC_AUTH": f"{AUTH[0]}:{AUTH[1]}",
            "HNPAL_HN_API_BASE_URL": "http://127.0.0.1:9/v0/",  # beat's fetches go nowhere, quickly
            **extra,
        }
    )
    return env


def _purge_queues(redis_client) -> None:  # type: ignore[no-untyped-def]
    """Messages other test modules left in the run's queues (their rows are gone) would run here."""
    for queue in QUEUES:
        redis_client.delete(f"{REDIS_PREFIX}{queue}")


ALL = ("content", "crawl", "default", "llm", "telegram", "beat", "flower", "metrics", "console")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    import redis

    from tests.conftest import REDIS_URL

    _purge_queues(redis.Redis.from_url(REDIS_URL))
    data_dir = tmp_path_factory.mktemp("up") / "var"
    env = _env(data_dir, HNPAL_CRAWL_ALLOW_HOSTS="127.0.0.1")  # a loopback page for the failing crawl
    up = Up(data_dir, env)
    try:
        up.wait_running(ALL)
        yield up
    finally:
        if up.proc.poll() is None:
            up.stop()


def test_flower_beyond_loopback_needs_a_password(tmp_path: Path) -> None:
    env = _env(tmp_path / "var", HNPAL_FLOWER_ADDRESS="0.0.0.0")
    del env["HNPAL_FLOWER_BASIC_AUTH"]
    done = subprocess.run([hnpal_executable(), "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "beyond loopback" in done.stderr and "HNPAL_FLOWER_BASIC_AUTH" in done.stderr
    assert not (tmp_path / "var" / "logs").exists()  # refused before anything started


def test_status_lines_name_every_child(stack: Up) -> None:
    status = stack.status()
    assert set(status) == set(ALL)
    assert all(pid.isdigit() and restarts == 0 for pid, _, restarts in status.values()), status
    out = stack.output()
    assert "bot       not started: no HNPAL_TELEGRAM_TOKEN" in out
    assert re.search(r"status \S+ default\s+pid=\d+\s+state=running\s+restarts=0\s+uptime=\d+s", out)


def test_console_answers_on_loopback_and_wants_a_session(stack: Up) -> None:
    import httpx

    port = stack.env["HNPAL_CONSOLE_PORT"]
    assert f"console   http://127.0.0.1:{port}/" in stack.output()
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok"
    page = httpx.get(f"http://127.0.0.1:{port}/queue", timeout=10)
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_flower_refuses_requests_without_credentials(stack: Up) -> None:
    base = f"http://127.0.0.1:{stack.env['HNPAL_FLOWER_PORT']}"
    with httpx.Client(base_url=base, timeout=10) as client:
        for path in ("/", "/api/workers", "/api/tasks"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, auth=(AUTH[0], "wrong")).status_code == 401, path
        assert client.get("/", auth=AUTH).status_code == 200
        workers = client.get("/api/workers", auth=AUTH, params={"refresh": "1"})
        assert workers.status_code == 200 and isinstance(workers.json(), dict)
        metrics = client.get("/metrics")  # Flower serves /metrics without credentials (for Prometheus)
        assert metrics.status_code == 200
        assert "flower_events" in {f.name for f in text_string_to_metric_families(metrics.text)}
    pid = int(stack.status()["flower"][0])
    assert AUTH[1].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # not visible in `ps`
    assert (stack.data_dir / "flower").is_dir()  # --persistent --db under the data directory


class _Gone(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib's name
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<h1>gone</h1>")

    def log_message(self, *args: object) -> None:
        pass


def test_flower_counts_a_crawl_that_failed_for_good_and_its_broker_view_answers(stack: Up) -> None:
    """A page that answers 404 fails its crawl for good: the post is failed (quarantine lists it) and the
    task is a FAILURE in Flower's API, not a green success. Flower's Broker view and queue lengths work
    with our Redis transport."""
    import threading

    from hnpal.db.session import session_scope
    from hnpal.ops.quarantine import list_failed
    from hnpal.posts.models import Post
    from tasks.crawl import crawl_post

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with session_scope() as session:
            post = Post(hn_id=900_000_000 + int(uuid.uuid4().int % 10_000_000), type="story", title="Gone page",
                        url=f"http://127.0.0.1:{server.server_address[1]}/gone", crawl_status="queued")  # fmt: skip
            session.add(post)
            session.flush()
            post_id = post.id
        task_id = crawl_post.delay(post_id).id
        base = f"http://127.0.0.1:{stack.env['HNPAL_FLOWER_PORT']}"
        with httpx.Client(base_url=base, timeout=10, auth=AUTH) as client:

            def state() -> str | None:
                answer = client.get(f"/api/task/info/{task_id}")
                return answer.json().get("state") if answer.status_code == 200 else None

            stack.wait(lambda: state() in ("FAILURE", "SUCCESS"), "the crawl task in Flower", timeout=120)
            info = client.get(f"/api/task/info/{task_id}").json()
            assert info["state"] == "FAILURE", info
            assert "WorkFailed" in info["exception"] and "404" in info["exception"]
            listed = client.get("/api/tasks", params={"state": "FAILURE"}).json()
            assert task_id in listed

            def queue_lengths() -> dict[str, int]:
                # Flower lists the queues its workers consume (known once it has inspected them)
                client.get("/api/workers", params={"refresh": "1"})
                lengths = client.get("/api/queues/length")
                assert lengths.status_code == 200, lengths.text  # was 404: "'redis' broker is not supported"
                return {q["name"]: q["messages"] for q in lengths.json()["active_queues"]}

            names = stack.wait(lambda: (found := queue_lengths()) and set(QUEUES) <= set(found) and found,
                               "every queue in Flower's queue lengths", timeout=120)  # fmt: skip
            assert all(isinstance(n, int) for n in names.values())
            broker = client.get("/broker")
            assert broker.status_code == 200 and "not supported" not in broker.text
            assert all(queue in broker.text for queue in QUEUES)
    finally:
        server.shutdown()
    with session_scope() as session:
        failed = session.get(Post, post_id)
        assert failed.crawl_status == "failed" and "404" in (failed.crawl_error or "")
        assert f"crawl:{post_id}" in {f.ref for f in list_failed(session=session, kind="crawl")}
        session.delete(failed)


def test_metrics_server_answers_in_the_text_format(stack: Up) -> None:
    port = stack.env["HNPAL_METRICS_PORT"]
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert families["hnpal_metrics_up"].samples[0].value == 1
    assert {"hnpal_posts_fetched", "hnpal_queue_depth", "hnpal_llm_cost_usd", "hnpal_telegram_429"} <= set(families)


def test_a_killed_worker_is_restarted(stack: Up) -> None:
    old_pid = int(stack.status()["crawl"][0])
    os.kill(old_pid, signal.SIGKILL)
    status = stack.wait(
        lambda: (s := stack.status()).get("crawl", ("", "", 0))[2] == 1 and s["crawl"][1] == "running" and s,
        "crawl restarted and running",
        timeout=120,
    )
    assert int(status["crawl"][0]) != old_pid
    assert re.search(r"up: crawl exited \(code -9\) after \S+; restarting in 1s", stack.output())
    assert not group_alive(old_pid)  # its pool processes went with it
    assert all(restarts == 0 for name, (_, _, restarts) in status.items() if name != "crawl"), status


def _completions(engine, tokens: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT details->>'token' AS token, count(*) FROM audit_log "
                "WHERE action = 'ops.sleep' AND details->>'token' = ANY(:tokens) GROUP BY 1"
            ),
            {"tokens": tokens},
        ).all()
    return {token: n for token, n in rows}


def test_sigterm_with_tasks_in_flight_loses_none(stack: Up, engine, redis_client) -> None:
    from tasks.ops import sleep

    n = 10
    run = uuid.uuid4().hex[:6]
    tokens = [f"drill-{run}-{i}" for i in range(n)]
    for token in tokens:
        sleep.apply_async(args=[2, token])  # default queue; two run at a time
    stack.wait(lambda: sum(_completions(engine, tokens).values()) >= 2, "two tasks done", timeout=120)

    code = stack.stop()
    assert code == 0, stack.tail()
    assert "warm shutdown" in stack.output() and "nothing left running" in stack.output()
    assert _processes_naming(str(stack.data_dir)) == []
    done = _completions(engine, tokens)
    waiting = redis_client.llen(f"{REDIS_PREFIX}default")
    unacked = redis_client.hlen(f"{REDIS_PREFIX}unacked")
    # Every task either ran to completion during the warm shutdown or went back to the queue.
    assert sum(done.values()) + waiting == n, (done, waiting, unacked)
    assert 0 < waiting < n
    assert all(count == 1 for count in done.values()), done

    again = Up(stack.data_dir, stack.env)
    try:
        again.wait(lambda: sum(_completions(engine, tokens).values()) >= n, f"all {n} tasks done", timeout=300)
    finally:
        assert again.stop() == 0, again.tail()
    assert _processes_naming(str(stack.data_dir)) == []
    final = _completions(engine, tokens)
    duplicates = sum(final.values()) - len(final)
    print(
        f"warm shutdown drill: {n} tasks, {sum(done.values())} done before the stop, {waiting} back in the queue, "
        f"all {len(final)} done after the restart, {duplicates} duplicates"
    )
    assert set(final) == set(tokens) and duplicates == 0, final
    assert any((stack.data_dir / "flower").iterdir())  # Flower's persistent state was written


# --- the supervisor's back-off, with a child that exits at once ---------------------------------------


def test_crashing_child_backs_off_exponentially_and_resets_when_stable(tmp_path: Path) -> None:
    child = Child("crasher", ["python3", "-c", "import sys; sys.exit(3)"], tmp_path / "crasher.log")
    options = Options(backoff_base=0.5, backoff_max=2.0, stable_after=30.0)
    sup = Supervisor([Supervised(child, dict(os.environ))], options, out=io.StringIO())
    p = sup.procs[0]
    now = 1000.0
    sup._start(p, now)
    delays = []
    for _ in range(5):
        child.proc.wait(timeout=30)
        now += 1.0
        sup.tick(now)
        assert p.state == "backoff" and p.last_exit == 3
        delays.append(p.restart_at - now)
        now = p.restart_at
        sup.tick(now)  # due: started again
        assert p.state == "starting"
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert p.restarts == 5
    child.proc.wait(timeout=30)
    sup.tick(now + options.stable_after + 1)  # it had been up long enough: the back-off starts over
    assert p.restart_at - (now + options.stable_after + 1) == 0.5
    assert "crasher exited (code 3)" in sup.out.getvalue()  # type: ignore[attr-defined]
    assert not group_alive(child.proc.pid)


def test_a_child_that_cannot_start_says_why(tmp_path: Path) -> None:
    """The supervisor repeats the last line of the child's log: why it exited, or what it waits for."""
    from hnpal.ops.supervisor import SLOW_START

    script = (
        "import sys, time; print('2026-12-06 07:19:00,275 ERROR celery.worker: Cannot connect to "
        "redis://:pw@127.0.0.1:1/0: Error 111 connecting. Trying again in 2.00 seconds...', flush=True); "
        "time.sleep(float(sys.argv[1])); sys.exit(1)"
    )
    waiting = Child("waiter", ["python3", "-c", script, "30"], tmp_path / "waiter.log", ready_marker="ready.")
    failing = Child("failer", ["python3", "-c", script, "0"], tmp_path / "failer.log", ready_marker="ready.")
    sup = Supervisor([Supervised(waiting, dict(os.environ)), Supervised(failing, dict(os.environ))], Options(),
                     out=io.StringIO())  # fmt: skip
    now = 1000.0
    for p in sup.procs:
        sup._start(p, now)
    failing.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while "Cannot connect" not in (tmp_path / "waiter.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    sup.tick(now + SLOW_START + 1)
    out = sup.out.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"failer exited \(code 1\) .*: Cannot connect to redis://:\*\*\*@127.0.0.1:1/0", out), out
    assert re.search(r"waiter still starting after \d+s: Cannot connect to redis://", out), out
    assert ":pw@" not in out
    waiting.stop(timeout=5)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_is_redrawn_in_place_on_a_terminal(tmp_path: Path) -> None:
    child = Child("sleeper", ["python3", "-c", "import time; time.sleep(30)"], tmp_path / "sleeper.log")
    sup = Supervisor([Supervised(child, dict(os.environ))], Options(), out=_Terminal(), notes=["note line"])
    try:
        sup._start(sup.procs[0], time.monotonic())
        sup.show_status(time.monotonic())
        sup.show_status(time.monotonic())
        out = sup.out.getvalue()  # type: ignore[attr-defined]
        assert out.count("sleeper   pid=") == 2 and "\x1b[2F\x1b[J" in out  # cursor up two lines, erase
    finally:
        child.stop(timeout=5)


def test_shutdown_kills_a_child_that_ignores_sigterm_and_says_so(tmp_path: Path) -> None:
    stubborn = Child(
        "stubborn",
        ["python3", "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(' ready.', "
         "flush=True); time.sleep(120)"],
        tmp_path / "stubborn.log",
    )  # fmt: skip
    crasher = Child("crasher", ["python3", "-c", "import sys; sys.exit(3)"], tmp_path / "crasher.log")
    sup = Supervisor(
        [Supervised(stubborn, dict(os.environ)), Supervised(crasher, dict(os.environ))],
        Options(stop_timeout=1.0, backoff_base=60.0),
        out=io.StringIO(),
    )
    now = time.monotonic()
    for p in sup.procs:
        sup._start(p, now)
    crasher.proc.wait(timeout=30)
    # SIGTERM before the stubborn child ignores it would stop it: wait until it said so (a loaded machine
    # starts Python slowly)
    deadline = time.monotonic() + 60
    while "ready." not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ready." in (tmp_path / "stubborn.log").read_text()
    sup.tick(time.monotonic())  # the crasher now waits out its back-off: nothing to stop
    assert sup.procs[1].state == "backoff"
    assert sup.shutdown() is False  # the stubborn one had to be killed
    out = sup.out.getvalue()  # type: ignore[attr-defined]
    assert "stubborn stopped with code -9" in out and "crasher stopped" not in out
    assert [p.state for p in sup.procs] == ["stopped", "stopped"]
    assert not group_alive(stubborn.proc.pid)
