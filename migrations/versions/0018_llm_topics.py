"""llm topics: what the configured model said a post is about, once per post

``posts.llm_topics``: the topics (of the offline model's list, most important first, at most three) the
OpenAI-compatible model chose for the post when it was summarized with a key configured; NULL when it was
never asked, empty when it found none that fits. ``topics`` / ``topic_weights`` blend them with the offline
model's probabilities (``hnpal.relevance.service``), and a new offline model's recomputation keeps them.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 05:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("posts", sa.Column("llm_topics", postgresql.ARRAY(sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("posts", "llm_topics")
