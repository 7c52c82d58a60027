"""What the command line prints instead of a traceback: one line saying what failed and how to fix it.

``hnpal --debug <command>`` shows the traceback instead. Secrets (passwords in URLs, tokens, keys) are
masked by :func:`config.logging.mask_secrets`.
"""

from __future__ import annotations

from config.logging import mask_secrets

DOCTOR = "`hnpal doctor` checks every service"


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = lines[0] if lines else type(cause).__name__
    return mask_secrets(text)[:300]


def _where(setting: str) -> str:
    try:
        from config.settings import get_settings
        from hnpal import runtime

        settings = get_settings()
        if setting == "database":
            if settings.embedded_database:
                return "the embedded PostgreSQL"
            from sqlalchemy import make_url

            return "PostgreSQL at " + make_url(runtime.database_url(settings)).render_as_string(hide_password=True)
        if settings.embedded_redis:
            return "the embedded Redis"
        return "Redis at " + mask_secrets(runtime.redis_url(settings))
    except Exception:  # noqa: BLE001 - only words
        return "PostgreSQL" if setting == "database" else "Redis"


def describe(exc: BaseException) -> str:
    """One line for an error that ended a command: what, and the fix."""
    import redis
    import sqlalchemy.exc
    from kombu.exceptions import OperationalError as KombuOperationalError

    try:
        import psycopg2
    except ImportError:  # pragma: no cover
        psycopg2 = None  # type: ignore[assignment]
    database_errors: tuple[type[BaseException], ...] = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    if psycopg2 is not None:
        database_errors += (psycopg2.OperationalError,)
    if isinstance(exc, database_errors):
        return (
            f"cannot use {_where('database')}: {_first_line(exc)}. Fix: start PostgreSQL or correct "
            f"HNPAL_DATABASE_URL (leave it empty for the embedded server); {DOCTOR}"
        )
    if isinstance(exc, sqlalchemy.exc.ProgrammingError) and "does not exist" in str(exc):
        return f"the database is not set up: {_first_line(exc)}. Fix: run `hnpal db upgrade`"
    if isinstance(exc, (redis.RedisError, KombuOperationalError, ConnectionRefusedError)):
        return (
            f"cannot use {_where('redis')}: {_first_line(exc)}. Fix: start Redis or correct HNPAL_REDIS_URL "
            f"(leave it empty for the embedded server); {DOCTOR}"
        )
    from hnpal.content import ContentStoreError

    if isinstance(exc, ContentStoreError):
        return f"content store: {_first_line(exc)}. Fix: see `hnpal content stats`; {DOCTOR}"
    if isinstance(exc, PermissionError | FileNotFoundError):
        return f"{type(exc).__name__}: {_first_line(exc)}. Fix: check HNPAL_DATA_DIR and the file's permissions"
    return f"{type(exc).__name__}: {_first_line(exc)} (run `hnpal --debug ...` for the traceback; {DOCTOR})"
