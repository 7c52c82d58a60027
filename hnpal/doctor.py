"""``hnpal doctor``: one line per check, with a fix for each failure."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from config.settings import Settings, SettingsError, load_settings


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def run_checks() -> Iterator[Check]:
    try:
        settings = load_settings()
    except SettingsError as exc:
        yield Check("config", "fail", str(exc), "correct the setting in the environment or .env")
        return
    yield Check(
        "config",
        "ok",
        f"database={'embedded' if settings.embedded_database else 'configured'} "
        f"redis={'embedded' if settings.embedded_redis else 'configured'} content={settings.content_dir}",
    )
    db_ok = False
    for check in _check_postgres(settings):
        db_ok = check.status == "ok"
        yield check
    yield _check_redis(settings)
    yield _check_content(settings)
    if db_ok:
        yield _check_migrations()


def _check_postgres(settings: Settings) -> Iterator[Check]:
    from sqlalchemy import text

    from hnpal import runtime
    from hnpal.db.session import get_engine

    fix = (
        f"run `hnpal embedded stop` then retry, or check the log under {settings.data_dir / 'postgres' / 'log'}"
        if settings.embedded_database
        else "start PostgreSQL or correct HNPAL_DATABASE_URL (leave it empty for the embedded server)"
    )
    try:
        url = runtime.database_url(settings)
        with get_engine(url).connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
    except Exception as exc:
        yield Check("postgresql", "fail", _one_line(exc), fix)
        return
    where = "embedded" if settings.embedded_database else "configured"
    yield Check("postgresql", "ok", f"{where} server {version}")


def _check_redis(settings: Settings) -> Check:
    import redis

    from hnpal import runtime

    fix = (
        f"see {settings.data_dir / 'redis' / 'redis.log'}"
        if settings.embedded_redis
        else "start Redis or correct HNPAL_REDIS_URL (leave it empty for the embedded server)"
    )
    try:
        url = runtime.redis_url(settings)
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        info = client.info("server")
        client.close()
    except Exception as exc:
        return Check("redis", "fail", _one_line(exc), fix)
    where = "embedded" if settings.embedded_redis else "configured"
    return Check("redis", "ok", f"{where} server {info.get('redis_version')}")


def _check_content(settings: Settings) -> Check:
    from hnpal.content import ContentStore, ContentStoreError, ContentStoreMissing

    path = settings.content_dir
    try:
        with ContentStore.open_reader(path) as store:
            stats = store.stats()
    except ContentStoreMissing:
        return Check(
            "content",
            "warn",
            f"{path} not created yet",
            "the content worker creates it on first start, or run `hnpal content init`",
        )
    except ContentStoreError as exc:
        return Check("content", "fail", _one_line(exc), f"restore {path} from a `hnpal content backup`")
    keys = sum(v.get("estimated_keys", 0) for v in stats.get("kinds", {}).values())
    return Check("content", "ok", f"{path} readable, ~{keys} documents")


def _check_migrations() -> Check:
    from hnpal.db import migrate

    try:
        current, head = migrate.current_revision(), migrate.head_revision()
    except Exception as exc:
        return Check("migrations", "fail", _one_line(exc), "run `hnpal db upgrade`")
    if current == head:
        return Check("migrations", "ok", f"at head {head}")
    return Check("migrations", "fail", f"database at {current or 'base'}, code at {head}", "run `hnpal db upgrade`")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
