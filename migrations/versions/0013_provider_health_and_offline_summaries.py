"""provider health and offline summaries

The paid model's health (``provider_health``: one row per configured provider, keyed by a fingerprint of
its key, endpoint and model): an authentication or permission error marks it down, paid calls stop at
once and the offline summarizer answers; a sweep re-checks the key cheaply and marks it up again. A post
summarized offline while the model was refused has ``summary_status = 'offline'``: it reaches digests
and is re-summarized with the model once the key works.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 07:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_health",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("down_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('up', 'down')", name=op.f("ck_provider_health_status_valid")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_provider_health")),
    )
    op.drop_constraint(op.f("ck_posts_summary_status_valid"), "posts", type_="check")
    op.create_check_constraint(
        op.f("ck_posts_summary_status_valid"),
        "posts",
        "summary_status IN ('pending', 'done', 'failed', 'skipped', 'offline')",
    )
    op.create_index(
        "ix_posts_summary_offline",
        "posts",
        ["id"],
        unique=False,
        postgresql_where=sa.text("summary_status = 'offline'"),
    )


def downgrade() -> None:
    op.drop_index("ix_posts_summary_offline", table_name="posts")
    op.execute("UPDATE posts SET summary_status = 'done' WHERE summary_status = 'offline'")
    op.drop_constraint(op.f("ck_posts_summary_status_valid"), "posts", type_="check")
    op.create_check_constraint(
        op.f("ck_posts_summary_status_valid"), "posts", "summary_status IN ('pending', 'done', 'failed', 'skipped')"
    )
    op.drop_table("provider_health")
