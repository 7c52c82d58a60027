"""user affinity: each user's net 👍/👎 per domain and per title word, kept by triggers on deliveries

The digest selection ranked with affinities it summed from every reacted delivery of each user, in
every digest: work that grew with each user's history. These rows hold the sums instead, kept current by
row triggers on ``deliveries`` (a reaction stored with a new row, or changed on one), so the selection
reads a few rows per user. Deleting a delivery leaves its reaction counted (a user's rows go with the
user; a deleted post's reactions stay as they were given).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 23:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# what a reaction to post p counts for: its domain and each of its title words
KEYS = (
    "SELECT 'domain' AS kind, p.domain::text AS key WHERE p.domain IS NOT NULL "
    "UNION ALL SELECT 'topic', k FROM unnest(p.keywords) k"
)

# (old reaction, new reaction) -> the change of the user's weight for the post's domain and title words
FUNCTION = f"""
CREATE FUNCTION user_affinity_from_reaction() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta int := CASE NEW.reaction WHEN 'up' THEN 1 WHEN 'down' THEN -1 ELSE 0 END;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        delta := delta - CASE OLD.reaction WHEN 'up' THEN 1 WHEN 'down' THEN -1 ELSE 0 END;
    END IF;
    IF delta <> 0 THEN
        INSERT INTO user_affinity AS a (user_id, kind, key, weight)
        SELECT NEW.user_id, x.kind, x.key, sum(delta)
        FROM posts p CROSS JOIN LATERAL ({KEYS}) x
        WHERE p.id = NEW.post_id
        GROUP BY x.kind, x.key
        ON CONFLICT (user_id, kind, key) DO UPDATE SET weight = a.weight + excluded.weight;
    END IF;
    RETURN NULL;
END
$$
"""  # noqa: S608 - this module's constant SQL only


def upgrade() -> None:
    op.create_table(
        "user_affinity",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('domain', 'topic')", name=op.f("ck_user_affinity_kind_valid")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_affinity_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "kind", "key", name=op.f("pk_user_affinity")),
    )
    op.execute(FUNCTION)
    op.execute(
        "CREATE TRIGGER tg_deliveries_reaction_inserted AFTER INSERT ON deliveries FOR EACH ROW "
        "WHEN (NEW.reaction IS NOT NULL) EXECUTE FUNCTION user_affinity_from_reaction()"
    )
    op.execute(
        "CREATE TRIGGER tg_deliveries_reaction_changed AFTER UPDATE OF reaction ON deliveries FOR EACH ROW "
        "WHEN (OLD.reaction IS DISTINCT FROM NEW.reaction) EXECUTE FUNCTION user_affinity_from_reaction()"
    )
    # what the reactions so far add up to
    op.execute(
        f"""
        INSERT INTO user_affinity (user_id, kind, key, weight)
        SELECT d.user_id, x.kind, x.key, sum(CASE d.reaction WHEN 'up' THEN 1 ELSE -1 END)
        FROM deliveries d JOIN posts p ON p.id = d.post_id CROSS JOIN LATERAL ({KEYS}) x
        WHERE d.reaction IS NOT NULL AND EXISTS (SELECT 1 FROM users u WHERE u.id = d.user_id)
        GROUP BY 1, 2, 3
        """  # noqa: S608 - this module's constant SQL only
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tg_deliveries_reaction_changed ON deliveries")
    op.execute("DROP TRIGGER tg_deliveries_reaction_inserted ON deliveries")
    op.execute("DROP FUNCTION user_affinity_from_reaction()")
    op.drop_table("user_affinity")
