"""Alembic migrations (script location; see config/alembic.ini)."""
