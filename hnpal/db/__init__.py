"""Database plumbing: the typed declarative base, engines and sessions."""

from hnpal.db.base import Base, TimestampMixin
from hnpal.db.session import get_engine, session_scope

__all__ = ["Base", "TimestampMixin", "get_engine", "session_scope"]
