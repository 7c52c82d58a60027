"""llm reservations and summary attempts

Model calls hold their estimate (of the day's budget, of a user's discussion allowance) before they are
made, in llm_reservations; a default summary that keeps failing is counted in posts.summary_attempts (the
sweep stops after five failed runs).

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-06 04:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("answers", sa.Integer(), server_default="0", nullable=False),
        sa.Column("usd", sa.Numeric(precision=10, scale=6), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scope IN ('global', 'discussion')", name=op.f("ck_llm_reservations_scope_valid")),
        sa.CheckConstraint("answers >= 0 AND usd >= 0", name=op.f("ck_llm_reservations_amounts_nonnegative")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_llm_reservations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_reservations")),
    )
    op.create_index("ix_llm_reservations_scope", "llm_reservations", ["scope", "user_id", "expires_at"])
    op.add_column("posts", sa.Column("summary_attempts", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("posts", "summary_attempts")
    op.drop_index("ix_llm_reservations_scope", table_name="llm_reservations")
    op.drop_table("llm_reservations")
