"""Which posts go into which digest: one set-based statement for any number of digests (no N+1).

For each digest, the eligible posts are the summarized posts since the user's last sent digest (or the
digest period for a first one) that were never delivered to them, score at least their minimum, and
match none of their muted keywords or domains. Reposts are collapsed: a repost is eligible only when
its original is neither delivered nor itself in the window.

Ranking: ``score x (1 + interest words in the title) x domain affinity x topic affinity``, where the
affinities come from the user's 👍/👎 (domain: +-25% per net reaction, at most +-50%; topic: +25% when
the title shares a word that two or more of their liked titles have, -25% likewise for dislikes).

Only plausible candidates are ranked: the top eligible posts by score (three times the digest size, per
user), posts whose title has an interest word or a liked topic (one hash join of (digest, word) pairs
with (post, title word) pairs), and posts from liked domains. A post outside those three sets has no boost
above 1, so it cannot outrank the top posts by score unless most of those are demoted by dislikes;
this bound keeps selection fast for many users and is documented in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER, TEXT
from sqlalchemy.orm import Session

# Words too common to say anything about a user's taste.
STOPWORDS = sorted(
    set(
        "a an and are as at be by can do for from has have how i in into is it its my new not of on or our "
        "show hn ask tell the their this to use using vs was we what when why will with you your".split()
    )
)
CANDIDATE_FACTOR = 3

SELECT_SQL = text(
    r"""
