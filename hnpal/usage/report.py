"""Usage reports: what ``hnpal usage`` and the bot's ``/token`` show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hnpal.usage.models import AgentCall, UserTokenUsage
from hnpal.users.models import User


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
        total = ("total", *(sum(r[i] for r in rows) for i in range(1, 6)), sum((r[6] for r in rows), Decimal(0)))
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
    total = ("total", "", "", *(sum(r[i] for r in rows) for i in range(3, 7)), sum((r[7] for r in rows), Decimal(0)))
    return f"LLM usage, last {days} day(s)", columns, [*rows, total]
