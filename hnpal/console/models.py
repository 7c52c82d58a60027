"""Operators of the console and their sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

ROLES = ("viewer", "reviewer", "admin")


class Operator(Base):
    """A person who signs in to the console. ``password_hash`` is an argon2id hash (argon2-cffi)."""

    __tablename__ = "operators"
    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role_valid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    password_changed_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column()


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random token, the table its SHA-256 (a database leak
    gives no usable cookie). Survives a console restart; expires when idle."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_operator_id", "operator_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), nullable=False)
    csrf: Mapped[str] = mapped_column(String(64), nullable=False)
    address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


__all__ = ["ConsoleSession", "Operator", "ROLES"]