WITH d AS (
    SELECT g.id AS digest_id, g.user_id,
           -- a stored value of the wrong type (a row of an older version) counts as unset, as in
           -- service.preferences: one user's bad row must not fail the statement for every digest
           LEAST(GREATEST(coalesce(CASE WHEN jsonb_typeof(u.digest_preferences->'max_posts') = 'number'
                 THEN (u.digest_preferences->>'max_posts')::numeric END, 10), 1), 30)::int AS max_posts,
           LEAST(GREATEST(coalesce(CASE WHEN jsonb_typeof(u.digest_preferences->'min_score') = 'number'
                 THEN (u.digest_preferences->>'min_score')::numeric END, 0), 0), 2147483647)::int AS min_score,
           ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(u.digest_preferences->'muted_keywords') = 'array'
                      THEN u.digest_preferences->'muted_keywords' ELSE '[]'::jsonb END) x
                 WHERE x IS NOT NULL) AS muted_kw,
           ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(u.digest_preferences->'muted_domains') = 'array'
                      THEN u.digest_preferences->'muted_domains' ELSE '[]'::jsonb END) x
                 WHERE x IS NOT NULL) AS muted_dom,
           -- each interest word with its plural or singular ("databases" also meets "database")
           ARRAY(SELECT DISTINCT f FROM jsonb_array_elements_text(u.interests) i,
                 regexp_split_to_table(lower(i), '[^a-z0-9+#]+') w,
                 unnest(CASE WHEN length(w) > 3 AND w LIKE '%s' THEN ARRAY[w, left(w, -1)]
                             WHEN length(w) > 2 THEN ARRAY[w, w || 's'] ELSE ARRAY[w] END) f
                 WHERE w <> '' AND w <> ALL(:stopwords)) AS interest_words,
           coalesce((SELECT max(p.created_at) FROM digests p
                     WHERE p.user_id = g.user_id AND p.status = 'sent' AND p.id <> g.id
                       AND p.created_at < g.created_at),
                    g.created_at - CASE u.digest_preferences->>'frequency'
                        WHEN 'weekly' THEN interval '7 days' WHEN 'twice_daily' THEN interval '12 hours'
                        ELSE :lookback * interval '1 second' END) AS since
    FROM digests g JOIN users u ON u.id = g.user_id
    WHERE g.id = ANY(:digest_ids)
),
reacted AS (
    SELECT x.user_id, p.domain, p.keywords, CASE x.reaction WHEN 'up' THEN 1 ELSE -1 END AS s
    FROM deliveries x JOIN posts p ON p.id = x.post_id
    WHERE x.reaction IS NOT NULL AND x.user_id IN (SELECT user_id FROM d)
),
dom AS (
    SELECT user_id, array_agg(domain) FILTER (WHERE w > 0) AS liked, jsonb_object_agg(domain, w) AS weights
    FROM (SELECT user_id, domain, sum(s) AS w FROM reacted WHERE domain IS NOT NULL GROUP BY 1, 2) t
    GROUP BY user_id
),
topic AS (
    SELECT user_id,
           coalesce(array_agg(k) FILTER (WHERE w >= 2), '{}') AS liked,
           coalesce(array_agg(k) FILTER (WHERE w <= -2), '{}') AS disliked
    FROM (SELECT user_id, k, sum(s) AS w FROM reacted, unnest(keywords) k
          WHERE k <> '' AND k <> ALL(:stopwords) AND k !~ '^[0-9]+$' AND position('.' in k) = 0
          GROUP BY 1, 2) t
    GROUP BY user_id
),
du AS MATERIALIZED (
    SELECT d.*, coalesce(dom.liked, '{}') AS liked_domains, coalesce(dom.weights, '{}') AS domain_weights,
           coalesce(topic.liked, '{}') AS liked_topics, coalesce(topic.disliked, '{}') AS disliked_topics
    FROM d LEFT JOIN dom ON dom.user_id = d.user_id LEFT JOIN topic ON topic.user_id = d.user_id
),
-- the posts any of these digests may take, once
wp AS MATERIALIZED (
    SELECT id, score, domain, keywords, repost_of_post_id, summarized_at FROM posts
    WHERE summarized_at > (SELECT min(since) FROM du)
),
wk AS (SELECT wp.id AS post_id, k FROM wp, unnest(wp.keywords) k),
-- candidates with their interest hits: title words met by interest words or liked topics (one hash
-- join of (digest, word) with (post, word) pairs), the best by score, and posts from liked domains
candidates AS (
    SELECT digest_id, post_id, max(interest_hits) AS interest_hits FROM (
        SELECT uw.digest_id, wk.post_id, count(*) FILTER (WHERE uw.interest) AS interest_hits
        FROM (SELECT digest_id, w, true AS interest FROM du, unnest(du.interest_words) w
              UNION ALL SELECT digest_id, w, false FROM du, unnest(du.liked_topics) w) uw
        JOIN wk ON wk.k = uw.w
        GROUP BY 1, 2
        UNION ALL
        SELECT du.digest_id, c.id, 0 FROM du CROSS JOIN LATERAL (
            -- every eligibility rule here too, so muted posts and reposts cannot take the places
            SELECT p.id FROM posts p
            WHERE p.summarized_at > du.since AND p.score >= du.min_score
              AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.user_id = du.user_id AND x.post_id = p.id)
              AND NOT (p.keywords && du.muted_kw)
              AND NOT (coalesce(p.domain, '') = ANY(du.muted_dom))
              AND (p.repost_of_post_id IS NULL OR (
                    NOT EXISTS (SELECT 1 FROM deliveries x
                                WHERE x.user_id = du.user_id AND x.post_id = p.repost_of_post_id)
                    AND NOT EXISTS (SELECT 1 FROM posts o
                                    WHERE o.id = p.repost_of_post_id AND o.summarized_at > du.since)))
            ORDER BY p.score DESC LIMIT du.max_posts * :factor) c
        UNION ALL
        SELECT du.digest_id, wp.id, 0 FROM du CROSS JOIN unnest(du.liked_domains) ld JOIN wp ON wp.domain = ld
    ) c
    GROUP BY 1, 2
),
delivered AS MATERIALIZED (
    SELECT x.user_id, x.post_id FROM deliveries x WHERE x.user_id IN (SELECT user_id FROM du)
),
ranked AS (
    SELECT du.digest_id, du.user_id, du.max_posts, p.id AS post_id,
           p.score::float8
             * (1 + c.interest_hits)
             * (1 + 0.25 * GREATEST(-2, LEAST(2, coalesce((du.domain_weights->>p.domain)::int, 0))))
             * (1 + 0.25 * ((p.keywords && du.liked_topics)::int - (p.keywords && du.disliked_topics)::int))
             AS rank
    FROM candidates c
    JOIN du ON du.digest_id = c.digest_id
    JOIN wp p ON p.id = c.post_id
    LEFT JOIN delivered dv ON dv.user_id = du.user_id AND dv.post_id = p.id
    WHERE dv.post_id IS NULL
      AND p.summarized_at > du.since
      AND p.score >= du.min_score
      AND NOT (p.keywords && du.muted_kw)
      AND NOT (coalesce(p.domain, '') = ANY(du.muted_dom))
      AND (p.repost_of_post_id IS NULL OR (
            NOT EXISTS (SELECT 1 FROM delivered x WHERE x.user_id = du.user_id AND x.post_id = p.repost_of_post_id)
            AND NOT EXISTS (SELECT 1 FROM wp o WHERE o.id = p.repost_of_post_id AND o.summarized_at > du.since)))
)
SELECT digest_id, user_id, post_id, rank, position FROM (
    SELECT ranked.*, row_number() OVER (PARTITION BY digest_id ORDER BY rank DESC, post_id DESC) AS position
    FROM ranked
) t
WHERE position <= max_posts
ORDER BY digest_id, position
"""
).bindparams(
    bindparam("digest_ids", type_=ARRAY(INTEGER)),
    bindparam("stopwords", type_=ARRAY(TEXT)),
)


RESERVE_SQL = text(
    "WITH picks AS MATERIALIZED (\n"  # noqa: S608 - composed of this module's constant SQL only
    + str(SELECT_SQL.text).replace("ORDER BY digest_id, position", "")
    + """),
