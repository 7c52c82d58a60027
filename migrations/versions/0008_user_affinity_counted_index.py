"""user affinity: a partial index of the rows the digest selection counts

The selection reads, for each user, the affinities that count: a reacted domain, or a title word with two
or more net reactions. A year of reactions leaves a user with about a thousand title words, most of them
at +-1, which the selection read through the primary key and dropped (92,000 of 107,000 rows for 500
users, a seventh of the statement). This index holds only the rows that count, with their values.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 01:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the selection's own condition (hnpal/deliveries/selection.py, "affinity"), so the planner matches it
COUNTED = "weight <> 0 AND (kind = 'domain' OR abs(weight) >= 2)"


def upgrade() -> None:
    op.create_index(
        "ix_user_affinity_counted",
        "user_affinity",
        ["user_id"],
        postgresql_include=["kind", "key", "weight"],
        postgresql_where=sa.text(COUNTED),
    )


def downgrade() -> None:
    op.drop_index("ix_user_affinity_counted", table_name="user_affinity")
