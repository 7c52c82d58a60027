"""post topics: what each post is about, what each interest means, and what reactions taught

``posts.topics`` / ``posts.topic_weights``: the topics a post is about with their probabilities, computed
once per post by ``hnpal.relevance`` (NULL: not computed yet; ``topics_model`` names the model, so a new
one recomputes). ``interest_topics``: the topics a typed interest means, once per distinct phrase, not per
user. ``user_topic_affinity``: each user's net 👍/👎 per topic, weighted by the square of how much each
reacted post is about it (a post is evidence about what it is mostly about, hardly about its side topics:
nine dislikes of posts 10% about Rust do not cancel a like of one 90% about it), kept by triggers on
``deliveries`` like ``user_affinity``. ``deliveries.reason``: why the
selection picked a post (shown under it).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 05:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION user_topic_affinity_from_reaction() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta real := CASE NEW.reaction WHEN 'up' THEN 1 WHEN 'down' THEN -1 ELSE 0 END;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        delta := delta - CASE OLD.reaction WHEN 'up' THEN 1 WHEN 'down' THEN -1 ELSE 0 END;
    END IF;
    IF delta <> 0 THEN
        INSERT INTO user_topic_affinity AS a (user_id, topic, weight)
        SELECT NEW.user_id, t.topic, sum(delta * t.w * t.w)
        FROM posts p CROSS JOIN LATERAL unnest(p.topics, p.topic_weights) t(topic, w)
        WHERE p.id = NEW.post_id AND t.topic IS NOT NULL AND t.w IS NOT NULL
        GROUP BY t.topic
        ON CONFLICT (user_id, topic) DO UPDATE SET weight = a.weight + excluded.weight;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("posts", sa.Column("topics", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column("posts", sa.Column("topic_weights", postgresql.ARRAY(sa.REAL()), nullable=True))
    op.add_column("posts", sa.Column("topics_model", sa.String(length=40), nullable=True))
    op.create_check_constraint(
        op.f("ck_posts_topics_match_weights"),
        "posts",
        "(topics IS NULL) = (topic_weights IS NULL) AND "
        "coalesce(cardinality(topics), 0) = coalesce(cardinality(topic_weights), 0)",
    )
    op.create_index("ix_posts_topics_missing", "posts", ["id"], postgresql_where=sa.text("topics IS NULL"))
    op.add_column("deliveries", sa.Column("reason", sa.String(length=120), nullable=True))
    op.create_table(
        "interest_topics",
        sa.Column("phrase", sa.Text(), nullable=False),
        sa.Column("topics", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("weights", postgresql.ARRAY(sa.REAL()), nullable=False),
        sa.Column("model", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("cardinality(topics) = cardinality(weights)", name=op.f("ck_interest_topics_same_length")),
        sa.CheckConstraint("char_length(phrase) <= 200", name=op.f("ck_interest_topics_phrase_length")),
        sa.PrimaryKeyConstraint("phrase", name=op.f("pk_interest_topics")),
    )
    op.create_table(
        "user_topic_affinity",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("weight", sa.REAL(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_topic_affinity_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "topic", name=op.f("pk_user_topic_affinity")),
    )
    op.execute(FUNCTION)
    op.execute(
        "CREATE TRIGGER tg_deliveries_reaction_topics_inserted AFTER INSERT ON deliveries FOR EACH ROW "
        "WHEN (NEW.reaction IS NOT NULL) EXECUTE FUNCTION user_topic_affinity_from_reaction()"
    )
    op.execute(
        "CREATE TRIGGER tg_deliveries_reaction_topics_changed AFTER UPDATE OF reaction ON deliveries FOR EACH ROW "
        "WHEN (OLD.reaction IS DISTINCT FROM NEW.reaction) EXECUTE FUNCTION user_topic_affinity_from_reaction()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tg_deliveries_reaction_topics_changed ON deliveries")
    op.execute("DROP TRIGGER tg_deliveries_reaction_topics_inserted ON deliveries")
    op.execute("DROP FUNCTION user_topic_affinity_from_reaction()")
    op.drop_table("user_topic_affinity")
    op.drop_table("interest_topics")
    op.drop_column("deliveries", "reason")
    op.drop_index("ix_posts_topics_missing", table_name="posts")
    op.drop_constraint(op.f("ck_posts_topics_match_weights"), "posts", type_="check")
    op.drop_column("posts", "topics_model")
    op.drop_column("posts", "topic_weights")
    op.drop_column("posts", "topics")
