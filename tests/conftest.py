"""Test harness: a fresh PostgreSQL database and a private Redis key namespace for each run.

Tests talk to the real servers (HNPAL_TEST_DATABASE_URL, default the machine's PostgreSQL on
127.0.0.1:5432; HNPAL_TEST_REDIS_URL, default 127.0.0.1:6379). The run creates database
``hnpal_test_<pid>_<random>``, migrates it to head, and drops it at the end; Redis keys are namespaced
``hnpal-test-<id>:`` and deleted at the end. So runs never collide.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis as redis_lib
from sqlalchemy import create_engine, make_url
from sqlalchemy.orm import Session

RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
ADMIN_URL = os.environ.get("HNPAL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HNPAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_DB = f"hnpal_test_{RUN_ID}"
REDIS_PREFIX = f"hnpal-test-{RUN_ID}:"
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "fixtures" / "articles"

_tmp_root = Path(tempfile.mkdtemp(prefix=f"hnpal-test-{RUN_ID}-"))


def _admin_connect():
    url = make_url(ADMIN_URL)
    return psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, dbname=url.database
    )


def database_url_for(name: str) -> str:
    return make_url(ADMIN_URL).set(drivername="postgresql+psycopg2", database=name).render_as_string(False)


def create_database(name: str) -> str:
    conn = _admin_connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return database_url_for(name)


def drop_database(name: str) -> None:
    conn = _admin_connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def pytest_configure(config: pytest.Config) -> None:
    try:
        conn = _admin_connect()
        conn.close()
    except psycopg2.OperationalError as exc:
        raise pytest.UsageError(
            f"PostgreSQL at {ADMIN_URL} does not answer ({exc}). Start it "
            "(`.ci/run` does) or set HNPAL_TEST_DATABASE_URL."
        ) from None
    try:
        redis_lib.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis_lib.RedisError as exc:
        raise pytest.UsageError(
            f"Redis at {REDIS_URL} does not answer ({exc}). Start it (`.ci/run` does) or set HNPAL_TEST_REDIS_URL."
        ) from None
    url = create_database(TEST_DB)
    os.environ.update(
        {
            "HNPAL_DATABASE_URL": url,
            "HNPAL_REDIS_URL": REDIS_URL,
            "HNPAL_REDIS_KEY_PREFIX": REDIS_PREFIX,
            "HNPAL_DATA_DIR": str(_tmp_root / "var"),
            "HNPAL_LOG_LEVEL": "INFO",
            # Tests press buttons and send commands far faster than a person: a budget of their own, so
            # only the fairness tests (tests/telegram/test_fairness.py, with the defaults) meet deferrals.
            "HNPAL_TELEGRAM_USER_UPDATE_RATE": "50",
            "HNPAL_TELEGRAM_USER_UPDATE_BURST": "500",
            "HNPAL_TELEGRAM_GROUP_UPDATE_RATE": "50",
            "HNPAL_TELEGRAM_GROUP_UPDATE_BURST": "500",
        }
    )
    for key in list(os.environ):
        if key.startswith("HNPAL_") and key not in {
            "HNPAL_DATABASE_URL",
            "HNPAL_REDIS_URL",
            "HNPAL_REDIS_KEY_PREFIX",
            "HNPAL_DATA_DIR",
            "HNPAL_LOG_LEVEL",
            "HNPAL_TELEGRAM_USER_UPDATE_RATE",
            "HNPAL_TELEGRAM_USER_UPDATE_BURST",
            "HNPAL_TELEGRAM_GROUP_UPDATE_RATE",
            "HNPAL_TELEGRAM_GROUP_UPDATE_BURST",
            "HNPAL_TEST_DATABASE_URL",
            "HNPAL_TEST_REDIS_URL",
        }:
            del os.environ[key]
    from hnpal.db import migrate

    migrate.upgrade(url)


def pytest_unconfigure(config: pytest.Config) -> None:
    from hnpal.db.session import dispose_engines

    dispose_engines()
    try:
        drop_database(TEST_DB)
    except psycopg2.Error as exc:  # pragma: no cover - report, do not mask the test result
        print(f"could not drop test database {TEST_DB}: {exc}")
    try:
        client = redis_lib.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    except redis_lib.RedisError as exc:  # pragma: no cover
        print(f"could not clean Redis keys {REDIS_PREFIX}*: {exc}")


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ["HNPAL_DATABASE_URL"]


@pytest.fixture(scope="session")
def engine(database_url: str):
    eng = create_engine(database_url, pool_pre_ping=True)
    yield eng
    eng.dispose()


@pytest.fixture
def db_session(engine) -> Iterator[Session]:
    """A session whose work is rolled back at the end of the test (commits become savepoints)."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty database of its own (for migration tests), dropped afterwards."""
    name = f"hnpal_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def redis_client() -> redis_lib.Redis:
    return redis_lib.Redis.from_url(REDIS_URL, decode_responses=True)


