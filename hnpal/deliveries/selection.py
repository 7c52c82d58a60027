"""Which posts go into which digest: one set-based statement for any number of digests (no N+1).

For each digest, the eligible posts are the summarized posts since the user's last sent digest (or the
digest period for a first one) that were never delivered to them, score at least their minimum, and
match none of their muted keywords or domains. Reposts are collapsed: a repost is eligible only when
its original is neither delivered nor itself in the window.

Ranking: a reader with interests (topic buttons, typed or remembered interests, topics their 👍 taught)
gets the posts most about them first, best-rated second (see RANKING); a reader who only reacted is served
as a bandit over topics (how likely each topic is the one they read for, given their 👍 and 👎, and places
for subjects not tried yet); a reader with neither gets ``score x (1 + interest words in the title) x
domain affinity x title-word affinity``, the affinities from their 👍/👎 (domain: +-25% per net reaction,
at most +-50%; title word: +25% when the title shares a word that two or more of their liked titles have,
-25% likewise for dislikes).

Only posts that can make the digest are ranked. For a digest ranked by score the result is exact: every
post whose factor is not 1 (an interest word or a liked or disliked word in the title: one hash join of
(digest, word) with (post, title word) pairs; a domain the user reacted to), plus, per digest, the
``max_posts`` best by (score, id) among the eligible posts that no dislike demotes. Each of those ranks at
least at its score, so any post left out (factor 1, rank = its score, below all of them by (score, id))
cannot beat them: ties go to the higher post id, as in the final order. Those best by score also set a
floor: the digest's last place ranks at least at the lowest of their scores, so a candidate whose rank
cannot reach it is dropped before the ranking's joins and sort. A digest ranked by relevance takes each of
its topics' best posts (computed once per statement), the word and domain matches, and its best by score
only when its topics have few posts it was not sent; of the posts only its topics brought, it ranks the
``max_posts`` + ``per_topic`` best before affinities (only an affinity, which they lack, reorders them).

Per candidate row the statement does little: each user's exclusions (posts already delivered among
those in reach, mutes, reacted domains and topics) are small arrays on the digest's row, checked only
for users who have any. The affinities are read from ``user_affinity`` (net reactions per domain and
title word, kept by triggers on ``deliveries``), not summed from every reaction of the user's history.

Reserving the picks writes ten or so ``deliveries`` rows per digest. The table has no foreign keys (a
check per row was a quarter of the statement's time): the statement locks each digest's user row and the
posts it reads FOR KEY SHARE, as a foreign key check would but once per row read, and triggers on
``users`` and ``posts`` delete a deleted row's deliveries, as ON DELETE CASCADE did (migration 0006).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER, TEXT
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hnpal.relevance.model import MUTE_MIN, mute_aliases
from hnpal.relevance.service import phrase_sql

# Words too common to say anything about a user's taste.
STOPWORDS = sorted(
    set(
        "a an and are as at be by can do for from has have how i in into is it its my new not of on or our "
        "show hn ask tell the their this to use using vs was we what when why will with you your".split()
    )
)

# Whether post ``p`` may go into digest ``du`` (the ranking below checks the same, in its own terms).
ELIGIBLE = """(p.summarized_at > du.since AND p.score >= du.min_score
          AND (NOT du.particular OR (p.id <> ALL(du.seen)
               AND NOT (p.keywords && du.muted_kw)
               AND {phrase_mutes} AND {topic_mutes}
               AND NOT (coalesce(p.domain, '') = ANY(du.muted_dom))
               AND NOT (coalesce(p.domain, '') = ANY(du.disliked_domains))
               AND NOT (p.keywords && du.disliked_topics)))
          AND (p.repost_of_post_id IS NULL OR (
                p.repost_of_post_id <> ALL(du.seen)
                AND NOT EXISTS (SELECT 1 FROM posts o
                                WHERE o.id = p.repost_of_post_id AND o.summarized_at > du.since))))"""
# A candidate's relevance, in ranked. For a reader who chose or typed interests: what those and the liked
# topics say (cagg: their weights times how much the post is about each), less a disliked subject's weight
# times how much the post is about its main topic. For a reader who only reacted (learning): how likely they
# are to like the post: over its topics, how much it is about each times how likely that topic is the one they
# read for (ut_m, the posterior; ut_m0 for a topic their reactions never touched).
REL = """(CASE WHEN du.exploring THEN coalesce((
              SELECT sum(t.w * coalesce(du.ut_m[array_position(du.ut_topics, t.topic)], du.ut_m0))
              FROM unnest(p.topics, p.topic_weights) t(topic, w)), 0)
         ELSE c.rel + LEAST(coalesce(du.ut_weights[array_position(du.ut_topics, p.topics[1])], 0), 0)
                      * coalesce(p.topic_weights[1], 0) END)"""
# Whether post p's title holds none of the digest's muted phrases (checked only for users who have any).
PHRASE_MUTES = """((du.muted_seq = '{}' OR NOT EXISTS (
                    SELECT 1 FROM unnest(du.muted_seq) m
                    WHERE position(m IN ' ' || regexp_replace(lower(p.title), '[^a-z0-9+#]+', ' ', 'g') || ' ') > 0))
               AND (du.muted_text = '{}' OR NOT EXISTS (
                    SELECT 1 FROM unnest(du.muted_text) m WHERE position(m IN lower(normalize(p.title, NFKC))) > 0)))"""
# Whether post p is about none of the digest's muted topics (muted keywords that name one: "rust" also mutes
# "Announcing Tokio 1.0"), at :mute_min or more (checked only for users who have any).
TOPIC_MUTES = """(NOT (p.topics && du.muted_topics) OR NOT EXISTS (
                    SELECT 1 FROM unnest(p.topics, p.topic_weights) t(topic, w)
                    WHERE t.w >= :mute_min AND t.topic = ANY(du.muted_topics)))"""
TOP_K = 100  # the window's best by score each digest looks through first

# How a digest with interests (declared, typed or learned) ranks its posts: (relevance + WORD x interest words
# in the title, at most two) x (1 + BETA x ln(1 + score)). Relevance is the sum over the user's topics of
# their weight x the post's probability of being about it (topic pairs below MIN_REL are not joined); a
# learned dislike weighs NEG of a like. The window's best story, when it scores UNMISSABLE times its tenth
# best, takes one place in every digest of five or more that is ranked by relevance (by score, it leads
# anyway). A post's "why" names its strongest topic when its relevance is at least MIN_REASON.
#
# A reader who only reacted (learning) is served as a bandit over topics: how likely each topic is the one
# they read for, a posterior from a uniform prior over the topics and the evidence of each 👍 and 👎
# (``user_topic_affinity.evidence``, tempered by TEMPER: the model's probabilities are not that sure), ranks
# the posts they have shown to like; up to EXPLORE_SLOTS places (all of them until something is liked at least
# MIN_LIKE) go to the window's best post of subjects not TRIED yet (reactions to it weighing TRIED), the most
# common first, so that a reader finds what they like in a few digests. The places shrink as the posterior
# settles: EXPLORE_SLOTS x (1 - the likeliest topic's probability), rounded (a reader whose 👍 all point one
# way gets a digest of it). Each subject offers its EXPLORE_DEPTH best posts.
RANKING = {"word": 0.3, "beta": 0.02, "neg": 0.5, "min_rel": 0.05, "unmissable": 3.0, "min_reason": 0.2,
           "unmissable_window": 50, "per_topic": 5, "topics_joined": 3, "per_topic_learning": 50,
           "temper": 0.5, "tried": 0.8, "min_like": 0.1, "explore_slots": 2, "explore_depth": 3}  # fmt: skip
if _tuning := os.environ.get("HNPAL_RANKING"):  # bench experiments only: JSON overrides
    RANKING.update(json.loads(_tuning))

SELECT_SQL = text(
    r"""
