"""deliveries without foreign keys: the reservation locks what it reads, triggers cascade deletes

A digest reserves ten or so ``deliveries`` rows, and a foreign key checks each row on its own (a query
and a row lock per key per row): a quarter of the selection statement's time at 10,000 digests. The
selection now locks each digest's user row and the posts it reads FOR KEY SHARE, once per row read (what
the checks took), and these statement-level triggers delete a deleted user's or post's deliveries, as ON
DELETE CASCADE did. The index on post_id alone served only that cascade and goes too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 23:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CASCADES = (("users", "user_id"), ("posts", "post_id"))


def upgrade() -> None:
    op.drop_constraint(op.f("fk_deliveries_user_id_users"), "deliveries", type_="foreignkey")
    op.drop_constraint(op.f("fk_deliveries_post_id_posts"), "deliveries", type_="foreignkey")
    # only the cascade from posts read deliveries by post alone; HN Pal never deletes a post, and the
    # trigger's scan when someone does costs less than an index entry for every reserved row
    op.drop_index("ix_deliveries_post_id", table_name="deliveries")
    for table, column in CASCADES:
        op.execute(
            f"""
            CREATE FUNCTION deliveries_cascade_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM deliveries d USING gone WHERE d.{column} = gone.id;
                RETURN NULL;
            END
            $$
            """  # noqa: S608 - this module's constant names only
        )
        op.execute(
            f"CREATE TRIGGER tg_{table}_delete_deliveries AFTER DELETE ON {table} "
            f"REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION deliveries_cascade_{table}()"
        )


def downgrade() -> None:
    for table, _ in CASCADES:
        op.execute(f"DROP TRIGGER tg_{table}_delete_deliveries ON {table}")
        op.execute(f"DROP FUNCTION deliveries_cascade_{table}()")
    # rows whose user or post went while there were no keys (there should be none: the triggers)
    op.execute("DELETE FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = d.user_id)")
    op.execute("DELETE FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM posts p WHERE p.id = d.post_id)")
    op.create_index("ix_deliveries_post_id", "deliveries", ["post_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_deliveries_post_id_posts"), "deliveries", "posts", ["post_id"], ["id"], ondelete="CASCADE"
    )
    op.create_foreign_key(
        op.f("fk_deliveries_user_id_users"), "deliveries", "users", ["user_id"], ["id"], ondelete="CASCADE"
    )
