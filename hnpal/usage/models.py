from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base, TimestampMixin


class UserTokenUsage(TimestampMixin, Base):
    __tablename__ = "user_token_usage"
    __table_args__ = (
        # The UNIQUE index on (user_id, date) also serves the document's idx_user_date (a B-tree scans
        # backwards as well), so no second index is built.
        UniqueConstraint("user_id", "date"),
        CheckConstraint(
            "total_input_tokens >= 0 AND total_output_tokens >= 0 AND total_cost_usd >= 0 "
            "AND summarization_tokens >= 0 AND discussion_tokens >= 0 AND memory_extraction_tokens >= 0",
            name="counts_nonnegative",
        ),
        # The console's top spenders of a day, straight from the index.
        Index("ix_user_token_usage_date_cost", "date", text("total_cost_usd DESC")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    date: Mapped[date] = mapped_column(Date, nullable=False)
    total_input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_cost_usd: Mapped[Decimal] = mapped_column(Numeric(10, 6), nullable=False, server_default="0")
    summarization_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    discussion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    memory_extraction_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")


class AgentCall(Base):
    __tablename__ = "agent_calls"
    __table_args__ = (
        CheckConstraint(
            "(input_tokens IS NULL OR input_tokens >= 0) AND (output_tokens IS NULL OR output_tokens >= 0)"
            " AND (cost_usd IS NULL OR cost_usd >= 0) AND (latency_ms IS NULL OR latency_ms >= 0)",
            name="measures_nonnegative",
        ),
        CheckConstraint("success OR error_message IS NOT NULL", name="error_when_failed"),
        Index("ix_agent_calls_agent_type", "agent_type", text("called_at DESC")),
        Index("ix_agent_calls_user", "user_id", text("called_at DESC")),
        Index("ix_agent_calls_langfuse_trace_id", "langfuse_trace_id"),
        Index("ix_agent_calls_conversation_id", "conversation_id"),
        Index("ix_agent_calls_called_at", "called_at"),
        Index("ix_agent_calls_post_id", "post_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    agent_type: Mapped[str] = mapped_column(String(50), nullable=False)
    model: Mapped[str] = mapped_column(String(50), nullable=False)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(10, 6))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    langfuse_trace_id: Mapped[str | None] = mapped_column(String(255))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    # Summarization calls: which post and style they were for (so spend per post is visible).
    post_id: Mapped[int | None] = mapped_column(ForeignKey("posts.id", ondelete="SET NULL"))
    purpose: Mapped[str | None] = mapped_column(String(50))
    success: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    error_message: Mapped[str | None] = mapped_column(Text)
    called_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


class LLMReservation(Base):
    """An estimate held for a model call in flight, so concurrent calls cannot together pass a cap:
    ``global`` rows hold the day's LLM budget, ``discussion`` rows a user's discussion allowance (one
    answer and its estimated cost). Deleted once the call's agent_calls rows are written (they count
    from then on) or when no call was made; one left by a lost worker stops counting at ``expires_at``."""

    __tablename__ = "llm_reservations"
    __table_args__ = (
        CheckConstraint("scope IN ('global', 'discussion')", name="scope_valid"),
        CheckConstraint("answers >= 0 AND usd >= 0", name="amounts_nonnegative"),
        Index("ix_llm_reservations_scope", "scope", "user_id", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(20), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    answers: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    usd: Mapped[Decimal] = mapped_column(Numeric(10, 6), nullable=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)


class LLMCostDaily(Base):
    """LLM spend per UTC day, model and agent type, kept by a trigger on ``agent_calls`` (every insert adds
    to its day's row), so the console's costs page reads a few rows instead of a month of calls. Kept
    when old ``agent_calls`` are pruned."""

    __tablename__ = "llm_cost_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(50), primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(50), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), nullable=False, server_default="0")