WITH d AS MATERIALIZED (
    SELECT g.id AS digest_id, g.user_id, g.batch_id,
           -- a stored value of the wrong type (a row of an older version) counts as unset, as in
           -- service.preferences: one user's bad row must not fail the statement for every digest
           LEAST(GREATEST(coalesce(CASE WHEN jsonb_typeof(g.digest_preferences->'max_posts') = 'number'
                 THEN (g.digest_preferences->>'max_posts')::numeric END, 10), 1), 30)::int AS max_posts,
           LEAST(GREATEST(coalesce(CASE WHEN jsonb_typeof(g.digest_preferences->'min_score') = 'number'
                 THEN (g.digest_preferences->>'min_score')::numeric END, 0), 0), 2147483647)::int AS min_score,
           -- muted keywords: single words meet the title's words (keywords); several ASCII words meet
           -- them in sequence ("machine learning", "node.js": ' node js '); any other script is found
           -- in the NFKC, lower-cased title ("café", "日本")
           ARRAY(SELECT x FROM unnest(g.mutes) x WHERE x ~ '^[a-z0-9+#]+$') AS muted_kw,
           ARRAY(SELECT ' ' || btrim(regexp_replace(x, '[^a-z0-9+#]+', ' ', 'g')) || ' ' FROM unnest(g.mutes) x
                 WHERE x !~ '^[a-z0-9+#]+$' AND x !~ '[^\x01-\x7f]' AND x ~ '[a-z0-9+#]') AS muted_seq,
           ARRAY(SELECT x FROM unnest(g.mutes) x WHERE x ~ '[^\x01-\x7f]') AS muted_text, g.mutes,
           -- the topics the muted keywords name (model.mute_aliases: "rust", "llm"), muted by meaning too
           CASE WHEN g.mutes = '{}' THEN '{}' ELSE ARRAY(
               SELECT a.topic FROM unnest(:mute_phrases, :mute_topics) a(phrase, topic)
               WHERE a.phrase = ANY(g.mutes)) END AS muted_topics,
           ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(
                 CASE WHEN jsonb_typeof(g.digest_preferences->'muted_domains') = 'array'
                      THEN g.digest_preferences->'muted_domains' ELSE '[]'::jsonb END) x
                 WHERE x IS NOT NULL) AS muted_dom,
           g.interests,
           coalesce((SELECT max(p.created_at) FROM digests p
                     WHERE p.user_id = g.user_id AND p.status = 'sent' AND p.id <> g.id
                       AND p.created_at < g.created_at),
                    g.created_at - CASE g.digest_preferences->>'frequency'
                        WHEN 'weekly' THEN interval '7 days' WHEN 'twice_daily' THEN interval '12 hours'
                        ELSE :lookback * interval '1 second' END) AS since
    -- each digest and its user by primary key (not a scan of all users per chunk), the user's row locked
    -- FOR KEY SHARE: what a foreign key check takes, once per digest instead of once per reserved row. A
    -- purge of the user waits for this transaction (then its trigger deletes what this one reserved), and a
    -- user purged meanwhile is skipped.
    FROM unnest(:digest_ids) AS r(id)
    CROSS JOIN LATERAL (
        SELECT g.*, u.interests, u.digest_preferences,
               ARRAY(SELECT lower(normalize(x, NFKC)) FROM jsonb_array_elements_text(
                     CASE WHEN jsonb_typeof(u.digest_preferences->'muted_keywords') = 'array'
                          THEN u.digest_preferences->'muted_keywords' ELSE '[]'::jsonb END) x
                     WHERE x IS NOT NULL AND btrim(x) <> '') AS mutes
        FROM digests g JOIN users u ON u.id = g.user_id
        WHERE g.id = r.id OFFSET 0 FOR KEY SHARE OF u
    ) g
),
-- each interest word (of users.interests and of the active 'interest' memory: what onboarding, reactions and
-- discussions taught) with its plural or singular ("databases" also meets "database")
phrases AS MATERIALIZED (
    SELECT d.digest_id, i, {phrase} AS k
    FROM d CROSS JOIN LATERAL (
             SELECT i FROM jsonb_array_elements_text(d.interests) i
             UNION ALL
             SELECT m.content FROM memory m WHERE m.user_id = d.user_id AND m.active AND m.type = 'interest'
         ) x(i)
),
-- the words of the interests that mean no topic (interest_topics: "sourdough bread"), each with its plural
-- or singular ("databases" also meets "database"); an interest that means topics counts through them only
-- (the words of "distributed systems" or "game development" would meet every title with "systems", and
-- the posts a word like "rust" meets are among those the model puts under its topic)
iw AS MATERIALIZED (
    SELECT DISTINCT p.digest_id, f AS w
    FROM phrases p,
         regexp_split_to_table(lower(p.i), '[^a-z0-9+#]+') w,
         unnest(CASE WHEN length(w) > 3 AND w LIKE '%s' THEN ARRAY[w, left(w, -1)]
                     WHEN length(w) > 2 THEN ARRAY[w, w || 's'] ELSE ARRAY[w] END) f
    WHERE w <> '' AND w <> ALL(:stopwords)
      AND NOT EXISTS (SELECT 1 FROM interest_topics t WHERE t.phrase = p.k AND t.topics <> '{}')
),
-- each digest's topics: what its user's interests mean (interest_topics: once per distinct phrase) and what
-- their 👍/👎 taught (user_topic_affinity: net reactions weighted by how much each post was about the topic;
-- liked topics relative to the most liked one, at most 1; a disliked one down to -:neg)
ut0 AS MATERIALIZED (
    SELECT digest_id, topic, max(declared) AS declared, sum(learned) AS learned, sum(liked) AS liked,
           sum(liked + disliked) AS tried, :temper * sum(evidence) AS evidence
    FROM (
        SELECT p.digest_id, t.topic, t.w::float8 AS declared, 0::float8 AS learned, 0::float8 AS liked,
               0::float8 AS disliked, 0::float8 AS evidence
        FROM phrases p JOIN interest_topics it ON it.phrase = p.k
        CROSS JOIN LATERAL unnest(it.topics, it.weights) t(topic, w)
        UNION ALL
        SELECT d.digest_id, a.topic, 0,
               CASE WHEN a.weight > 0 THEN a.weight / GREATEST(max(a.weight) OVER (PARTITION BY d.digest_id), 1)
                    ELSE GREATEST(a.weight, -1) * :neg END, a.liked, a.disliked, a.evidence
        FROM d JOIN user_topic_affinity a ON a.user_id = d.user_id
        -- the chunk's users by the primary key (the planner otherwise hashes a scan of every user's rows)
        WHERE a.user_id = ANY(ARRAY(SELECT user_id FROM d))
          AND (abs(a.weight) >= 0.05 OR a.liked >= 0.05 OR a.disliked >= 0.05)
    ) x
    GROUP BY 1, 2
),
-- for a reader who only reacted: how likely each topic is the one they read for (m), given their 👍 and 👎
-- (a uniform prior over the topics, and the evidence of each reaction), relative to the likeliest topic
-- (1: the posterior's common factor does not change a ranking); m0, a topic their reactions never touched
ut AS MATERIALIZED (
    SELECT digest_id, topic, declared, learned, liked, tried, exp(evidence - top) AS m, exp(-top) AS m0
    FROM (SELECT ut0.*, GREATEST(max(evidence) OVER (PARTITION BY digest_id), 0) AS top FROM ut0) u
),
-- digests whose user has interests or reacted to posts with topics: ranked by relevance first, score second
profiled AS MATERIALIZED (
    SELECT digest_id FROM ut UNION SELECT digest_id FROM iw
),
-- of those, the digests of users who declared nothing (learning from reactions alone): some of their places
-- (all of them until they like something) go to the window's best of subjects they were not shown yet
exploring AS MATERIALIZED (
    SELECT digest_id FROM ut GROUP BY 1 HAVING max(declared) = 0
    EXCEPT SELECT digest_id FROM iw
),
-- the posts any of these digests may take, once, locked like the users (ranked takes its posts from here, so
-- a post deleted meanwhile is not reserved)
wp AS MATERIALIZED (
    SELECT id, score, domain, keywords, repost_of_post_id, summarized_at, topics, topic_weights, title FROM posts
    WHERE summarized_at > (SELECT min(since) FROM d)
    FOR KEY SHARE
),
-- what each user was sent already, among those posts and the originals of their reposts; the lower bound on
-- post_id follows from the IN list and keeps each user's scan of the (user_id, post_id) index to the window's
-- ids (posts get ids as they are fetched): a user's older history is not read (a year of daily digests is
-- thousands of rows per user, which made the statement five times slower)
reach AS MATERIALIZED (
    SELECT id FROM wp UNION SELECT repost_of_post_id FROM wp WHERE repost_of_post_id IS NOT NULL
),
seen AS (
    SELECT x.user_id, array_agg(x.post_id) AS posts
    FROM deliveries x
    WHERE x.user_id = ANY(ARRAY(SELECT user_id FROM d))
      AND x.post_id >= (SELECT min(id) FROM reach)
      AND x.post_id IN (SELECT id FROM reach)
    GROUP BY x.user_id
),
-- each user's net reactions per domain and per title word (user_affinity: kept by triggers on deliveries,
-- so a long history costs nothing here); a word counts as a topic from two net reactions
affinity AS MATERIALIZED (
    SELECT a.user_id, a.kind, a.key, a.weight FROM user_affinity a
    WHERE a.user_id = ANY(ARRAY(SELECT user_id FROM d)) AND a.weight <> 0
      AND (a.kind = 'domain' OR abs(a.weight) >= 2)
),
dom AS (
    SELECT user_id, array_agg(key) FILTER (WHERE weight < 0) AS disliked,
           array_agg(key) AS names, array_agg(GREATEST(-2, LEAST(2, weight))) AS weights
    FROM affinity WHERE kind = 'domain'
    GROUP BY user_id
),
topic AS (
    SELECT user_id,
           coalesce(array_agg(key) FILTER (WHERE weight >= 2), '{}') AS liked,
           coalesce(array_agg(key) FILTER (WHERE weight <= -2), '{}') AS disliked
    FROM affinity
    WHERE kind = 'topic' AND key <> '' AND key <> ALL(:stopwords) AND key !~ '^[0-9]+$' AND position('.' in key) = 0
    GROUP BY user_id
),
-- the windows the digests read start at different times (each since its reader's last digest: a day ago for
-- one, a week for another), so each topic's best posts are ranked per window: at most nine of them (the
-- digests' since at as many quantiles), each starting at the earliest since within its hour; a digest reads
-- the latest that starts no later than its own (otherwise a daily reader prepared beside a weekly one looked
-- for the day's posts among the week's best, and got a short digest)
tiers AS MATERIALIZED (
    SELECT min(since) AS start FROM d
    WHERE date_trunc('hour', since) IN (
        SELECT date_trunc('hour', q) FROM unnest((
            SELECT percentile_disc(ARRAY[0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1])
                   WITHIN GROUP (ORDER BY since) FROM d)) q)
    GROUP BY date_trunc('hour', since)
),
du AS MATERIALIZED (
    SELECT d.*, coalesce(seen.posts, '{}') AS seen,
           (SELECT max(t.start) FROM tiers t WHERE t.start <= d.since) AS tier,
           d.digest_id IN (SELECT digest_id FROM profiled) AS profiled,
           -- the digest's topics and their weights (negative ones too), for the relevance of each candidate
           coalesce(utw.topics, '{}') AS ut_topics, coalesce(utw.weights, '{}') AS ut_weights,
           coalesce(utw.m, '{}') AS ut_m, coalesce(utw.m0, 0) AS ut_m0, coalesce(utw.tried, '{}') AS ut_tried,
           d.digest_id IN (SELECT digest_id FROM exploring) AS exploring,  -- learning from reactions alone
           d.digest_id IN (SELECT digest_id FROM ut WHERE liked >= :min_like) AS liked_any,
           -- the places a reader learning from reactions keeps for subjects not tried yet: :explore_slots while
           -- their reactions leave it open which topic they read for, fewer as the posterior settles on one
           -- (the likeliest topic's probability: 1 over the sum of m, the untouched topics of the window too)
           CASE WHEN d.digest_id IN (SELECT digest_id FROM exploring) THEN
               round(:explore_slots * (1 - 1 / GREATEST(utw.m_sum + utw.m0
                     * GREATEST((SELECT count(DISTINCT t) FROM wp, unnest(wp.topics) t) - utw.touched, 0), 1)))::int
           END AS explore_n,
           -- what applies to this user at all: the per-candidate checks below skip the rest
           seen.posts IS NOT NULL OR d.mutes <> '{}' OR d.muted_dom <> '{}' OR dom.user_id IS NOT NULL
               OR topic.user_id IS NOT NULL AS particular,
           coalesce(dom.disliked, '{}') AS disliked_domains, coalesce(dom.names, '{}') AS domain_names,
           coalesce(dom.weights, '{}') AS domain_weights,
           coalesce(topic.liked, '{}') AS liked_topics, coalesce(topic.disliked, '{}') AS disliked_topics
    FROM d LEFT JOIN seen ON seen.user_id = d.user_id LEFT JOIN dom ON dom.user_id = d.user_id
    LEFT JOIN (SELECT digest_id, array_agg(topic) AS topics, array_agg(declared + learned) AS weights,
                      array_agg(m) AS m, max(m0) AS m0, sum(m) AS m_sum, count(*) AS touched,
                      coalesce(array_agg(topic) FILTER (WHERE tried >= :tried), '{}') AS tried
               FROM ut GROUP BY 1) utw ON utw.digest_id = d.digest_id
    LEFT JOIN topic ON topic.user_id = d.user_id
),
-- each topic's posts of each window (tiers) most about it, the largest digest's places and :per_topic more
-- (:per_topic_learning more for a reader who only reacted: their topics are a guess, and they may have seen
-- the first ones)
-- (once per statement, not per digest): where a digest ranked by relevance finds its candidates (a post
-- further down a topic's list ranks below them, unless most of those are not for this reader)
pt_top AS MATERIALIZED (
    SELECT tier, topic, post_id, score, w, n, summarized_at FROM (
        SELECT tr.start AS tier, t.topic, wp.id AS post_id, wp.score, t.w, wp.summarized_at,
               row_number() OVER (PARTITION BY tr.start, t.topic ORDER BY t.w DESC, wp.score DESC, wp.id DESC) AS n
        FROM wp CROSS JOIN LATERAL unnest(wp.topics, wp.topic_weights) t(topic, w)
        JOIN tiers tr ON wp.summarized_at > tr.start
        WHERE t.w >= :min_rel
    ) x
    WHERE n <= (SELECT max(max_posts) FROM d) + :per_topic_learning
),
-- the posts most about each relevance-ranked digest's topics (its chosen or typed ones first, :topics_joined of
-- them; every liked one for a reader learning from reactions) that it was not sent, with what each is worth to it
rel_c AS MATERIALIZED (
    SELECT ut.digest_id, pt.post_id, pt.score,
           CASE WHEN ut.learning OR ut.learned > ut.declared THEN 'learned:' ELSE 'topic:' END || ut.topic AS why,
           ut.weight * pt.w AS rel
    FROM (SELECT digest_id, topic, weight, declared, learned, learning FROM (
              -- a learning reader's topics weigh how likely each is theirs (what ranks their posts)
              SELECT digest_id, topic, CASE WHEN learning THEN m ELSE declared + learned END AS weight,
                     declared, learned, learning, liked,
                     row_number() OVER (PARTITION BY digest_id ORDER BY declared + learned DESC, topic) AS n
              FROM (SELECT ut.*, max(declared) OVER (PARTITION BY digest_id) = 0 AS learning FROM ut) u
              WHERE declared + learned > 0 OR (learning AND liked >= :min_like)) x
          WHERE (n <= :topics_joined AND NOT learning) OR (learning AND liked >= :min_like)) ut
    JOIN du ON du.digest_id = ut.digest_id
    JOIN pt_top pt ON pt.tier = du.tier AND pt.topic = ut.topic AND pt.summarized_at > du.since
                  AND pt.n <= (SELECT max(max_posts) FROM d)
                              + CASE WHEN ut.learning THEN :per_topic_learning ELSE :per_topic END
    WHERE pt.post_id <> ALL(du.seen)  -- what it was sent already takes no candidate's place
),
-- the digests that need their best by score: those ranked by score, those learning from reactions, and those
-- ranked by relevance that have few posts about their topics they were not sent yet (fewer than their places
-- and :per_topic more: some may be muted or reposts); the others rank them below every post about their
-- topics anyway
by_score AS MATERIALIZED (
    SELECT du.digest_id FROM du
    LEFT JOIN (SELECT digest_id, count(*) AS n FROM rel_c GROUP BY 1) r ON r.digest_id = du.digest_id
    WHERE NOT du.profiled OR du.exploring OR coalesce(r.n, 0) < du.max_posts + :per_topic
),
-- each digest's best by score that no dislike demotes (every eligibility rule here too, so muted posts and
-- reposts cannot take the places): they rank at least at their score, so the digest's last place does too.
-- They are looked for among the window's best by score first (wtop, :top_k of them: a few rows per digest,
-- however many posts the table holds); a digest that cannot fill its places there looks through the whole
-- window (top_more). Either way they are exactly its best eligible posts by (score, id).
wtop AS MATERIALIZED (
    SELECT id, score, domain, keywords, repost_of_post_id, summarized_at, title, topics, topic_weights FROM wp
    ORDER BY score DESC, id DESC LIMIT :top_k
),
top_first AS MATERIALIZED (
    SELECT du.digest_id, c.id AS post_id, c.score FROM du JOIN by_score b ON b.digest_id = du.digest_id
    CROSS JOIN LATERAL (
        SELECT p.id, p.score FROM wtop p WHERE {eligible} ORDER BY p.score DESC, p.id DESC LIMIT du.max_posts) c
),
top_more AS MATERIALIZED (
    SELECT du.digest_id, c.id AS post_id, c.score
    FROM du JOIN by_score b ON b.digest_id = du.digest_id
    LEFT JOIN (SELECT digest_id, count(*) AS n FROM top_first GROUP BY 1) f ON f.digest_id = du.digest_id
    CROSS JOIN LATERAL (
        SELECT p.id, p.score FROM wp p WHERE {eligible} ORDER BY p.score DESC, p.id DESC LIMIT du.max_posts) c
    WHERE coalesce(f.n, 0) < du.max_posts AND (SELECT count(*) FROM wtop) >= :top_k
),
top AS MATERIALIZED (SELECT * FROM top_first UNION SELECT * FROM top_more),
-- the rank the digest's last place has at least (floor: the lowest score of the best by score, when they fill
-- the digest), and the most a post's rank can exceed score x (1 + interest hits) by (most: the user's best
-- domain weight and a liked topic)
bounds AS MATERIALIZED (
    SELECT du.digest_id, du.max_posts, du.profiled AND NOT du.exploring AS cut,
           -- a digest ranked by relevance has no such floor: every post about its topics is a candidate
           CASE WHEN t.n >= du.max_posts AND NOT du.profiled THEN t.floor ELSE 0 END AS floor,
           CASE WHEN NOT du.particular THEN 1 ELSE
               (1 + 0.25::float8 * GREATEST(0, (SELECT max(w) FROM unnest(du.domain_weights) w)))
               * CASE WHEN du.liked_topics <> '{}' THEN 1.25 ELSE 1 END END AS most
    FROM du LEFT JOIN (SELECT digest_id, count(*) AS n, min(score) AS floor FROM top GROUP BY 1) t
         ON t.digest_id = du.digest_id
),
wk AS (SELECT wp.id AS post_id, wp.score, k FROM wp, unnest(wp.keywords) k),
-- each window's story everyone should see: its best by score, when that is :unmissable times its tenth best
-- (in a window of :unmissable_window posts or more: among a handful, the best is no event)
unmissable AS MATERIALIZED (
    SELECT tr.start AS tier, b.id, b.score
    FROM tiers tr CROSS JOIN LATERAL (
        SELECT id, score, row_number() OVER (ORDER BY score DESC, id DESC) AS n, min(score) OVER () AS tenth
        FROM (SELECT id, score FROM wp WHERE wp.summarized_at > tr.start ORDER BY score DESC, id DESC LIMIT 10) t
    ) b
    WHERE b.n = 1 AND b.score >= :unmissable * b.tenth
      AND (SELECT count(*) FROM wp WHERE wp.summarized_at > tr.start) >= :unmissable_window
),
-- each subject's (a post's dominant topic) best posts, by how sure the model is and their score, and how many
-- posts the window has on it (per window): what a reader learning from reactions is shown to explore
dom_best AS MATERIALIZED (
    SELECT tier, id, score, dominant, common FROM (
        SELECT tr.start AS tier, wp.id, wp.score, wp.topics[1] AS dominant,
               count(*) OVER (PARTITION BY tr.start, wp.topics[1]) AS common,
               row_number() OVER (PARTITION BY tr.start, wp.topics[1]
                                  ORDER BY wp.topic_weights[1] * (1 + :beta * ln(1 + wp.score::float8)) DESC,
                                           wp.id DESC) AS n
        FROM wp JOIN tiers tr ON wp.summarized_at > tr.start
        WHERE wp.topics[1] IS NOT NULL AND (SELECT count(*) FROM exploring) > 0) x
    WHERE n <= :explore_depth
),
-- candidate (digest, post) pairs with their interest hits: title words met by interest words or reacted
-- topics (one hash join of (digest, word) with (post, word) pairs), the best by score, the posts of the
-- domains the user reacted to, the posts most about the digest's liked or chosen topics, and every post
-- for a digest exploring
cagg AS MATERIALIZED (
    SELECT digest_id, post_id, score, sum(hit)::int AS interest_hits,
           -- what the title's words and the domain say to this user, from the same join: a liked or
           -- disliked topic, a muted keyword, the domain's weight (NULL: no reaction to the domain), and the
           -- first interest word met
           bool_or(kind = 1) AS liked, bool_or(kind = 2) AS disliked, bool_or(kind = 3) AS muted,
           bool_or(kind = 6) AS unmissable,  -- the day's unmissable story: never cut from the candidates
           max(weight) AS domain_weight, min(why) FILTER (WHERE kind = 0) AS word,
           -- relevance: the digest's liked or chosen topics' weights times how much the post is about each,
           -- and the one that counts most (why the post is there; "<rel, 12 digits>:<topic:...>")
           coalesce(sum(rel) FILTER (WHERE kind = 4), 0) AS rel,
           substr(max(lpad((rel * 1e9)::bigint::text, 12, '0') || why) FILTER (WHERE kind = 4), 13) AS topic_reason
    FROM (
        SELECT uw.digest_id, wk.post_id, wk.score, uw.hit, uw.kind, NULL::int AS weight, uw.w AS why,
               NULL::float8 AS rel
        FROM (SELECT digest_id, w, 1 AS hit, 0 AS kind FROM iw
              UNION ALL SELECT digest_id, w, 0, 1 FROM du, unnest(du.liked_topics) w
              UNION ALL SELECT digest_id, w, 0, 2 FROM du, unnest(du.disliked_topics) w
              UNION ALL SELECT digest_id, w, 0, 3 FROM du, unnest(du.muted_kw) w) uw
        JOIN wk ON wk.k = uw.w
        UNION ALL
        SELECT digest_id, post_id, score, 0, 5, NULL, NULL, NULL FROM top
        UNION ALL
        SELECT du.digest_id, b.id, b.score, 0, 5, NULL, NULL, NULL FROM du
        JOIN dom_best b ON du.exploring AND b.tier = du.tier
        UNION ALL
        SELECT du.digest_id, wp.id, wp.score, 0, 5, dw.weight, NULL, NULL
        FROM du CROSS JOIN unnest(du.domain_names, du.domain_weights) dw(name, weight)
        JOIN wp ON wp.domain = dw.name
        UNION ALL
        SELECT digest_id, post_id, score, 0, 4, NULL, why, rel FROM rel_c
        UNION ALL
        -- the day's unmissable story, for a digest ranked by relevance (one ranked by score has it in top)
        SELECT du.digest_id, u.id, u.score, 0, 6, NULL, NULL, NULL FROM du
        JOIN unmissable u ON du.profiled AND u.tier = du.tier
    ) c
    GROUP BY 1, 2, 3
),
-- a candidate whose rank cannot reach the floor is dropped before the ranking; so is, in a digest ranked by
-- relevance (not learning), a post no liked or disliked word or domain touches (its rank is at most this order's
-- key: the ranking below without its affinities) below the first max_posts + :per_topic by that key. Those
-- outrank it unless more than :per_topic of them are muted, reposts or demoted by a dislike: the same margin the
-- topics' lists keep. The ranking's rows halve.
candidates AS MATERIALIZED (
    SELECT * FROM (
        SELECT c.*, b.cut, b.max_posts,
               CASE WHEN b.cut THEN row_number() OVER (
                   PARTITION BY c.digest_id ORDER BY (GREATEST(c.rel, -1) + :word * LEAST(c.interest_hits, 2) + 0.01)
                                                     * (1 + :beta * ln(1 + c.score::float8)) DESC, c.post_id DESC)
               END AS n
        FROM cagg c JOIN bounds b ON b.digest_id = c.digest_id
        WHERE NOT c.muted AND c.score * (1 + c.interest_hits) * b.most >= b.floor) x
    WHERE NOT cut OR n <= max_posts + :per_topic OR liked OR disliked OR domain_weight IS NOT NULL OR unmissable
),
ranked AS (
    SELECT du.digest_id, du.user_id, du.batch_id, du.max_posts, du.exploring, du.liked_any, du.explore_n, du.tier,
           p.id AS post_id,
           coalesce(p.topics[1], '') AS dominant,
           du.exploring AND coalesce(p.topics[1] = ANY(du.ut_tried), false) AS tried,
           CASE WHEN x.top_story THEN 1e12 WHEN du.profiled
                -- relevance first (topics, and interest words in the title), the score second
                THEN (GREATEST(x.rel, -1) + :word * LEAST(c.interest_hits, 2) + 0.01)
                     * (1 + :beta * ln(1 + p.score::float8))
                ELSE p.score::float8 * (1 + c.interest_hits) END
           * CASE WHEN NOT du.particular THEN 1 ELSE
               (1 + 0.25::float8 * coalesce(c.domain_weight, 0)) * (1 + 0.25::float8 * (c.liked::int - c.disliked::int))
           END AS rank,
           CASE WHEN x.top_story THEN 'top'
                WHEN du.profiled AND x.rel >= :min_reason AND c.topic_reason IS NOT NULL THEN c.topic_reason
                WHEN c.word IS NOT NULL THEN 'word:' || c.word END AS reason
    FROM candidates c
    JOIN du ON du.digest_id = c.digest_id
    JOIN wp p ON p.id = c.post_id
    -- the relevance and the top story, worked out once per row (OFFSET 0: not inlined into each use)
    CROSS JOIN LATERAL (SELECT CASE WHEN du.profiled THEN {rel} END AS rel, {top_story} AS top_story OFFSET 0) x
    WHERE p.summarized_at > du.since
      AND p.score >= du.min_score
      AND (NOT du.particular OR (p.id <> ALL(du.seen) AND NOT (coalesce(p.domain, '') = ANY(du.muted_dom))
                                 AND {phrase_mutes} AND {topic_mutes}))
      AND (p.repost_of_post_id IS NULL OR (
            p.repost_of_post_id <> ALL(du.seen)
            AND NOT EXISTS (SELECT 1 FROM posts o WHERE o.id = p.repost_of_post_id AND o.summarized_at > du.since)))
),
picked AS (
    SELECT digest_id, user_id, batch_id, post_id, rank, position, reason FROM (
    SELECT digest_id, user_id, batch_id, post_id, rank, reason, max_posts,
           row_number() OVER (PARTITION BY digest_id ORDER BY rank DESC, post_id DESC) AS position
    FROM ranked WHERE NOT exploring
    UNION ALL
    -- a digest learning from reactions: once the reader liked something, their best by rank, and the last
    -- :explore_slots places (every place before) to the window's subjects in turn; varied: each subject's
    -- best first (nth), subjects (a post's dominant topic) not tried before the others, the window's most
    -- common subjects first (where a reader is likeliest to find theirs)
    SELECT digest_id, user_id, batch_id, post_id, rank, reason, max_posts,
           row_number() OVER (PARTITION BY digest_id ORDER BY
               CASE WHEN liked_any AND best <= max_posts - explore_n THEN best ELSE max_posts + varied END,
               rank DESC, post_id DESC)
    FROM (SELECT v.*, row_number() OVER (PARTITION BY digest_id ORDER BY nth, tried, common DESC, rank DESC,
                                                                         post_id DESC) AS varied
          FROM (SELECT ranked.*,
                       row_number() OVER (PARTITION BY digest_id ORDER BY rank DESC, post_id DESC) AS best,
                       row_number() OVER (PARTITION BY digest_id, dominant ORDER BY rank DESC, post_id DESC) AS nth,
                       coalesce((SELECT max(b.common) FROM dom_best b
                                 WHERE b.dominant = ranked.dominant AND b.tier = ranked.tier), 0)
                           AS common
                FROM ranked WHERE exploring) v) r
) t
WHERE position <= max_posts
)
SELECT digest_id, user_id, batch_id, post_id, rank, position, reason FROM picked
ORDER BY digest_id, position
""".replace("{eligible}", ELIGIBLE)
    .replace("{phrase_mutes}", PHRASE_MUTES)
    .replace("{topic_mutes}", TOPIC_MUTES)
    .replace("{phrase}", phrase_sql("i"))
    .replace("{rel}", REL)
    .replace(
        "{top_story}",
        "(du.profiled AND du.max_posts >= 5 AND c.post_id IN (SELECT u.id FROM unmissable u WHERE u.tier = du.tier))",
    )
).bindparams(
    bindparam("digest_ids", type_=ARRAY(INTEGER)),
    bindparam("stopwords", type_=ARRAY(TEXT)),
    bindparam("mute_phrases", type_=ARRAY(TEXT)),
    bindparam("mute_topics", type_=ARRAY(TEXT)),
)


RESERVE_SQL = text(
    "WITH picks AS MATERIALIZED (\n"  # noqa: S608 - composed of this module's constant SQL only
    + str(SELECT_SQL.text).replace("ORDER BY digest_id, position", "")
    + """),
