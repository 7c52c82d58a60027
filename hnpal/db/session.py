"""Engines and sessions, one engine per process and URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from hnpal.db.urls import normalize_url

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_makers: dict[int, sessionmaker[Session]] = {}
# Raised by a thread-pool worker: each task thread may hold two connections at once (an advisory lock
# and a session), so the pool must not be the bottleneck (see hnpal.celery).
min_pool_size = 0
# A pooled connection idle for longer than this is pinged before use (a dead one is replaced). One used
# more recently is taken as it is: a ping is a round trip on every checkout, and the tasks on a user's
# path check out three to five connections each. If the server went away within that second, the
# statement fails with a disconnect error, SQLAlchemy drops the whole pool, and the task retries.
PING_IDLE_SECONDS = 1.0


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the configured or embedded database)."""
    from config.settings import get_settings
    from hnpal.runtime import database_url

    url = normalize_url(url or database_url())
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            pool = max(get_settings().db_pool_size, min_pool_size)
            engine = create_engine(
                url,
                pool_size=pool,
                max_overflow=pool,
                pool_pre_ping=False,  # pinged when idle instead: _ping_when_idle
                pool_recycle=3600,
                connect_args={"connect_timeout": 10, "application_name": "hnpal"},
            )
            event.listen(engine, "checkin", _checked_in)
            event.listen(engine, "checkout", _ping_when_idle(engine))
            _engines[url] = engine
        return engine


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["hnpal_idle_since"] = time.monotonic()


def _ping_when_idle(engine: Engine) -> Callable[[Any, Any, Any], None]:
    """SQLAlchemy's pessimistic disconnect handling (a ping on checkout; DisconnectionError makes the
    pool discard the connection and check out another), for connections idle over PING_IDLE_SECONDS."""

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("hnpal_idle_since")
        if since is None or time.monotonic() - since <= PING_IDLE_SECONDS:
            return  # new (just connected) or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc

    return checkout


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE run by ``Session.execute`` matched (its result is a CursorResult,
    which SQLAlchemy's types do not say)."""
    return cast("CursorResult[Any]", result).rowcount


def dispose_engines() -> None:
    """Drop every pooled connection and forget the engines (after fork, or between tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _makers.clear()


def _maker(engine: Engine | None) -> sessionmaker[Session]:
    import hnpal.models  # noqa: F401  every mapper is configured before the first flush

    engine = engine or get_engine()
    maker = _makers.get(id(engine))
    if maker is None:
        maker = _makers.setdefault(id(engine), sessionmaker(bind=engine, expire_on_commit=False))
    return maker


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session in a transaction: committed on success, rolled back on error."""
    with _maker(engine).begin() as session:
        yield session


@contextmanager
def work_session(engine: Engine | None = None) -> Iterator[Session]:
    """A session for work that commits as it goes (each step durable on its own); what is left
    uncommitted when the block ends, normally or not, is rolled back."""
    with _maker(engine)() as session:
        try:
            yield session
        finally:
            session.rollback()
