"""topic evidence: how strongly a reader's 👍 and 👎 point at each topic being what they read for

``user_topic_affinity.evidence``: the log-likelihood ratio, summed over the posts a user reacted to, that
the topic is the one they like: a liked post adds ln(w / 0.03) and a disliked one ln((1 - w) / 0.97), where
w is how much the post is about the topic (0.03, the least probability a post's topics keep, stands for a
topic the post is not about). The selection turns it into a posterior over topics for a reader who only
reacted. Filled from the reactions already stored.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 10:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ln(w / 0.03) for a like, ln((1 - w) / 0.97) for a dislike, w kept within [0.03, 0.97]
EVIDENCE = (
    "ln(LEAST(GREATEST(t.w, 0.03), 0.97) / 0.03)",
    "ln((1 - LEAST(GREATEST(t.w, 0.03), 0.97)) / 0.97)",
)

FUNCTION = f"""
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
        INSERT INTO user_topic_affinity AS a (user_id, topic, weight, liked, disliked, evidence)
        SELECT NEW.user_id, t.topic, sum((ups - downs) * t.w * t.w), sum(ups * t.w * t.w), sum(downs * t.w * t.w),
               sum(ups * {EVIDENCE[0]} + downs * {EVIDENCE[1]})
        FROM posts p CROSS JOIN LATERAL unnest(p.topics, p.topic_weights) t(topic, w)
        WHERE p.id = NEW.post_id AND t.topic IS NOT NULL AND t.w IS NOT NULL
        GROUP BY t.topic
        ON CONFLICT (user_id, topic) DO UPDATE SET weight = a.weight + excluded.weight,
            liked = GREATEST(a.liked + excluded.liked, 0), disliked = GREATEST(a.disliked + excluded.disliked, 0),
            evidence = a.evidence + excluded.evidence;
    END IF;
    RETURN NULL;
END
$$
"""  # noqa: S608 - this module's constant SQL only

PREVIOUS = """
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


def upgrade() -> None:
    op.add_column("user_topic_affinity", sa.Column("evidence", sa.REAL(), server_default="0", nullable=False))
    op.execute(FUNCTION)
    op.execute(
        f"""
        UPDATE user_topic_affinity a SET evidence = s.evidence
        FROM (SELECT d.user_id, t.topic,
                     sum(CASE WHEN d.reaction = 'up' THEN {EVIDENCE[0]} ELSE {EVIDENCE[1]} END) AS evidence
              FROM deliveries d JOIN posts p ON p.id = d.post_id
              CROSS JOIN LATERAL unnest(p.topics, p.topic_weights) t(topic, w)
              WHERE d.reaction IN ('up', 'down') AND t.topic IS NOT NULL AND t.w IS NOT NULL
              GROUP BY 1, 2) s
        WHERE a.user_id = s.user_id AND a.topic = s.topic
        """  # noqa: S608 - this module's constant SQL only
    )


def downgrade() -> None:
    op.execute(PREVIOUS)
    op.drop_column("user_topic_affinity", "evidence")