reserved AS (
    INSERT INTO deliveries (user_id, post_id, batch_id, reason)
    SELECT p.user_id, p.post_id, p.batch_id, p.reason FROM picks p
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
    bindparam("mute_phrases", type_=ARRAY(TEXT)),
    bindparam("mute_topics", type_=ARRAY(TEXT)),
)


# The common case: no (user, post) of the picks is reserved yet, so a plain INSERT (no speculative
# insertion, no RETURNING) and the counts straight from the picks. Two digests of one user in one chunk,
# or a concurrent prepare of another digest of theirs, make it fail on the UNIQUE constraint; then
# RESERVE_SQL (ON CONFLICT DO NOTHING) runs instead, in the same transaction.
RESERVE_FAST_SQL = text(
    "WITH picks AS MATERIALIZED (\n"  # noqa: S608 - composed of this module's constant SQL only
    + str(SELECT_SQL.text).replace("ORDER BY digest_id, position", "")
    + """),
reserved AS (
    INSERT INTO deliveries (user_id, post_id, batch_id, reason)
    SELECT p.user_id, p.post_id, p.batch_id, p.reason FROM picks p
    ORDER BY p.digest_id, p.position
),
counts AS (
    SELECT g.id, count(p.post_id) AS n FROM digests g LEFT JOIN picks p ON p.digest_id = g.id
    WHERE g.id = ANY(:digest_ids) GROUP BY g.id
)
UPDATE digests SET status = CASE WHEN counts.n > 0 THEN 'sending' ELSE 'empty' END, post_count = counts.n
FROM counts WHERE digests.id = counts.id AND digests.status = 'pending'
RETURNING digests.id, digests.post_count
"""
).bindparams(
    bindparam("digest_ids", type_=ARRAY(INTEGER)),
    bindparam("stopwords", type_=ARRAY(TEXT)),
    bindparam("mute_phrases", type_=ARRAY(TEXT)),
    bindparam("mute_topics", type_=ARRAY(TEXT)),
)
UNIQUE_VIOLATION = "23505"


