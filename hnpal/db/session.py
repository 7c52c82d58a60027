"""Engines and sessions, one engine per process and URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_makers: dict[int, sessionmaker[Session]] = {}
# Raised by a thread-pool worker: each task thread may hold two connections at once (an advisory lock
# and a session), so the pool must not be the bottleneck (see hnpal.celery).
min_pool_size = 0


def normalize_url(url: str) -> str:
    """Use the psycopg2 driver for a plain postgresql:// URL."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


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
                pool_pre_ping=True,
                pool_recycle=3600,
                connect_args={"connect_timeout": 10, "application_name": "hnpal"},
            )
            _engines[url] = engine
        return engine


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
