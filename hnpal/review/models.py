"""Review items, the edit taxonomy, the sends that follow a decision, and the silence protocol."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

ReviewKind = Literal["summary", "answer"]
KINDS: tuple[ReviewKind, ...] = get_args(ReviewKind)
ReviewStatus = Literal["pending", "approved", "edited", "rejected"]
STATUSES: tuple[ReviewStatus, ...] = get_args(ReviewStatus)
SendStatus = Literal["pending", "sending", "sent", "failed"]
SEND_STATUSES: tuple[SendStatus, ...] = get_args(SendStatus)
QuarantineStatus = Literal["held", "processed", "dropped", "expired"]
QUARANTINE_STATUSES: tuple[QuarantineStatus, ...] = get_args(QuarantineStatus)
SEED_TAGS = ("factual error", "hallucination", "tone", "too long", "formatting", "unsafe", "other")


class EditTag(Base):
    __tablename__ = "edit_tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


class ReviewItem(Base):
    """One thing the model wrote, held for a person: what the reader would get (``draft``), why it was
    held (``reason``), its context, and, once decided, the decision and the text that went out."""

    __tablename__ = "review_items"
    __table_args__ = (
        CheckConstraint(f"kind IN {KINDS!r}", name="kind_valid"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status_valid"),
        UniqueConstraint("conversation_id", "message_index", name="uq_review_items_answer"),
        Index("ix_review_items_pending", "created_at", postgresql_where=text("status = 'pending'")),
        Index("ix_review_items_decided", "decided_at", postgresql_where=text("decided_at IS NOT NULL")),
        Index("ix_review_items_user_id", "user_id"),
        Index("ix_review_items_summary_id", "summary_id", unique=True, postgresql_where=text("summary_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[ReviewKind] = mapped_column(String(16), nullable=False)
    status: Mapped[ReviewStatus] = mapped_column(String(16), nullable=False, server_default="pending")
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    post_id: Mapped[int | None] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    summary_id: Mapped[int | None] = mapped_column(Integer)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    message_index: Mapped[int | None] = mapped_column(Integer)
    question: Mapped[str | None] = mapped_column(Text)
    draft: Mapped[str] = mapped_column(Text, nullable=False)
    final_text: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    model: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(10, 6), nullable=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    due_at: Mapped[datetime] = mapped_column(nullable=False)
    decided_at: Mapped[datetime | None] = mapped_column()
    decided_by: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"))


class ReviewSend(Base):
    """The message a decision sends, written in the decision's transaction; the send task claims it
    (``pending`` → ``sending``) and records ``sent``; the sweep re-enqueues what was left behind."""

    __tablename__ = "review_sends"
    __table_args__ = (
        CheckConstraint(f"status IN {SEND_STATUSES!r}", name="status_valid"),
        Index("ix_review_sends_open", "created_at", postgresql_where=text("status IN ('pending', 'sending')")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    review_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[SendStatus] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    claimed_at: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


class UserProtocol(Base):
    """A user's protocol status: under review (their answers are held) and/or silenced (their messages
    are quarantined, no model is called)."""

    __tablename__ = "user_protocol"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    under_review: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    review_reason: Mapped[str | None] = mapped_column(Text)
    silenced: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    silence_reason: Mapped[str | None] = mapped_column(Text)
    silenced_until: Mapped[datetime | None] = mapped_column()
    notice_sent: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


class QuarantinedMessage(Base):
    """A silenced user's message, kept (7 days) instead of handled."""

    __tablename__ = "quarantine_messages"
    __table_args__ = (
        CheckConstraint(f"status IN {QUARANTINE_STATUSES!r}", name="status_valid"),
        Index("ix_quarantine_messages_user_id", "user_id", "id"),
        Index("ix_quarantine_messages_held", "expires_at", postgresql_where=text("status = 'held'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    update_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    text: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    status: Mapped[QuarantineStatus] = mapped_column(String(16), nullable=False, server_default="held")
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column()
