"""Relevance bench: do digests follow each reader's interests, on real stories with independent topic labels?

    python bench/relevance.py [--stories PATH] [--windows N] [--window-size W] [--seed S]

Stories: a JSON-lines file of community-tagged stories (``../shared/fixtures/stories/`` by default; any
file of that format). Stories the shipped topic model was trained on are left out before the windows are
drawn (their id hashes ship with the model), so nothing scored here was seen in training. Tags never
reach HN Pal: they only score the result. A file with fewer stories than a window is measured as one
window of all of them (at least 100).

Per window (``--window-size`` consecutive stories, ``--windows`` of them at random, ``--seed``), in a fresh
database: the stories go in as HN items through HN Pal's own ingest (``store_items``: the same upsert as a
fetch, and the topic computation of the job it enqueues; a story without url is a text post), marked
summarized; then the real digest selection (``hnpal.deliveries.service.prepare``) runs for one user per
topic button, one per typed interest, one with no interest (the baseline), and the learning users (no
declared interest; 👍 the relevant and 👎 the rest of three digests through the real reaction service,
then a fourth is scored).

Last line: ``p10_topics p10_free p10_learned score_quality p10_score_only features_ms_per_post users_per_s``.
Targets (exit 1 when missed): p10_topics >= 0.80, p10_free >= 0.60, p10_learned >= 0.50,
score_quality >= 0.50, features_ms_per_post <= 5.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, bench_database, last_line

DEFAULT_STORIES = REPO.parent / "shared" / "fixtures" / "stories" / "lobsters-2021-2022.jsonl"
BUTTONS = {"AI": "ai", "Rust": "rust", "Python": "python", "Go": "go", "JavaScript": "javascript",
           "Databases": "databases", "Security": "security", "Privacy": "privacy", "Linux": "linux",
           "Hardware": "hardware", "Web": "web", "Programming": "programming"}  # fmt: skip
FREE = {"distributed systems": "distributed", "compilers": "compilers", "cryptography": "cryptography",
        "computer networking": "networking", "performance engineering": "performance",
        "game development": "games", "computer graphics": "graphics", "mathematics": "math",
        "formal methods": "formalmethods", "operating system development": "osdev"}  # fmt: skip
TARGETS = {"p10_topics": 0.80, "p10_free": 0.60, "p10_learned": 0.50, "score_quality": 0.50}
MAX_FEATURES_MS = 5.0
MIN_WINDOW = 100  # a window needs this many stories for ten picks per interest to mean anything
POSTS = 10


def load_stories(path: Path) -> list[dict]:
    stories = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        s = json.loads(line)
        if not isinstance(s.get("title"), str) or not isinstance(s.get("tags"), list):
            raise SystemExit(f"{path}:{n}: not a story (needs title and tags)")
        stories.append(s)
    return stories


def hn_items(window: list[dict], base: int) -> dict[int, dict]:
    """The window as HN items: ids in order, times from the stories (or consecutive minutes)."""
    items = {}
    now = int(time.time())
    for n, s in enumerate(window):
        hn_id = base + n
        item = {"id": hn_id, "type": "story", "title": s["title"], "by": "bench", "time": now - 3600,
                "score": int(s.get("score") or 0), "descendants": int(s.get("comments") or 0)}  # fmt: skip
        if s.get("url"):
            item["url"] = s["url"]
        items[hn_id] = item
    return items


def run_window(window: list[dict], base: int, stats: dict) -> None:
    from sqlalchemy import text

    from hnpal import jobs
    from hnpal.db.session import session_scope
    from hnpal.deliveries.service import create_manual_digest, prepare, react
    from hnpal.ingest.service import store_items
    from hnpal.relevance.model import PostText, model
    from hnpal.relevance.service import classify_new

    tags_of = {base + n: set(s["tags"]) for n, s in enumerate(window)}
    score_of = {base + n: int(s.get("score") or 0) for n, s in enumerate(window)}
    # the features' CPU, measured alone on the same posts (the ingest below computes them again, once)
    t0 = time.process_time()
    model().classify([PostText(s["title"], s.get("url")) for s in window])
    stats["features_cpu"] += time.process_time() - t0
    stats["posts"] += len(window)

    with session_scope() as session:
        session.execute(text("TRUNCATE posts, users, digests, deliveries, interest_topics, memory CASCADE"))
    with jobs.recording() as sent, session_scope() as session:
        store_items(session=session, items=hn_items(window, base))
    for job in sent:  # the new posts' topics, as the fetch's job computes them on a worker
        if job.name == jobs.RELEVANCE_CLASSIFY:
            classify_new(post_ids=job.args[0], texts=job.args[1])
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE posts SET summarized_at = now() - interval '30 minutes', summary = 'A summary.', "
                "summary_status = 'done'"
            )
        )
        missing = session.scalar(text("SELECT count(*) FROM posts WHERE topics IS NULL"))
        assert missing == 0, f"{missing} posts without topics after ingest"

    def best_relevant(tag: str) -> float | None:
        scores = sorted((score_of[h] for h, tags in tags_of.items() if tag in tags), reverse=True)[:POSTS]
        return statistics.mean(scores) if scores else None

    users: list[tuple[str, str, list[str]]] = [("topics", tag, [b]) for b, tag in BUTTONS.items()]
    users += [("free", tag, [phrase]) for phrase, tag in FREE.items()]
    users.append(("none", "", []))
    learners = list(BUTTONS.values())
    tid = base
    ids: dict[str, int] = {}
    with session_scope() as session:
        for kind, tag, interests in users + [("learned", t, []) for t in learners]:
            tid += 1
            uid = session.scalar(
                text(
                    "INSERT INTO users (telegram_id, interests, digest_preferences, created_at) "
                    "VALUES (:tid, CAST(:i AS jsonb), '{\"max_posts\": 10}', now() - interval '30 days') RETURNING id"
                ),
                {"tid": tid, "i": json.dumps(interests)},
            )
            ids[f"{kind}:{tag}"] = uid
    telegram_of = {uid: base + 1 + n for n, uid in enumerate(ids.values())}

    def digest(user_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
        """One digest each, prepared together; user id -> [(delivery id, hn id)] in digest order."""
        with session_scope() as session:
            digest_ids = [create_manual_digest(session=session, user_id=u, now=datetime.now(UTC)) for u in user_ids]
        t = time.perf_counter()
        with session_scope() as session:
            prepare(session=session, digest_ids=digest_ids)
        stats["select_s"] += time.perf_counter() - t
        stats["digests"] += len(digest_ids)
        with session_scope() as session:
            rows = session.execute(
                text(
                    "SELECT g.user_id, d.id, p.hn_id FROM digests g JOIN deliveries d ON d.user_id = g.user_id "
                    "AND d.batch_id = g.batch_id JOIN posts p ON p.id = d.post_id WHERE g.id = ANY(:ids) "
                    "ORDER BY d.id"
                ),
                {"ids": digest_ids},
            ).all()
        out: dict[int, list[tuple[int, int]]] = {u: [] for u in user_ids}
        for user_id, delivery_id, hn_id in rows:
            out[user_id].append((delivery_id, hn_id))
        return out

    first = digest([ids[f"{k}:{t}"] for k, t, _ in users])
    for kind, tag, _ in users:
        picks = [h for _, h in first[ids[f"{kind}:{tag}"]]]
        if kind == "none":
            for t in BUTTONS.values():
                stats["score_only"].append(sum(t in tags_of[h] for h in picks) / POSTS)
            continue
        stats[kind].append(sum(tag in tags_of[h] for h in picks) / POSTS)
        # the interest's p10 beside its ceiling (every tagged story of the window, at most ten)
        ceiling = min(POSTS, sum(tag in tags for tags in tags_of.values())) / POSTS
        stats.setdefault("by_interest", {}).setdefault((kind, tag), []).append((stats[kind][-1], ceiling))
        best = best_relevant(tag)
        if best:
            stats["quality"].append(statistics.mean(score_of[h] for h in picks) / best if picks else 0.0)

    learner_ids = {ids[f"learned:{t}"]: t for t in learners}
    for _ in range(3):
        got = digest(list(learner_ids))
        with session_scope() as session:
            for uid, picks in got.items():
                for delivery_id, hn_id in picks:
                    reaction = "up" if learner_ids[uid] in tags_of[hn_id] else "down"
                    react(session=session, telegram_id=telegram_of[uid], delivery_id=delivery_id, reaction=reaction)
    fourth = digest(list(learner_ids))
    for uid, picks in fourth.items():
        stats["learned"].append(sum(learner_ids[uid] in tags_of[h] for _, h in picks) / POSTS)
        # what the fourth digest could be with the tag known (the model's best for it among the unseen
        # posts), and how many likes the three digests gave: where the learning stands against its ceiling
        with session_scope() as session:
            likes = session.scalar(
                text("SELECT count(*) FROM deliveries WHERE user_id = :u AND reaction = 'up'"), {"u": uid}
            )
            stats.setdefault("by_likes", []).append((likes, stats["learned"][-1]))
            stats.setdefault("by_tag", {}).setdefault(learner_ids[uid], []).append((likes, stats["learned"][-1]))
            tag = learner_ids[uid]
            rows = session.execute(
                text(
                    "SELECT p.hn_id, coalesce((SELECT w FROM unnest(p.topics, p.topic_weights) t(t, w) "
                    "WHERE t.t = :tag), 0) AS w FROM posts p WHERE p.id NOT IN "
                    "(SELECT post_id FROM deliveries WHERE user_id = :u AND reaction IS NOT NULL) "
                    "ORDER BY w DESC, p.score DESC LIMIT 10"
                ),
                {"tag": tag, "u": uid},
            ).all()
            stats.setdefault("oracle", []).append(sum(tag in tags_of[h] for h, _ in rows) / POSTS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=Path, default=DEFAULT_STORIES)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--window-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not args.stories.exists():
        print(f"stories file {args.stories} is absent (../shared not here): nothing to measure")
        return 1

    from hnpal.relevance.model import PostText, model

    stories = load_stories(args.stories)
    pool = [s for s in stories if not model().trained_on(str(s.get("id")))]
    print(f"{len(stories)} stories, {len(stories) - len(pool)} left out (the topic model was trained on them), "
          f"{len(pool)} to draw windows from")  # fmt: skip
    if len(pool) < MIN_WINDOW:
        print(f"{len(pool)} stories to draw windows from: too few to measure (at least {MIN_WINDOW})")
        return 1
    if len(pool) < args.window_size:  # a small file: one window of all of it, however often it is drawn
        print(f"fewer stories than --window-size {args.window_size}: windows of {len(pool)}")
        args.window_size = len(pool)
    # the models load once per worker process (their memory is measured by the tests), not once per post: loaded
    # before the first window's CPU is measured (it otherwise carried about 1.5 s of loading here)
    model().classify([PostText("Warm-up", "https://example.com/")])
    rng = random.Random(args.seed)
    starts = [rng.randrange(0, len(pool) - args.window_size + 1) for _ in range(args.windows)]
    stats: dict = {k: [] for k in ("topics", "free", "learned", "quality", "score_only")}
    stats.update(features_cpu=0.0, posts=0, select_s=0.0, digests=0)
    with bench_database() as url:
        from _common import use_settings

        use_settings(database_url=url)
        for n, start in enumerate(starts):
            run_window(pool[start : start + args.window_size], 1_000_000 * (n + 1), stats)
            print(f"  window {n + 1}/{len(starts)}: p10 topics {statistics.mean(stats['topics']):.3f} "
                  f"free {statistics.mean(stats['free']):.3f} learned {statistics.mean(stats['learned']):.3f}",
                  flush=True)  # fmt: skip
    figures = {
        "p10_topics": statistics.mean(stats["topics"]),
        "p10_free": statistics.mean(stats["free"]),
        "p10_learned": statistics.mean(stats["learned"]),
        "score_quality": statistics.mean(stats["quality"]),
        "p10_score_only": statistics.mean(stats["score_only"]),
        "features_ms_per_post": 1000 * stats["features_cpu"] / max(1, stats["posts"]),
        "users_per_s": stats["digests"] / max(stats["select_s"], 1e-9),
    }
    if stats.get("oracle"):
        print(f"  learners' fourth digest with the tag known: p10 {statistics.mean(stats['oracle']):.3f}")
    if stats.get("by_likes"):
        for n in range(4):
            got = [p for likes, p in stats["by_likes"] if (likes >= 3 if n == 3 else likes == n)]
            if got:
                print(f"  learners with {n}{'+' if n == 3 else ''} likes: {len(got)}, p10 {statistics.mean(got):.3f}")
    missed = [k for k, v in TARGETS.items() if figures[k] < v]
    if figures["features_ms_per_post"] > MAX_FEATURES_MS:
        missed.append("features_ms_per_post")
    if missed:
        print(f"missed targets: {', '.join(missed)}")
    by_interest = stats.get("by_interest", {})
    for kind in ("topics", "free"):  # what a digest of every tagged story of the window would score
        ceilings = [c for (k, _), got in by_interest.items() if k == kind for _, c in got]
        print(f"  ceiling of p10_{kind}: {statistics.mean(ceilings):.3f}")
    for (kind, tag), got in sorted(by_interest.items()):  # where each interest stands
        print(
            f"  {kind} {tag}: p10 {statistics.mean(p for p, _ in got):.2f} of a ceiling of "
            f"{statistics.mean(c for _, c in got):.2f}"
        )
    for tag, got in sorted(stats.get("by_tag", {}).items()):  # where the learning stands, topic by topic
        print(
            f"  learners of {tag}: {sum(1 for n, _ in got if n == 0)}/{len(got)} never liked anything, "
            f"{statistics.mean(n for n, _ in got):.1f} likes, p10 {statistics.mean(p for _, p in got):.2f}"
        )
    print(last_line(**figures))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
