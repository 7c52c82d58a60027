"""Caps that hold under bursts: a model call reserves its estimate before it is made.

A cap checked against finished calls only lets every call in flight through (25 quick questions with 5
answers left made 12 paid calls). Here a call first reserves, in one statement under an advisory lock
(the ``llm_reserve`` function: reservations of one cap are made one at a time, each seeing every earlier
one): what was spent
today (``agent_calls``) plus what is reserved (``llm_reservations``, live ones) plus this call's
estimate must stay within the cap, or nothing is reserved. After the call its ``agent_calls`` rows hold
the real usage and the reservation is deleted (:func:`release`); when no call was made it is deleted
too (a refund). A reservation left by a lost worker stops counting at its ``expires_at``.

Two caps: the day's LLM budget (``HNPAL_LLM_DAILY_BUDGET_USD``, every paid call: :func:`reserve_budget`)
and a user's discussion allowance (``HNPAL_DISCUSSION_DAILY_MESSAGES`` answers and
``HNPAL_DISCUSSION_DAILY_USD``: :func:`reserve_answer`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, text

from config.settings import Settings, get_settings
from hnpal.db.session import get_engine
from hnpal.usage.models import LLMReservation

log = logging.getLogger(__name__)
LOCK_NAMESPACE = 0x4C4C4D52  # "LLMR": advisory locks of reservations; key 0 the budget, else the user id
TTL = timedelta(minutes=15)  # longer than any call with its retries


def midnight() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def cost_usd(model: str, input_tokens: int, output_tokens: int, settings: Settings | None = None) -> Decimal:
    """Cost from the price table (USD per 1M tokens). An unknown model costs 0 and logs a warning."""
    settings = settings or get_settings()
    price = settings.llm_prices.get(model)
    if price is None:
        log.warning("no price for model %r in HNPAL_LLM_PRICES; its calls are recorded at cost 0", model)
        return Decimal(0)
    total = (Decimal(input_tokens) * price.input + Decimal(output_tokens) * price.output) / Decimal(1_000_000)
    return total.quantize(Decimal("0.000001"))


def estimate_usd(
    model: str, messages: list[dict[str, Any]], max_tokens: int, settings: Settings | None = None
) -> Decimal:
    """A generous estimate of one call's cost, cheap to make: a prompt token per 3 bytes (English runs
    at about 4), and the longest answer allowed."""
    prompt = sum(len(str(m.get("content") or "").encode("utf-8")) // 3 + 4 for m in messages) + 3
    return cost_usd(model, prompt, max_tokens, settings)


# one statement: see the function in migrations/versions/0012_llm_reservations_and_summary_attempts.py
RESERVE = text(
    "SELECT llm_reserve(:lock, :scope, CAST(:user_id AS integer), :usd, :answers, :max_usd, "
    "CAST(:max_answers AS integer), :since, :ttl)"
)
# one statement (its own transaction), whose commit does not wait for the disk either
RELEASE = text(
    "WITH no_sync AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "DELETE FROM llm_reservations WHERE id = :id AND EXISTS (SELECT FROM no_sync)"
)


def _run(stmt: Any, params: dict[str, Any], connection: Connection | None) -> Any:
    """One statement on the caller's autocommit connection, or on a pooled one in autocommit; its scalar
    result (None for a statement that returns no rows), read before a pooled connection goes back."""
    if connection is not None:
        result = connection.execute(stmt, params)
        return result.scalar() if result.returns_rows else None
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        result = conn.execute(stmt, params)
        return result.scalar() if result.returns_rows else None


def _reserve(
    *, scope: str, user_id: int | None, usd: Decimal, answers: int, max_usd: Decimal, max_answers: int | None,
    connection: Connection | None,
) -> int | None:  # fmt: skip
    """Reserve ``usd`` (and ``answers``) when what the cap has used (live reservations, today's calls)
    leaves room, in one statement under the cap's advisory lock (``llm_reserve``). Reservations are
    short-lived: their commits do not wait for the disk (a database crash loses at most the last few,
    which only lets the calls then in flight through)."""
    params = {"lock": LOCK_NAMESPACE, "scope": scope, "user_id": user_id, "usd": usd, "answers": answers,
              "max_usd": max_usd, "max_answers": max_answers, "since": midnight(),
              "ttl": TTL.total_seconds()}  # fmt: skip
    return _run(RESERVE, params, connection)


def reserve_budget(usd: Decimal, settings: Settings | None = None, connection: Connection | None = None) -> int | None:
    """Hold ``usd`` of the day's LLM budget for one paid call; None when it would pass the budget."""
    settings = settings or get_settings()
    return _reserve(scope="global", user_id=None, usd=usd, answers=0, max_usd=settings.llm_daily_budget_usd,
                    max_answers=None, connection=connection)  # fmt: skip


def reserve_answer(
    *, user_id: int, usd: Decimal, settings: Settings | None = None, connection: Connection | None = None
) -> int | None:
    """Hold one discussion answer (and ``usd``) of the user's allowance for today; None when the day's
    answers or dollars would pass it."""
    settings = settings or get_settings()
    return _reserve(scope="discussion", user_id=user_id, usd=usd, answers=1, max_usd=settings.discussion_daily_usd,
                    max_answers=settings.discussion_daily_messages, connection=connection)  # fmt: skip


def release(reservation: int | None, connection: Connection | None = None) -> None:
    """Settle or refund: the call's own rows count from now on (or no call was made). ``connection``: an
    autocommit connection of the caller's."""
    if reservation is not None:
        _run(RELEASE, {"id": reservation}, connection)


def prune(*, now: datetime | None = None) -> int:
    """Delete reservations past their ``expires_at`` (left by lost workers); returns how many."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        done = conn.execute(delete(LLMReservation).where(LLMReservation.expires_at < (now or datetime.now(UTC))))
    return int(done.rowcount or 0)