def _plan_settings(session: Session) -> None:
    """For this statement's transaction: no JIT (its compilation would cost more than the query), memory
    for its sorts and hashes (otherwise they spill to disk), and its joins in the order written: the
    ranking's (candidates, then their digest, then their post) was reordered by the planner from about a
    thousand digests on into every post crossed with every digest (800,000 rows; ten times slower)."""
    session.execute(
        text(
            "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; SET LOCAL join_collapse_limit = 1; "
            "SET LOCAL enable_mergejoin = off"
        )
    )


def statement_params(digest_ids: list[int], lookback: timedelta) -> dict[str, Any]:
    """The selection's parameters: the digests, the ranking's constants, and the names that mute a topic."""
    aliases = mute_aliases()
    return {"digest_ids": list(digest_ids), "stopwords": STOPWORDS, "lookback": lookback.total_seconds(),
            "top_k": TOP_K, "mute_phrases": list(aliases), "mute_topics": list(aliases.values()),
            "mute_min": MUTE_MIN, **RANKING}  # fmt: skip


@dataclass(frozen=True)
class Pick:
    digest_id: int
    user_id: int
    post_id: int
    rank: float
    position: int
    reason: str | None = None


def select_posts(*, session: Session, digest_ids: list[int], lookback: timedelta) -> dict[int, list[Pick]]:
    """The ranked posts of each digest (digest id -> picks in digest order; missing ids have none)."""
    if not digest_ids:
        return {}
    _plan_settings(session)
    rows = session.execute(SELECT_SQL, statement_params(digest_ids, lookback))
    picks: dict[int, list[Pick]] = {}
    for row in rows:
        picks.setdefault(row.digest_id, []).append(
            Pick(row.digest_id, row.user_id, row.post_id, row.rank, row.position, row.reason)
        )
    return picks


def reserve_posts(*, session: Session, digest_ids: list[int], lookback: timedelta) -> dict[int, int]:
    """Select and reserve in one statement: the picks become ``deliveries`` rows (in digest order, so
    their ids keep it) and each pending digest becomes ``sending`` (or ``empty``). Digest id -> posts."""
    if not digest_ids:
        return {}
    _plan_settings(session)
    params = statement_params(digest_ids, lookback)
    try:
        with session.begin_nested():
            rows = session.execute(RESERVE_FAST_SQL, params).all()
    except IntegrityError as exc:
        if getattr(exc.orig, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        rows = session.execute(RESERVE_SQL, params).all()
    return {row.id: row.post_count for row in rows}
