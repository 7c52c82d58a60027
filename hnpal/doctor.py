"""``hnpal doctor``: one line per check, with a fix for each failure.

Checks the configuration, PostgreSQL, Redis, the content store, the migration level, and that each
configured endpoint answers: Hacker News (``maxitem.json``), Telegram (``getMe`` with the token) and the
model (``GET /models/<model>`` with the key: no tokens spent), and whether the model refused the key
while running (hnpal/llm/health.py)."""

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
    migrated = False
    if db_ok:
        check = _check_migrations()
        migrated = check.status == "ok"
        yield check
    yield _check_hn(settings)
    yield _check_telegram(settings)
    yield _check_model(settings, stored=migrated)


ENDPOINT_TIMEOUT = 10.0


def _check_hn(settings: Settings) -> Check:
    import httpx

    url = f"{str(settings.hn_api_base_url).rstrip('/')}/maxitem.json"
    fix = "check HNPAL_HN_API_BASE_URL and this machine's network (HN Pal fetches from it every minute)"
    try:
        answer = httpx.get(url, timeout=ENDPOINT_TIMEOUT)
        answer.raise_for_status()
        newest = int(answer.json())
    except Exception as exc:  # noqa: BLE001 - any failure is the line's subject
        return Check("hn", "fail", f"{settings.hn_api_base_url} does not answer: {_one_line(exc)}", fix)
    return Check("hn", "ok", f"{settings.hn_api_base_url} answers (newest item {newest})")


def _check_telegram(settings: Settings) -> Check:
    import httpx

    from config.settings import bot_api_base

    if settings.telegram_token is None:
        return Check("telegram", "warn", "no HNPAL_TELEGRAM_TOKEN: the bot cannot start",
                     "create a bot with @BotFather and set HNPAL_TELEGRAM_TOKEN in .env")  # fmt: skip
    base = bot_api_base(str(settings.telegram_base_url))
    try:
        answer = httpx.get(f"{base}{settings.telegram_token.get_secret_value()}/getMe", timeout=ENDPOINT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001
        return Check("telegram", "fail", f"{base} does not answer: {type(exc).__name__}",
                     "check HNPAL_TELEGRAM_BASE_URL and this machine's network")  # fmt: skip
    if answer.status_code in (401, 404):
        fix = "copy the token @BotFather gave you into HNPAL_TELEGRAM_TOKEN (/token in @BotFather shows it)"
        return Check("telegram", "fail", f"the Bot API refused the token ({answer.status_code})", fix)
    try:
        me = answer.json()["result"]
    except Exception:  # noqa: BLE001
        return Check("telegram", "fail", f"getMe answered HTTP {answer.status_code}",
                     "check HNPAL_TELEGRAM_BASE_URL (it should end in /bot)")  # fmt: skip
    return Check("telegram", "ok", f"token accepted: @{me.get('username')}")


def _check_model(settings: Settings, *, stored: bool) -> Check:
    from hnpal.llm import health

    if settings.openai_api_key is None:
        return Check("model", "ok", "no HNPAL_OPENAI_API_KEY: the offline summarizer writes every summary")
    works, detail = health.check_key(settings, timeout=ENDPOINT_TIMEOUT)
    where = f"{settings.openai_base_url} model {settings.openai_model}"
    if works is False:
        return Check("model", "fail", f"{where}: {detail}", health.FIX)
    if works is None:
        fix = "check HNPAL_OPENAI_BASE_URL (any OpenAI-compatible endpoint, ending in /v1) and the network"
        return Check("model", "fail", f"{where} does not answer: {detail}", fix)
    if stored:
        try:
            state = health.read(settings)
        except Exception:  # noqa: BLE001 - the database line says why
            state = None
        if state is not None and not state.up:
            since = f"{state.down_since:%Y-%m-%d %H:%M} UTC" if state.down_since else "earlier"
            fix = (
                "nothing: the summary sweep notices within HNPAL_LLM_KEY_RECHECK_SECONDS "
                f"({settings.llm_key_recheck_seconds:.0f}s) and re-summarizes"
            )
            return Check("model", "warn", f"the key works now; it was refused since {since} ({state.error})", fix)
    return Check("model", "ok", f"{where}: key accepted, {detail}")


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
    except Exception as exc:  # noqa: BLE001 - any failure is what the check reports
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
    except Exception as exc:  # noqa: BLE001 - any failure is what the check reports
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
    from hnpal.runtime import database_url

    try:
        current, head = migrate.current_revision(database_url()), migrate.head_revision()
    except Exception as exc:  # noqa: BLE001 - any failure is what the check reports
        return Check("migrations", "fail", _one_line(exc), "run `hnpal db upgrade`")
    if current == head:
        return Check("migrations", "ok", f"at head {head}")
    return Check("migrations", "fail", f"database at {current or 'base'}, code at {head}", "run `hnpal db upgrade`")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
