"""The paid model's health, shared by every process through PostgreSQL (``provider_health``).

An authentication or permission error (a mistyped or revoked key, a key without access to the model, a
model that does not exist) is not the post's fault and will not pass by retrying: the first one marks
the provider **down** for its fingerprint (endpoint, model and key), logs one ERROR for the operator (only
on the transition, whichever process sees it first) and from then on every process picks the offline
provider instead of paying for a refusal. Posts summarized meanwhile are ``summary_status = 'offline'``.

The summary sweep re-checks a refused key at most every ``HNPAL_LLM_KEY_RECHECK_SECONDS`` with one
cheap request (``GET /models/<model>``: no tokens) and, once it works, marks the provider **up** and
re-summarizes those posts with the model. A changed key (another fingerprint) is tried at once: the row
written for the old key says nothing about it.

Each process re-reads the row at most every :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.llm.base import LLMError
from hnpal.llm.models import ProviderHealth

log = logging.getLogger(__name__)
PROVIDER = "openai"
DOWN_KINDS = ("auth", "model")  # errors that say the key or the model is unusable, not the request
CACHE_SECONDS = 5.0
FIX = (
    "check HNPAL_OPENAI_API_KEY (and HNPAL_OPENAI_BASE_URL, HNPAL_OPENAI_MODEL); the offline summarizer "
    "answers meanwhile, and posts are re-summarized with the model once the key works"
)

_cache: dict[str, tuple[float, bool]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Health:
    configured: bool  # a key is set
    up: bool
    error: str | None = None
    down_since: datetime | None = None
    checked_at: datetime | None = None


def fingerprint(settings: Settings) -> str | None:
    if settings.openai_api_key is None:
        return None
    raw = f"{settings.openai_base_url}\n{settings.openai_model}\n{settings.openai_api_key.get_secret_value()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:64]


def forget() -> None:
    """Drop the cached health (tests; a process that must see a change at once)."""
    with _lock:
        _cache.clear()


def _session() -> AbstractContextManager[Session]:
    from hnpal.db.session import session_scope

    return session_scope()


def read(settings: Settings | None = None) -> Health:
    """The stored health of the configured key (fresh from PostgreSQL)."""
    settings = settings or get_settings()
    fp = fingerprint(settings)
    if fp is None:
        return Health(configured=False, up=False)
    with _session() as session:
        row = session.get(ProviderHealth, PROVIDER)
        if row is None or row.fingerprint != fp or row.status == "up":
            return Health(True, True, checked_at=row.checked_at if row is not None and row.fingerprint == fp else None)
        return Health(True, False, row.error, row.down_since, row.checked_at)


def usable(settings: Settings | None = None) -> bool:
    """Whether paid calls may be made with the configured key (cached for a few seconds). A database
    that does not answer keeps the last known state (up when nothing is known): the call will tell.
    Without a configured key nothing was refused (True): whoever calls has a provider of their own."""
    settings = settings or get_settings()
    fp = fingerprint(settings)
    if fp is None:
        return True
    now = time.monotonic()
    cached = _cache.get(fp)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        up = read(settings).up
    except SQLAlchemyError as exc:
        log.warning("provider health not read (%s); assuming it unchanged", exc)
        up = cached[1] if cached is not None else True
    with _lock:
        _cache[fp] = (now, up)
    return up


def is_down_error(error: BaseException) -> bool:
    return isinstance(error, LLMError) and error.kind in DOWN_KINDS


def mark_down(error: BaseException, settings: Settings | None = None) -> bool:
    """Record that the provider refused the key. True when this call made the transition, and then it
    (alone, across every process) logs the operator alert."""
    settings = settings or get_settings()
    fp = fingerprint(settings)
    if fp is None:
        return False
    reason = str(error)[:500]
    table = ProviderHealth.__table__
    row = insert(ProviderHealth).values(
        name=PROVIDER, fingerprint=fp, status="down", error=reason, down_since=func.now(), checked_at=func.now()
    )
    stmt = row.on_conflict_do_update(
        index_elements=[ProviderHealth.name],
        set_={"fingerprint": fp, "status": "down", "error": reason, "down_since": func.now(), "checked_at": func.now()},
        where=or_(table.c.status != "down", table.c.fingerprint != fp),
    ).returning(ProviderHealth.name)
    with _session() as session:
        changed = session.execute(stmt).first() is not None
    with _lock:
        _cache[fp] = (time.monotonic(), False)
    if changed:
        log.error(
            "ALERT the model provider refused the key (%s): paid calls stopped, the offline summarizer answers. "
            "Fix: %s",
            reason,
            FIX,
        )
    return changed


def mark_up(settings: Settings | None = None) -> bool:
    """Record that the key works (again). True when it was down."""
    settings = settings or get_settings()
    fp = fingerprint(settings)
    if fp is None:
        return False
    with _session() as session:
        changed = (
            session.execute(
                update(ProviderHealth)
                .where(ProviderHealth.name == PROVIDER, ProviderHealth.fingerprint == fp,
                       ProviderHealth.status == "down")
                .values(status="up", error=None, down_since=None, checked_at=func.now())
                .returning(ProviderHealth.name)
            ).first()
            is not None
        )  # fmt: skip
    with _lock:
        _cache[fp] = (time.monotonic(), True)
    if changed:
        log.warning("the model provider accepts the key again: paid calls resume")
    return changed


def _touch(settings: Settings) -> None:
    with _session() as session:
        session.execute(
            update(ProviderHealth)
            .where(ProviderHealth.name == PROVIDER, ProviderHealth.fingerprint == fingerprint(settings))
            .values(checked_at=func.now())
        )


def check_key(settings: Settings | None = None, *, timeout: float = 10.0) -> tuple[bool | None, str]:
    """One cheap request with the configured key (``GET /models/<model>``, no tokens). Returns (True,
    detail) when it works, (False, reason) when the key or the model is refused, (None, reason) when the
    endpoint could not be asked (network, server error): nothing is known then."""
    import openai

    settings = settings or get_settings()
    if settings.openai_api_key is None:
        return None, "no key configured"
    client = openai.OpenAI(api_key=settings.openai_api_key.get_secret_value(), base_url=str(settings.openai_base_url),
                           timeout=timeout, max_retries=0)  # fmt: skip
    try:
        model = client.models.retrieve(settings.openai_model)
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        return False, f"not authorized ({exc.status_code}): {exc.message}"
    except openai.NotFoundError as exc:
        return False, f"model {settings.openai_model!r} not found ({exc.status_code}): {exc.message}"
    except openai.APIStatusError as exc:
        return None, f"HTTP {exc.status_code}: {exc.message}"
    except openai.APIError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return True, f"model {model.id} available"


def recheck(settings: Settings | None = None) -> bool:
    """For the sweep: True when paid calls may be made. A key marked down is checked again when its last
    check is older than ``HNPAL_LLM_KEY_RECHECK_SECONDS`` (one cheap request), and marked up if it works."""
    settings = settings or get_settings()
    if settings.openai_api_key is None:
        return False
    state = read(settings)
    if state.up:
        return True
    age = (datetime.now(UTC) - state.checked_at).total_seconds() if state.checked_at else None
    if age is not None and age < settings.llm_key_recheck_seconds:
        return False
    works, detail = check_key(settings)
    if works:
        mark_up(settings)
        return True
    log.info("the model provider still refuses the key (%s); next check in %.0fs", detail,
             settings.llm_key_recheck_seconds)  # fmt: skip
    _touch(settings)
    return False
