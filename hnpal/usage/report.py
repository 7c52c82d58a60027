"""Usage reports: what ``hnpal usage`` and the bot's ``/token`` show."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hnpal.usage.models import AgentCall, UserTokenUsage
from hnpal.users.models import User


def _total(rows: Sequence[Sequence[Any]], label: tuple[str, ...], *, counts: range, cost: int) -> tuple[Any, ...]:
    """The footer row: ``label``, the sums of the ``counts`` columns, then the sum of the ``cost`` column
    (a Decimal, 0 without rows)."""
    return (*label, *(sum(r[i] for r in rows) for i in counts), sum((r[cost] for r in rows), Decimal(0)))


def usage_rows(session: Session, *, telegram_id: int | None, days: int) -> tuple[str, list[str], list[tuple]]:
    since = (datetime.now(UTC) - timedelta(days=days - 1)).date()
    if telegram_id is not None:
        user_id = session.scalar(select(User.id).where(User.telegram_id == telegram_id))
        if user_id is None:
            raise LookupError(f"no user with Telegram id {telegram_id}")
        rows = session.execute(
            select(
                UserTokenUsage.date,
                UserTokenUsage.total_input_tokens,
                UserTokenUsage.total_output_tokens,
                UserTokenUsage.summarization_tokens,
                UserTokenUsage.discussion_tokens,
                UserTokenUsage.memory_extraction_tokens,
                UserTokenUsage.total_cost_usd,
            )
            .where(UserTokenUsage.user_id == user_id, UserTokenUsage.date >= since)
            .order_by(UserTokenUsage.date.desc())
        ).all()
        columns = ["date", "input", "output", "summaries", "discussion", "memory", "cost USD"]
        total = _total(rows, ("total",), counts=range(1, 6), cost=6)
        return f"LLM usage of user {telegram_id}, last {days} day(s)", columns, [*rows, total]
    day = func.date(func.timezone("UTC", AgentCall.called_at))
    rows = session.execute(
        select(
            day,
            AgentCall.agent_type,
            AgentCall.model,
            func.count(),
            func.sum(func.cast(~AgentCall.success, type_=AgentCall.input_tokens.type)),
            func.coalesce(func.sum(AgentCall.input_tokens), 0),
            func.coalesce(func.sum(AgentCall.output_tokens), 0),
            func.coalesce(func.sum(AgentCall.cost_usd), 0),
        )
        .where(AgentCall.called_at >= datetime.combine(since, datetime.min.time(), tzinfo=UTC))
        .group_by(day, AgentCall.agent_type, AgentCall.model)
        .order_by(day.desc(), AgentCall.agent_type, AgentCall.model)
    ).all()
    columns = ["date", "agent", "model", "calls", "failed", "input", "output", "cost USD"]
    total = _total(rows, ("total", "", ""), counts=range(3, 7), cost=7)
    return f"LLM usage, last {days} day(s)", columns, [*rows, total]