reserved AS (
    INSERT INTO deliveries (user_id, post_id, batch_id)
    SELECT p.user_id, p.post_id, g.batch_id FROM picks p JOIN digests g ON g.id = p.digest_id
    ORDER BY p.digest_id, p.position
    ON CONFLICT (user_id, post_id) DO NOTHING
    RETURNING user_id, batch_id
),
counts AS (
    SELECT g.id, count(r.user_id) AS n FROM digests g
    LEFT JOIN reserved r ON r.user_id = g.user_id AND r.batch_id = g.batch_id
    WHERE g.id = ANY(:digest_ids) GROUP BY g.id
)
UPDATE digests SET status = CASE WHEN counts.n > 0 THEN 'sending' ELSE 'empty' END, post_count = counts.n
FROM counts WHERE digests.id = counts.id AND digests.status = 'pending'
RETURNING digests.id, digests.post_count
"""
).bindparams(
    bindparam("digest_ids", type_=ARRAY(INTEGER)),
    bindparam("stopwords", type_=ARRAY(TEXT)),
)


def _plan_settings(session: Session) -> None:
    # A large plan: JIT compilation would cost more than the query itself.
    session.execute(text("SET LOCAL jit = off"))


@dataclass(frozen=True)
class Pick:
    digest_id: int
    user_id: int
    post_id: int
    rank: float
    position: int


def select_posts(*, session: Session, digest_ids: list[int], lookback: timedelta) -> dict[int, list[Pick]]:
    """The ranked posts of each digest (digest id -> picks in digest order; missing ids have none)."""
    if not digest_ids:
        return {}
    _plan_settings(session)
    rows = session.execute(
        SELECT_SQL,
        {
            "digest_ids": list(digest_ids),
            "stopwords": STOPWORDS,
            "lookback": lookback.total_seconds(),
            "factor": CANDIDATE_FACTOR,
        },
    )
    picks: dict[int, list[Pick]] = {}
    for row in rows:
        picks.setdefault(row.digest_id, []).append(
            Pick(row.digest_id, row.user_id, row.post_id, row.rank, row.position)
        )
    return picks


def reserve_posts(*, session: Session, digest_ids: list[int], lookback: timedelta) -> dict[int, int]:
    """Select and reserve in one statement: the picks become ``deliveries`` rows (in digest order, so
    their ids keep it) and each pending digest becomes ``sending`` (or ``empty``). Digest id -> posts."""
    if not digest_ids:
        return {}
    _plan_settings(session)
    rows = session.execute(
        RESERVE_SQL,
        {
            "digest_ids": list(digest_ids),
            "stopwords": STOPWORDS,
            "lookback": lookback.total_seconds(),
            "factor": CANDIDATE_FACTOR,
        },
    )
    return {row.id: row.post_count for row in rows}
