"""fair updates: deferred updates, and a pause that survives a block

``telegram_updates.status`` gains 'deferred' (an update over its sender's or chat's budget, handled at
``deferred_until`` instead of ahead of everyone else's), with an index for the sweep that picks up a
deferred update whose task was lost. ``users.paused_at``: when the user paused their digests (NULL: not
paused), so that blocking and unblocking the bot (or writing to it after a block) brings a paused user
back paused, not active.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 04:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('received', 'processed', 'failed', 'quarantined')"
NEW_STATUSES = "status IN ('received', 'processed', 'failed', 'quarantined', 'deferred')"


def upgrade() -> None:
    op.add_column("telegram_updates", sa.Column("deferred_until", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_telegram_updates_status_valid"), "telegram_updates", type_="check")
    op.create_check_constraint("status_valid", "telegram_updates", NEW_STATUSES)
    op.create_check_constraint(
        "deferred_until_set", "telegram_updates", "status <> 'deferred' OR deferred_until IS NOT NULL"
    )
    op.create_index(
        "ix_telegram_updates_deferred",
        "telegram_updates",
        ["deferred_until"],
        postgresql_where=sa.text("status = 'deferred'"),
    )
    op.add_column("users", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET paused_at = now() WHERE status = 'paused'")


def downgrade() -> None:
    op.drop_column("users", "paused_at")
    op.drop_index("ix_telegram_updates_deferred", table_name="telegram_updates")
    op.execute("UPDATE telegram_updates SET status = 'received' WHERE status = 'deferred'")
    op.drop_constraint(op.f("ck_telegram_updates_deferred_until_set"), "telegram_updates", type_="check")
    op.drop_constraint(op.f("ck_telegram_updates_status_valid"), "telegram_updates", type_="check")
    op.create_check_constraint("status_valid", "telegram_updates", OLD_STATUSES)
    op.drop_column("telegram_updates", "deferred_until")
