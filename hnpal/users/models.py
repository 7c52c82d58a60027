from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base, TimestampMixin

# 'blocked': the user blocked the bot (Telegram answered 403); 'deleted': /deletemydata grace period.
UserStatus = Literal["active", "paused", "blocked", "deleted"]
USER_STATUSES: tuple[UserStatus, ...] = get_args(UserStatus)

DEFAULT_DIGEST_PREFERENCES: dict[str, Any] = {
    "style": "flat_scroll",
    "frequency": "daily",
    "time": "07:00",
    "max_posts": 10,
}


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("telegram_id > 0", name="telegram_id_positive"),
        CheckConstraint(f"status IN {USER_STATUSES!r}", name="status_valid"),
        CheckConstraint("jsonb_typeof(interests) = 'array'", name="interests_array"),
        CheckConstraint("jsonb_array_length(interests) <= 50", name="interests_max"),
        CheckConstraint("jsonb_typeof(digest_preferences) = 'object'", name="digest_preferences_object"),
        CheckConstraint("(status = 'deleted') = (deleted_at IS NOT NULL)", name="deleted_at_matches_status"),
        # telegram_id is UNIQUE, which already indexes it.
        Index("ix_users_status", "status"),
        Index(
            "ix_users_active_discussion_post_id",
            "active_discussion_post_id",
            postgresql_where=text("active_discussion_post_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    username: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))

    active_discussion_post_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("posts.hn_id", ondelete="SET NULL")
    )
    memory_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    status: Mapped[UserStatus] = mapped_column(String(20), nullable=False, server_default="active")

    interests: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    digest_preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB,
        nullable=False,
        server_default=text(
            '\'{"style": "flat_scroll", "frequency": "daily", "time": "07:00", "max_posts": 10}\'::jsonb'
        ),
    )

    last_interaction_at: Mapped[datetime | None]
    # set by /pause, cleared by resuming: a block and unblock (status 'blocked', then back) keeps the pause
    paused_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
