"""Alembic, driven from Python: ``hnpal db upgrade|downgrade|current`` and the tests use these."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

import config as config_pkg
import migrations as migrations_pkg
from hnpal.db.urls import normalize_url

ALEMBIC_INI = Path(config_pkg.__file__).with_name("alembic.ini")
SCRIPT_LOCATION = Path(migrations_pkg.__file__).parent


def alembic_config(url: str | None = None, *, stdout: TextIO | None = None) -> Config:
    cfg = Config(str(ALEMBIC_INI), stdout=stdout) if stdout else Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url:
        cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "-1") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (None: no migration applied)."""
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
