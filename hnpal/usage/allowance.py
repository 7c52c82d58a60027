"""Caps that hold under bursts: a model call reserves its estimate before it is made.

A cap checked against finished calls only lets every call in flight through (25 quick questions with 5
answers left made 12 paid calls). Here a call first reserves, in one short transaction under an advisory
lock (so reservations of one cap are made one at a time, each seeing every earlier one): what was spent
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from config.settings import Settings, get_settings
from hnpal.db.session import get_engine
from hnpal.usage.models import AgentCall, LLMReservation

log = logging.getLogger(__name__)
LOCK_NAMESPACE = 0x4C4C4D52  # "LLMR": advisory locks of reservations; key 0 the budget, else the user id
TTL = timedelta(minutes=15)  # longer than any call with its retries
ANSWER_PURPOSES = ("reply", "idle")


def midnight() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def estimate_usd(
    model: str, messages: list[dict[str, Any]], max_tokens: int, settings: Settings | None = None
) -> Decimal:
    """A generous estimate of one call's cost, cheap to make: a prompt token per 3 bytes (English runs
    at about 4), and the longest answer allowed."""
    from hnpal.llm.service import cost_usd

    prompt = sum(len(str(m.get("content") or "").encode("utf-8")) // 3 + 4 for m in messages) + 3
    return cost_usd(model, prompt, max_tokens, settings)


@contextmanager
def _transaction(connection: Connection | None) -> Iterator[Connection]:
    """A transaction: on the caller's autocommit connection when given (no second pool checkout while
    it holds one), else on a pooled connection of its own."""
    if connection is None:
        with get_engine().begin() as conn:
            yield conn
        return
    connection.exec_driver_sql("BEGIN")
    try:
        yield connection
    except BaseException:
        connection.exec_driver_sql("ROLLBACK")
        raise
    connection.exec_driver_sql("COMMIT")


def _reserve(
    *, scope: str, user_id: int | None, usd: Decimal, answers: int, allowed: Any, connection: Connection | None
) -> int | None:
    """Reserve under the cap's lock when ``allowed(conn, held_usd, held_answers)`` says so."""
    with _transaction(connection) as conn:
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, user_id or 0)))
        # a statement after the lock: its snapshot sees every reservation and call committed before
        live = (
            LLMReservation.scope == scope,
            LLMReservation.expires_at > func.now(),
            LLMReservation.user_id == user_id if user_id is not None else LLMReservation.user_id.is_(None),
        )
        held_usd, held_answers = conn.execute(
            select(func.coalesce(func.sum(LLMReservation.usd), 0), func.coalesce(func.sum(LLMReservation.answers), 0))
            .where(*live)
        ).one()  # fmt: skip
        if not allowed(conn, Decimal(held_usd), int(held_answers)):
            return None
        return conn.execute(
            insert(LLMReservation)
            .values(
                scope=scope, user_id=user_id, usd=usd, answers=answers, expires_at=datetime.now(UTC) + TTL
            )  # fmt: skip
            .returning(LLMReservation.id)
        ).scalar_one()


def reserve_budget(usd: Decimal, settings: Settings | None = None, connection: Connection | None = None) -> int | None:
    """Hold ``usd`` of the day's LLM budget for one paid call; None when it would pass the budget."""
    settings = settings or get_settings()

    def allowed(conn: Any, held_usd: Decimal, _answers: int) -> bool:
        spent = conn.execute(
            select(func.coalesce(func.sum(AgentCall.cost_usd), 0)).where(AgentCall.called_at >= midnight())
        ).scalar_one()
        return Decimal(spent) + held_usd + usd <= settings.llm_daily_budget_usd

    return _reserve(scope="global", user_id=None, usd=usd, answers=0, allowed=allowed, connection=connection)


def reserve_answer(
    *, user_id: int, usd: Decimal, settings: Settings | None = None, connection: Connection | None = None
) -> int | None:
    """Hold one discussion answer (and ``usd``) of the user's allowance for today; None when the day's
    answers or dollars would pass it."""
    settings = settings or get_settings()

    def allowed(conn: Any, held_usd: Decimal, held_answers: int) -> bool:
        answers, spent = conn.execute(
            select(
                func.count().filter(AgentCall.success, AgentCall.purpose.in_(ANSWER_PURPOSES)),
                func.coalesce(func.sum(AgentCall.cost_usd), 0),
            ).where(
                AgentCall.user_id == user_id, AgentCall.agent_type == "discussion", AgentCall.called_at >= midnight()
            )  # fmt: skip
        ).one()
        if answers + held_answers + 1 > settings.discussion_daily_messages:
            return False
        return Decimal(spent) + held_usd + usd <= settings.discussion_daily_usd

    return _reserve(scope="discussion", user_id=user_id, usd=usd, answers=1, allowed=allowed, connection=connection)


def release(reservation: int | None, connection: Connection | None = None) -> None:
    """Settle or refund: the call's own rows count from now on (or no call was made). ``connection``: an
    autocommit connection of the caller's."""
    if reservation is None:
        return
    stmt = delete(LLMReservation).where(LLMReservation.id == reservation)
    if connection is not None:
        connection.execute(stmt)
        return
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(stmt)


def prune(*, now: datetime | None = None) -> int:
    """Delete reservations past their ``expires_at`` (left by lost workers); returns how many."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        done = conn.execute(delete(LLMReservation).where(LLMReservation.expires_at < (now or datetime.now(UTC))))
    return int(done.rowcount or 0)
