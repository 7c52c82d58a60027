from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Numeric, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

MAX_MESSAGES = 1000
EndReason = Literal["done", "switch", "timeout", "cleared", "deleted"]
END_REASONS: tuple[EndReason, ...] = get_args(EndReason)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("jsonb_typeof(messages) = 'array'", name="messages_array"),
        CheckConstraint(f"jsonb_array_length(messages) <= {MAX_MESSAGES}", name="messages_max"),
        CheckConstraint(
            "total_input_tokens >= 0 AND total_output_tokens >= 0 AND total_cost_usd >= 0",
            name="totals_nonnegative",
        ),
        CheckConstraint("ended_at IS NULL OR ended_at >= started_at", name="ended_after_started"),
        CheckConstraint("summarized_count >= 0", name="summarized_count_nonnegative"),
        CheckConstraint(f"end_reason IS NULL OR end_reason IN {END_REASONS!r}", name="end_reason_valid"),
        Index("ix_conversations_user_started", "user_id", text("started_at DESC")),
        Index("ix_conversations_post_id", "post_id"),
        Index("ix_conversations_active", "user_id", "ended_at", postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False)

    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    total_input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_cost_usd: Mapped[Decimal] = mapped_column(Numeric(10, 6), nullable=False, server_default="0")

    agent_model: Mapped[str | None] = mapped_column(String(50))
    context_loaded: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The conversation window: messages[:summarized_count] are folded into ``summary``; the rest go verbatim.
    summary: Mapped[str | None] = mapped_column(Text)
    summarized_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    end_reason: Mapped[EndReason | None] = mapped_column(String(20))

    started_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    ended_at: Mapped[datetime | None]
    last_message_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
