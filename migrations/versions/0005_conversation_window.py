"""conversation window: running summary, folded message count, end reason

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 17:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("summary", sa.Text(), nullable=True))
    op.add_column("conversations", sa.Column("summarized_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("conversations", sa.Column("end_reason", sa.String(length=20), nullable=True))
    op.create_check_constraint(
        op.f("ck_conversations_summarized_count_nonnegative"), "conversations", "summarized_count >= 0"
    )
    op.create_check_constraint(
        op.f("ck_conversations_end_reason_valid"),
        "conversations",
        "end_reason IS NULL OR end_reason IN ('done', 'switch', 'timeout', 'cleared', 'deleted')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_conversations_end_reason_valid"), "conversations", type_="check")
    op.drop_constraint(op.f("ck_conversations_summarized_count_nonnegative"), "conversations", type_="check")
    op.drop_column("conversations", "end_reason")
    op.drop_column("conversations", "summarized_count")
    op.drop_column("conversations", "summary")