@pytest.fixture
def key_prefix() -> str:
    """A Redis prefix private to one test."""
    return f"{REDIS_PREFIX}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def shared_articles() -> Path:
    if not (SHARED / "ground-truth.json").exists():
        pytest.skip(f"shared article fixtures not found at {SHARED} (a user's clone does not have ../shared)")
    return SHARED


class WorkerProcess:
    """A real ``celery -A hnpal worker`` in its own process, as an operator would start it."""

    def __init__(self, queues: str, *, env: dict[str, str], concurrency: int = 1, pool: str = "prefork") -> None:
        import subprocess
        import sys

        self.name = f"w{uuid.uuid4().hex[:6]}@%h"
        self.log_path = _tmp_root / f"worker-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hnpal",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-P",
                pool,
                "-n",
                self.name,
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
            ],  # fmt: skip
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def spawn_worker():
    workers: list[WorkerProcess] = []

    def spawn(queues: str, *, env: dict[str, str] | None = None, **kw) -> WorkerProcess:
        worker = WorkerProcess(queues, env=env or {}, **kw)
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        worker.stop()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch):
    """Set HNPAL_* settings for one test (environment and cached settings), restored afterwards."""
    from config.settings import reset_settings_cache

    def apply(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"HNPAL_{key.upper()}", str(value))
        reset_settings_cache()

    yield apply
    monkeypatch.undo()
    reset_settings_cache()


@pytest.fixture
def llm_server():  # type: ignore[no-untyped-def]
    """The sandbox OpenAI-compatible server (model "sandbox-model"), for one test."""
    from hnpal.sandbox.llm_api import LLMServer

    with LLMServer(model="sandbox-model") as server:
        yield server


def use_sandbox_llm(settings_env, server, **extra: str) -> None:  # type: ignore[no-untyped-def]
    """Point the paid provider at the sandbox ``server``: a key, its model at 1 and 2 USD per million
    input and output tokens, a short retry backoff, and ``extra`` settings on top."""
    import json

    settings_env(
        openai_api_key="k",
        openai_base_url=server.base_url,
        openai_model="sandbox-model",
        llm_prices=json.dumps({"sandbox-model": {"input": "1", "output": "2"}}),
        llm_retry_backoff="0.01",
        **extra,
    )


def is_topic_request(body: dict) -> bool:
    """Whether a request the sandbox model received asked what a post is about (hnpal.relevance.labels), not
    for a summary: every post the model summarizes is also asked that once."""
    return ((body.get("response_format") or {}).get("json_schema") or {}).get("name") == "post_topics"


def summary_requests(server) -> list[dict]:  # type: ignore[no-untyped-def]
    """The requests the sandbox model received, less those asking what a post is about."""
    return [body for body in server.requests if not is_topic_request(body)]


# --- SQL helpers for tests (each call its own committed session) -----------------------------------


def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    with session_scope() as session:
        return [dict(r._mapping) for r in session.execute(text(sql), params)]


def one(sql: str, **params: Any) -> dict[str, Any] | None:
    """The one row the query finds, or None; more than one fails the test."""
    found = rows(sql, **params)
    assert len(found) <= 1, found
    return found[0] if found else None


def execute(sql: str, **params: Any) -> None:
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    with session_scope() as session:
        session.execute(text(sql), params)
