"""summaries and llm accounting

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 14:00:30.571253+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agent_calls", sa.Column("post_id", sa.Integer(), nullable=True))
    op.add_column("agent_calls", sa.Column("purpose", sa.String(length=50), nullable=True))
    op.create_index("ix_agent_calls_post_id", "agent_calls", ["post_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_agent_calls_post_id_posts"), "agent_calls", "posts", ["post_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column("posts", sa.Column("summary_status", sa.String(length=20), server_default="pending", nullable=False))
    op.add_column("posts", sa.Column("summary_basis", sa.String(length=30), nullable=True))
    op.add_column("posts", sa.Column("summary_error", sa.Text(), nullable=True))
    op.create_index(
        "ix_posts_summary_pending",
        "posts",
        ["summary_status"],
        unique=False,
        postgresql_where=sa.text("is_crawl_success AND summary_status IN ('pending', 'failed')"),
    )
    op.add_column("summaries", sa.Column("basis", sa.String(length=30), server_default="article", nullable=False))
    op.add_column("summaries", sa.Column("source_comment_count", sa.Integer(), nullable=True))
    op.add_column("summaries", sa.Column("refresh_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "summaries",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_summaries_basis_valid"),
        "summaries",
        "basis IN ('article', 'post_text', 'title_and_comments', 'comments')",
    )
    op.create_check_constraint(op.f("ck_summaries_refresh_count_nonnegative"), "summaries", "refresh_count >= 0")
    op.execute("UPDATE posts SET summary_status = 'done' WHERE summary IS NOT NULL")
    op.create_check_constraint(
        op.f("ck_posts_summary_status_valid"), "posts", "summary_status IN ('pending', 'done', 'failed', 'skipped')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_posts_summary_status_valid"), "posts", type_="check")
    op.drop_constraint(op.f("ck_summaries_refresh_count_nonnegative"), "summaries", type_="check")
    op.drop_constraint(op.f("ck_summaries_basis_valid"), "summaries", type_="check")
    op.drop_column("summaries", "updated_at")
    op.drop_column("summaries", "refresh_count")
    op.drop_column("summaries", "source_comment_count")
    op.drop_column("summaries", "basis")
    op.drop_index(
        "ix_posts_summary_pending",
        table_name="posts",
        postgresql_where=sa.text("is_crawl_success AND summary_status IN ('pending', 'failed')"),
    )
    op.drop_column("posts", "summary_error")
    op.drop_column("posts", "summary_basis")
    op.drop_column("posts", "summary_status")
    op.drop_constraint(op.f("fk_agent_calls_post_id_posts"), "agent_calls", type_="foreignkey")
    op.drop_index("ix_agent_calls_post_id", table_name="agent_calls")
    op.drop_column("agent_calls", "purpose")
    op.drop_column("agent_calls", "post_id")
