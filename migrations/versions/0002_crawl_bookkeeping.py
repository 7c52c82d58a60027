"""crawl bookkeeping

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 12:48:19.143055+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("posts", sa.Column("crawl_status", sa.String(length=20), server_default="pending", nullable=False))
    op.add_column("posts", sa.Column("crawl_enqueued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("posts", sa.Column("canonical_url", sa.Text(), nullable=True))
    op.add_column("posts", sa.Column("repost_of_post_id", sa.Integer(), nullable=True))
    op.add_column("posts", sa.Column("extraction_method", sa.String(length=30), nullable=True))
    op.add_column("posts", sa.Column("comments_fetched_at", sa.DateTime(timezone=True), nullable=True))
    # Existing rows get the status their old flags imply, before the new checks hold them to it.
    op.execute(
        "UPDATE posts SET crawl_status = CASE WHEN is_crawl_success THEN 'success' "
        "WHEN crawl_retry_count >= 3 THEN 'failed' ELSE 'pending' END"
    )
    op.create_check_constraint(
        op.f("ck_posts_crawl_status_valid"),
        "posts",
        "crawl_status IN ('pending', 'queued', 'retrying', 'fetched', 'success', 'reused', 'failed', 'skipped')",
    )
    op.create_check_constraint(
        op.f("ck_posts_crawl_success_matches_status"),
        "posts",
        "is_crawl_success = (crawl_status IN ('success', 'reused'))",
    )
    op.create_check_constraint(
        op.f("ck_posts_repost_not_self"), "posts", "repost_of_post_id IS NULL OR repost_of_post_id <> id"
    )
    op.drop_index(
        op.f("ix_posts_crawl_pending"),
        table_name="posts",
        postgresql_where="((NOT is_crawl_success) AND (crawl_retry_count < 3))",
    )
    op.create_index(
        "ix_posts_crawl_pending",
        "posts",
        ["crawl_status", "crawl_enqueued_at"],
        unique=False,
        postgresql_where=sa.text("crawl_status IN ('pending', 'queued', 'retrying', 'fetched')"),
    )
    op.create_index(
        "ix_posts_canonical_url",
        "posts",
        ["canonical_url", "crawled_at"],
        unique=False,
        postgresql_where=sa.text("is_crawl_success AND canonical_url IS NOT NULL"),
    )
    op.create_index("ix_posts_repost_of_post_id", "posts", ["repost_of_post_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_posts_repost_of_post_id_posts"),
        "posts",
        "posts",
        ["repost_of_post_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_posts_repost_of_post_id_posts"), "posts", type_="foreignkey")
    op.drop_constraint(op.f("ck_posts_repost_not_self"), "posts", type_="check")
    op.drop_constraint(op.f("ck_posts_crawl_success_matches_status"), "posts", type_="check")
    op.drop_constraint(op.f("ck_posts_crawl_status_valid"), "posts", type_="check")
    op.drop_index("ix_posts_repost_of_post_id", table_name="posts")
    op.drop_index(
        "ix_posts_canonical_url",
        table_name="posts",
        postgresql_where=sa.text("is_crawl_success AND canonical_url IS NOT NULL"),
    )
    op.drop_index(
        "ix_posts_crawl_pending",
        table_name="posts",
        postgresql_where=sa.text("crawl_status IN ('pending', 'queued', 'retrying', 'fetched')"),
    )
    op.create_index(
        op.f("ix_posts_crawl_pending"),
        "posts",
        ["hn_id"],
        unique=False,
        postgresql_where="((NOT is_crawl_success) AND (crawl_retry_count < 3))",
    )
    op.drop_column("posts", "comments_fetched_at")
    op.drop_column("posts", "extraction_method")
    op.drop_column("posts", "repost_of_post_id")
    op.drop_column("posts", "canonical_url")
    op.drop_column("posts", "crawl_enqueued_at")
    op.drop_column("posts", "crawl_status")
