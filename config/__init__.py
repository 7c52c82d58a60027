"""Configuration: settings (pydantic-settings), logging, alembic.ini."""
