"""Relevance bookkeeping: topics once per post, topics once per interest phrase, explanations.

The digest selection (``hnpal.deliveries.selection``) reads what this module stores: it never runs the
model itself, so its cost does not grow with the model, and the model's cost grows with posts and
distinct interests, never with users.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER, REAL, TEXT
from sqlalchemy.orm import Session

from hnpal.relevance.model import MAX_TOPICS, MIN_PROB, MODEL_NAME, PostText, model, topic_name

log = logging.getLogger(__name__)
BATCH = 500


def phrase_sql(expr: str) -> str:
    """How an interest phrase is keyed, in SQL: the selection and :func:`map_interests` use the same."""
    return f"left(lower(btrim(regexp_replace({expr}, '\\s+', ' ', 'g'))), 200)"


# A post's topics and weights with what the configured model chose for it (``llm``: NULL or empty, the
# offline model's alone): each topic weighs (1 - LLM_WEIGHT) x the offline model's probability, plus
# LLM_WEIGHT x 1, 0.8, 0.6 for the configured model's first, second and third choice (it names the most
# important first); the MAX_TOPICS heaviest of at least MIN_PROB are kept, as classify keeps them. One SQL
# expression, so a writer reads llm_topics from the row it writes (under its lock): the offline model's
# recomputation and the labelling cannot undo each other.
LLM_WEIGHT = 0.5
BLENDED = """(topics, topic_weights) = (
    SELECT coalesce(array_agg(b.t ORDER BY b.w DESC, b.t), '{{}}'),
           coalesce(array_agg(b.w ORDER BY b.w DESC, b.t), '{{}}')
    FROM (SELECT u.t, CASE WHEN coalesce(cardinality({llm}), 0) = 0 THEN max(u.w)
                           ELSE ((1 - :llm_weight) * max(u.w) + :llm_weight * max(u.chosen))::real END AS w
          FROM (SELECT x.t, x.w, 0::float8 AS chosen FROM unnest({topics}, {weights}) x(t, w)
                UNION ALL SELECT c.t, 0, 1 - 0.2 * (c.n - 1) FROM unnest({llm}) WITH ORDINALITY c(t, n)) u
          WHERE u.t IS NOT NULL GROUP BY u.t
          ORDER BY 2 DESC, 1 LIMIT :max_topics) b
    WHERE b.w >= :min_prob)"""
BLEND_PARAMS = {"llm_weight": LLM_WEIGHT, "max_topics": MAX_TOPICS, "min_prob": MIN_PROB}


# Posts without topics (given ones, or any); with ``since``, also those of that period whose topics an earlier
# model computed (a new model recomputes the posts digests may still pick, once each).
_MISSING_POSTS = text(
    "SELECT id, title, url, domain FROM posts "
    "WHERE (topics IS NULL OR (CAST(:since AS timestamptz) IS NOT NULL AND topics_model IS DISTINCT FROM :model)) "
    "AND (:all OR id = ANY(:ids)) "
    "AND (CAST(:since AS timestamptz) IS NULL OR summarized_at > :since) ORDER BY id LIMIT :n"
).bindparams(bindparam("ids", type_=ARRAY(INTEGER)))


def classify_posts(
    *,
    session: Session,
    post_ids: list[int] | None = None,
    texts: dict[int, str] | None = None,
    since: datetime | None = None,
    limit: int = 50_000,
) -> int:
    """Compute and store the topics of posts that have none yet (``post_ids``, or any post summarized
    after ``since``): once per post and model; a post whose topics this model computed is never recomputed,
    and with ``since`` those an earlier model computed are. ``texts`` adds a post's own text (HN text) to
    what the model reads. Returns how many posts got topics."""
    done = 0
    while done < limit:
        rows = session.execute(
            _MISSING_POSTS,
            {
                "all": post_ids is None,
                "ids": post_ids or [],
                "since": since,
                "n": min(BATCH, limit - done),
                "model": MODEL_NAME,
            },
        ).all()
        if not rows:
            break
        found = model().classify([PostText(r.title, r.url, r.domain, (texts or {}).get(r.id)) for r in rows])
        # unnest of a two-dimensional array flattens it, so each post's topics go as one text literal; what
        # the configured model said of a post (llm_topics, read from the row being written) is blended in
        session.execute(
            text(
                f"""
                UPDATE posts p
                SET {BLENDED.format(topics="v.topics::text[]", weights="v.weights::real[]", llm="p.llm_topics")},
                    topics_model = :model
                FROM unnest(:ids, :topics, :weights) AS v(id, topics, weights)
                WHERE p.id = v.id AND (p.topics IS NULL OR p.topics_model IS DISTINCT FROM :model)
                """  # noqa: S608 - this module's constant SQL only
            ).bindparams(
                bindparam("ids", type_=ARRAY(INTEGER)),
                bindparam("topics", type_=ARRAY(TEXT)),
                bindparam("weights", type_=ARRAY(TEXT)),
            ),
            {
                "ids": [r.id for r in rows],
                "topics": [_pg_array(list(f)) for f in found],
                "weights": [_pg_array([str(w) for w in f.values()]) for f in found],
                "model": MODEL_NAME,
                **BLEND_PARAMS,
            },
        )
        done += len(rows)
        if post_ids is not None or len(rows) < BATCH:
            break
    return done


def classify_new(*, post_ids: list[int], texts: dict[str, str] | None = None) -> int:
    """:func:`classify_posts` for newly fetched posts, in its own transaction (the job ingest enqueues;
    ``texts``: post id, as JSON keys are, -> the start of its HN text). Returns how many got topics."""
    from hnpal.db.session import session_scope

    own = {int(k): v for k, v in (texts or {}).items()}
    with session_scope() as session:
        return classify_posts(session=session, post_ids=[int(i) for i in post_ids], texts=own)


def _pg_array(items: list[str]) -> str:
    return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"


_MISSING_PHRASES = text(
    f"""
    WITH g AS MATERIALIZED (  -- each digest's user by primary keys (not a scan of every digest and user)
        SELECT g.user_id, g.interests FROM unnest(:digest_ids) r(id) CROSS JOIN LATERAL (
            SELECT g.user_id, u.interests FROM digests g JOIN users u ON u.id = g.user_id WHERE g.id = r.id OFFSET 0) g
    )
    SELECT DISTINCT k FROM (
        SELECT {phrase_sql("i")} AS k
        FROM g CROSS JOIN LATERAL jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(g.interests) = 'array' THEN g.interests ELSE '[]'::jsonb END) i
        UNION ALL
        SELECT {phrase_sql("m.content")}
        FROM g CROSS JOIN LATERAL (
            SELECT m.content FROM memory m WHERE m.user_id = g.user_id AND m.active AND m.type = 'interest' OFFSET 0) m
    ) x
    WHERE k <> '' AND NOT EXISTS (SELECT 1 FROM interest_topics t WHERE t.phrase = x.k AND t.model = :model)
    """  # noqa: S608 - this module's constant SQL only
).bindparams(bindparam("digest_ids", type_=ARRAY(INTEGER)))
_STORE_PHRASE = text(
    """
    INSERT INTO interest_topics (phrase, topics, weights, model) VALUES (:phrase, :topics, :weights, :model)
    ON CONFLICT (phrase) DO UPDATE SET topics = excluded.topics, weights = excluded.weights, model = excluded.model
    """
).bindparams(bindparam("topics", type_=ARRAY(TEXT)), bindparam("weights", type_=ARRAY(REAL)))


def map_interests(*, session: Session, digest_ids: list[int]) -> int:
    """Map the interest phrases of these digests' users (their interests and active interest memory)
    that have no topics yet: once per distinct phrase. Returns how many were mapped."""
    return _store_meanings(
        session, list(session.scalars(_MISSING_PHRASES, {"digest_ids": list(digest_ids), "model": MODEL_NAME}))
    )


_MISSING_GIVEN = text(
    f"""
    SELECT DISTINCT k FROM (SELECT {phrase_sql("x")} AS k FROM unnest(:phrases) x) p
    WHERE k <> '' AND NOT EXISTS (SELECT 1 FROM interest_topics t WHERE t.phrase = p.k AND t.model = :model)
    """  # noqa: S608 - this module's constant SQL only
).bindparams(bindparam("phrases", type_=ARRAY(TEXT)))


def map_phrases(*, session: Session, phrases: list[str]) -> int:
    """Map these interest phrases (a reader's new interests) that have no topics yet."""
    if not phrases:
        return 0
    return _store_meanings(session, list(session.scalars(_MISSING_GIVEN, {"phrases": phrases, "model": MODEL_NAME})))


def _store_meanings(session: Session, keys: list[str]) -> int:
    """What each phrase key means (the model), stored in interest_topics: one statement for all."""
    if keys:
        meanings = [(key, model().interest_topics(key)) for key in keys]
        session.execute(
            _STORE_PHRASE,
            [{"phrase": k, "topics": list(m), "weights": list(m.values()), "model": MODEL_NAME} for k, m in meanings],
        )
    return len(keys)


def explain(reason: str | None) -> str | None:
    """The one short line under a post that says why it is in the digest (None: picked by score)."""
    if not reason:
        return None
    kind, _, value = reason.partition(":")
    if kind == "topic":
        return topic_name(value)
    if kind == "learned":
        return f"{topic_name(value)} · 👍 on similar posts"
    if kind == "word":
        return f"you follow “{value}”"
    if kind == "top":
        return "one of today's top stories"
    return None


_IN_USE = text(
    f"""
    SELECT 'declared' AS kind, i AS label, t.topics
    FROM users u CROSS JOIN LATERAL jsonb_array_elements_text(
             CASE WHEN jsonb_typeof(u.interests) = 'array' THEN u.interests ELSE '[]'::jsonb END) i
    LEFT JOIN interest_topics t ON t.phrase = {phrase_sql("i")}
    WHERE u.id = :user_id
    UNION ALL
    SELECT DISTINCT ON (lower(m.content)) 'remembered', m.content, t.topics
    FROM memory m LEFT JOIN interest_topics t ON t.phrase = {phrase_sql("m.content")}
    WHERE m.user_id = :user_id AND m.active AND m.type = 'interest' AND m.source_type <> 'onboarding'
    UNION ALL
    (SELECT 'learned', a.topic, NULL FROM user_topic_affinity a
     WHERE a.user_id = :user_id AND a.weight >= 0.5 ORDER BY a.weight DESC LIMIT 3)
    """  # noqa: S608 - this module's constant SQL only
)


@dataclass(frozen=True)
class InterestsInUse:
    declared: list[str]  # "distributed systems → Distributed systems", "sourdough"
    remembered: list[str]  # interests learned in discussions
    learned: list[str]  # topic names the reader's 👍 taught


def interests_in_use(*, session: Session, user_id: int) -> InterestsInUse:
    """What the digest selection uses for a reader, in words: typed and chosen interests (with the topics
    they mean, when that says more than the interest itself), remembered ones, and topics learned from 👍."""
    declared: list[str] = []
    remembered: list[str] = []
    learned: list[str] = []
    for kind, label, topics in session.execute(_IN_USE, {"user_id": user_id}):
        if kind == "learned":
            learned.append(topic_name(label))
            continue
        names = [topic_name(t) for t in (topics or [])]
        shown = label if not names or names[0].casefold() == label.casefold() else f"{label} → {', '.join(names)}"
        (declared if kind == "declared" else remembered).append(shown)
    return InterestsInUse(declared, remembered, learned)
