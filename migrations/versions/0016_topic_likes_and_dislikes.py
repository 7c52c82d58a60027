"""topic likes and dislikes: what a reader's 👍 and 👎 said of each topic, kept apart

``user_topic_affinity.liked`` and ``.disliked``: the sums, over the posts a user liked (disliked), of the
square of how much each post was about the topic (``weight`` stays their difference). Kept apart, they
say how sure the selection can be: one like against nine dislikes is not one like alone, and a topic
never shown is not a topic disliked. Filled from the reactions already stored.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-06 07:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION user_topic_affinity_from_reaction() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ups real := (NEW.reaction = 'up')::int;
    downs real := (NEW.reaction = 'down')::int;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        ups := ups - coalesce((OLD.reaction = 'up')::int, 0);
        downs := downs - coalesce((OLD.reaction = 'down')::int, 0);
    END IF;
    ups := coalesce(ups, 0);
    downs := coalesce(downs, 0);
    IF ups <> 0 OR downs <> 0 THEN
        INSERT INTO user_topic_affinity AS a (user_id, topic, weight, liked, disliked)
        SELECT NEW.user_id, t.topic, sum((ups - downs) * t.w * t.w), sum(ups * t.w * t.w), sum(downs * t.w * t.w)
        FROM posts p CROSS JOIN LATERAL unnest(p.topics, p.topic_weights) t(topic, w)
        WHERE p.id = NEW.post_id AND t.topic IS NOT NULL AND t.w IS NOT NULL
        GROUP BY t.topic
        ON CONFLICT (user_id, topic) DO UPDATE SET weight = a.weight + excluded.weight,
            liked = GREATEST(a.liked + excluded.liked, 0), disliked = GREATEST(a.disliked + excluded.disliked, 0);
    END IF;
    RETURN NULL;
END
$$
"""

PREVIOUS = """
CREATE OR REPLACE FUNCTION user_topic_affinity_from_reaction() RETURNS trigger LANGUAGE plpgsql AS $$
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
    op.add_column("user_topic_affinity", sa.Column("liked", sa.REAL(), server_default="0", nullable=False))
    op.add_column("user_topic_affinity", sa.Column("disliked", sa.REAL(), server_default="0", nullable=False))
    op.execute(FUNCTION)
    op.execute(
        """
        UPDATE user_topic_affinity a SET liked = s.liked, disliked = s.disliked
        FROM (SELECT d.user_id, t.topic,
                     sum(t.w * t.w) FILTER (WHERE d.reaction = 'up') AS liked,
                     sum(t.w * t.w) FILTER (WHERE d.reaction = 'down') AS disliked
              FROM deliveries d JOIN posts p ON p.id = d.post_id
              CROSS JOIN LATERAL unnest(p.topics, p.topic_weights) t(topic, w)
              WHERE d.reaction IN ('up', 'down') AND t.topic IS NOT NULL AND t.w IS NOT NULL
              GROUP BY 1, 2) s
        WHERE a.user_id = s.user_id AND a.topic = s.topic
        """
    )
    op.execute("UPDATE user_topic_affinity SET liked = coalesce(liked, 0), disliked = coalesce(disliked, 0)")


def downgrade() -> None:
    op.execute(PREVIOUS)
    op.drop_column("user_topic_affinity", "disliked")
    op.drop_column("user_topic_affinity", "liked")
