"""The paid model's health, shared by every process (see hnpal/llm/health.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import CheckConstraint, DateTime, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

ProviderStatus = Literal["up", "down"]
PROVIDER_STATUSES: tuple[ProviderStatus, ...] = get_args(ProviderStatus)


class ProviderHealth(Base):
    __tablename__ = "provider_health"
    __table_args__ = (CheckConstraint(f"status IN {PROVIDER_STATUSES!r}", name="status_valid"),)

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    # sha256 of (endpoint, model, key), cut: a row written for another key says nothing about this one
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[ProviderStatus] = mapped_column(String(10), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    down_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
