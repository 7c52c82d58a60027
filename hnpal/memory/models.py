from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal, get_args

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base, TimestampMixin

MemoryType = Literal[
    "interest",
    "preference",
    "work_context",
    "personal_context",
    "discussion_note",
    "fact",
    "opinion",
    "connection",
]
MEMORY_TYPES: tuple[MemoryType, ...] = get_args(MemoryType)
MemorySource = Literal["onboarding", "discussion", "reaction", "explicit"]
MEMORY_SOURCES: tuple[MemorySource, ...] = get_args(MemorySource)
MAX_MEMORY_CHARS = 5000


class Memory(TimestampMixin, Base):
    __tablename__ = "memory"
    __table_args__ = (
        CheckConstraint(f"type IN {MEMORY_TYPES!r}", name="type_valid"),
        CheckConstraint(f"source_type IS NULL OR source_type IN {MEMORY_SOURCES!r}", name="source_type_valid"),
        CheckConstraint(f"char_length(content) BETWEEN 1 AND {MAX_MEMORY_CHARS}", name="content_length"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        Index("ix_memory_user_active", "user_id", "active", postgresql_where=text("active")),
        Index("ix_memory_user_type", "user_id", "type"),
        Index("ix_memory_source_post_id", "source_post_id"),
        Index("ix_memory_source_conversation_id", "source_conversation_id"),
        Index("ix_memory_created_at", text("created_at DESC")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[MemoryType] = mapped_column(String(50), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    source_type: Mapped[MemorySource | None] = mapped_column(String(50))
    source_post_id: Mapped[int | None] = mapped_column(ForeignKey("posts.id", ondelete="SET NULL"))
    source_conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    confidence: Mapped[Decimal] = mapped_column(Numeric(3, 2), nullable=False, server_default="1.0")
    last_accessed_at: Mapped[datetime | None]
