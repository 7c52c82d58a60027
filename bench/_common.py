"""Shared bench plumbing: a throwaway PostgreSQL database, settings, the shared article pages."""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "fixtures" / "articles"
ADMIN_URL = os.environ.get("HNPAL_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HNPAL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _admin(sql: str) -> None:
    import psycopg2
    from sqlalchemy import make_url

    url = make_url(ADMIN_URL)
    conn = psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, dbname=url.database
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh, migrated database for one bench run; dropped afterwards."""
    from sqlalchemy import make_url

    name = f"hnpal_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(drivername="postgresql+psycopg2", database=name).render_as_string(False)
    try:
        from hnpal.db import migrate

        migrate.upgrade(url)
        yield url
    finally:
        from hnpal.db.session import dispose_engines

        dispose_engines()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_settings(**env: str) -> None:
    """Point HN Pal's settings at the bench's servers (environment + cache reset)."""
    from config.settings import reset_settings_cache

    os.environ.update({f"HNPAL_{k.upper()}": v for k, v in env.items()})
    reset_settings_cache()


def shared_pages() -> dict[str, tuple[str, str]] | None:
    """id -> (html, ground-truth text), or None when ../shared is absent."""
    truth_file = SHARED / "ground-truth.json"
    if not truth_file.exists():
        return None
    truth = json.loads(truth_file.read_text())
    return {
        page_id: (
            gzip.decompress((SHARED / "html" / f"{page_id}.html.gz").read_bytes()).decode("utf-8"),
            record["articleBody"],
        )
        for page_id, record in sorted(truth.items())
    }


def token_f1(predicted: str, truth: str) -> float:
    p, t = Counter(predicted.split()), Counter(truth.split())
    common = sum((p & t).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def last_line(**figures: object) -> str:
    parts = []
    for key, value in figures.items():
        parts.append(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process and its waited-for children so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wait_for_workers(count: int, timeout: float = 60, what: str = "workers") -> None:
    """Ping until ``count`` workers answer. Each ping goes over a connection of its own: a connection
    kept idle between pings (while a phase runs) has kombu warn that its BRPOP got no reply."""
    from hnpal.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.connection_for_write() as connection:
            if len(app.control.ping(timeout=0.5, connection=connection) or []) >= count:
                return
    raise TimeoutError(f"the {what} did not answer within {timeout:.0f}s")


def stop_processes(procs: list) -> None:  # type: ignore[type-arg]
    """Terminate the bench's child processes, all at once, and kill any still running after 30 s."""
    import subprocess

    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
