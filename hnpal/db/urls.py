"""Database URLs as HN Pal hands them to SQLAlchemy (no import of the rest of HN Pal: the migrations, the
engines and the embedded server's start all use it)."""

from __future__ import annotations


def normalize_url(url: str) -> str:
    """Use the psycopg2 driver for a plain postgresql:// URL."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url
