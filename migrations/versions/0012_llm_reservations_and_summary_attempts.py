"""llm reservations and summary attempts

Model calls hold their estimate (of the day's budget, of a user's discussion allowance) before they are
made, in llm_reservations; a default summary that keeps failing is counted in posts.summary_attempts (the
sweep stops after five failed runs). llm_reserve() makes one reservation in one call (see
hnpal/usage/allowance.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 04:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# One reservation, in one statement (its own transaction when called in autocommit): the cap's advisory
# lock, then what it used (each query of a VOLATILE function takes a fresh snapshot, so it sees every
# reservation and call committed before the lock was granted), then the row, or NULL past the cap. Its
# commit does not wait for the disk: reservations are short-lived.
RESERVE = """
CREATE FUNCTION llm_reserve(p_lock integer, p_scope text, p_user_id integer, p_usd numeric, p_answers integer,
                            p_max_usd numeric, p_max_answers integer, p_since timestamptz, p_ttl double precision)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held_usd numeric;
    held_answers bigint;
    spent numeric;
    made bigint;
    new_id integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(p_lock, coalesce(p_user_id, 0));
    SELECT coalesce(sum(usd), 0), coalesce(sum(answers), 0) INTO held_usd, held_answers
    FROM llm_reservations
    WHERE scope = p_scope AND user_id IS NOT DISTINCT FROM p_user_id AND expires_at > now();
    SELECT coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE success AND purpose IN ('reply', 'idle'))
    INTO spent, made
    FROM agent_calls
    WHERE called_at >= p_since AND (p_user_id IS NULL OR (user_id = p_user_id AND agent_type = 'discussion'));
    IF p_max_answers IS NOT NULL AND made + held_answers + p_answers > p_max_answers THEN
        RETURN NULL;
    END IF;
    IF spent + held_usd + p_usd > p_max_usd THEN
        RETURN NULL;
    END IF;
    INSERT INTO llm_reservations (scope, user_id, usd, answers, expires_at)
    VALUES (p_scope, p_user_id, p_usd, p_answers, now() + make_interval(secs => p_ttl))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$
"""


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
    op.execute(RESERVE)


def downgrade() -> None:
    op.execute("DROP FUNCTION llm_reserve")
    op.drop_column("posts", "summary_attempts")
    op.drop_index("ix_llm_reservations_scope", table_name="llm_reservations")
    op.drop_table("llm_reservations")
