from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

UpdateStatus = Literal["received", "processed", "failed", "quarantined", "deferred"]
UPDATE_STATUSES: tuple[UpdateStatus, ...] = get_args(UpdateStatus)


class TelegramUpdate(Base):
    """Write-ahead log and recovery cursor for incoming updates.

    The bot stores each update here before enqueueing it, and resumes polling after the largest stored
    update_id. An update over its sender's budget is 'deferred' (handled at ``deferred_until``, never dropped).
    A poison update is quarantined (with ``expires_at`` 7 days on) instead of retried forever.
    """

    __tablename__ = "telegram_updates"
    __table_args__ = (
        CheckConstraint("update_id >= 0", name="update_id_nonnegative"),
        CheckConstraint(f"status IN {UPDATE_STATUSES!r}", name="status_valid"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        CheckConstraint("status <> 'quarantined' OR expires_at IS NOT NULL", name="quarantine_expires"),
        CheckConstraint("status <> 'deferred' OR deferred_until IS NOT NULL", name="deferred_until_set"),
        Index(
            "ix_telegram_updates_pending",
            "status",
            "received_at",
            postgresql_where=text("status IN ('received', 'failed')"),
        ),
        Index(
            "ix_telegram_updates_quarantine_expiry",
            "expires_at",
            postgresql_where=text("status = 'quarantined'"),
        ),
        Index("ix_telegram_updates_deferred", "deferred_until", postgresql_where=text("status = 'deferred'")),
    )

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[UpdateStatus] = mapped_column(String(20), nullable=False, server_default="received")
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    received_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    processed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    # 'deferred': over its sender's (or chat's) budget; handled at this time, after everyone else's
    deferred_until: Mapped[datetime | None]
