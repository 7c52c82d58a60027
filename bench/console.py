"""Console benchmark: the operator console's pages under a large database, and approving through it.

A fresh database holds 100,000 users, 10,000 pending review items, 200,000 model calls over 30 days and
a month of daily token usage for every user. The real ``hnpal console`` process (uvicorn, loopback)
serves, as a signed-in reviewer:

* the review queue (``/queue``), a user's page (``/users/ID``, a user with digests, conversations,
  memory and held items) and the costs page (``/costs``), ``--requests`` times each, round robin;
  the server's time per request comes from its ``Server-Timing`` header (the client's round trip is
  printed too). Baseline in the same run: the same pages' SQL statements alone, on one connection.
  Target: p95 server time <= 150 ms for each page.
* 1,000 approvals posted through the item form (``POST /review/ID/decide`` with the session's CSRF
  token); a real Celery worker (``telegram`` queue) sends each decided text to the sandbox Telegram.
  Target: 1,000 messages arrive, none twice (counted per chat by the sandbox).

The last line is ``key=value`` figures; the exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter

from _common import REDIS_URL, REPO, bench_database, last_line, stop_processes, use_settings, wait_for_workers

USERS = 100_000
PENDING = 10_000
CALLS = 200_000
APPROVALS = 1_000
TARGET_MS = 150.0
FIRST_TID = 9_300_000_000


def _p(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


SEED = [
    # users, some under review
    f"""INSERT INTO users (telegram_id, username, first_name, interests, created_at)
        SELECT {FIRST_TID} + g, 'user' || g, 'Reader ' || g, '["databases", "rust"]'::jsonb,
               now() - make_interval(days => g % 400)
        FROM generate_series(1, {USERS}) g""",  # noqa: S608 - constants of this file
    """INSERT INTO posts (hn_id, type, title, url, domain, score, summary_status, summary)
        SELECT 50000000 + g, 'story', 'Story number ' || g, 'https://example.com/' || g, 'example.com',
               g % 900, 'done', 'A summary.' FROM generate_series(1, 2000) g""",
    # pending answers waiting for a person, spread over the last two days
    f"""INSERT INTO review_items (kind, status, reason, user_id, chat_id, post_id, question, draft, prompt, model,
                                 input_tokens, output_tokens, cost_usd, created_at, due_at)
        SELECT 'answer', 'pending', 'user under review: bench', u.id, u.telegram_id,
               (SELECT min(id) FROM posts) + g % 2000, 'Question ' || g || '?',
               'Draft answer number ' || g || ' about the storage engine and its write-ahead log.',
               jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Question ' || g || '?')),
               (ARRAY['gpt-4o-mini', 'gpt-4.1-mini'])[1 + g % 2], 800 + g % 300, 120 + g % 80, 0.00042,
               now() - make_interval(secs => (g * 17) % 172800), now() + interval '1 hour'
        FROM generate_series(1, {PENDING}) g JOIN users u ON u.telegram_id = {FIRST_TID} + (g * 7) % {USERS} + 1""",  # noqa: S608 - constants of this file
    # a history of decided items for the analytics
    """INSERT INTO review_items (kind, status, reason, user_id, chat_id, draft, final_text, model, created_at, due_at,
                                decided_at, decided_by, tags)
        SELECT 'answer', (ARRAY['approved', 'edited', 'rejected'])[1 + g % 3], 'bench', u.id, u.telegram_id, 'd',
               'f', 'gpt-4o-mini', now() - make_interval(days => g % 50), now(),
               now() - make_interval(days => g % 50) + make_interval(secs => 60 + g % 3000), 'bench',
               CASE WHEN g % 3 = 1 THEN ARRAY['tone', 'too long'] ELSE '{}'::text[] END
        FROM generate_series(1, 5000) g JOIN users u ON u.id = g""",
    # a month of model calls
    f"""INSERT INTO agent_calls (user_id, agent_type, model, input_tokens, output_tokens, cost_usd, latency_ms,
                                purpose, called_at)
        SELECT 1 + g % {USERS}, (ARRAY['summarization', 'discussion', 'memory_extraction'])[1 + g % 3],
               (ARRAY['gpt-4o-mini', 'gpt-4.1-mini', 'offline-extractive'])[1 + g % 3], 900, 150, 0.00022, 800,
               'reply', now() - make_interval(secs => (g * 13) % 2592000)
        FROM generate_series(1, {CALLS}) g""",  # noqa: S608 - constants of this file
    # daily token usage: every user on one day of the month, a tenth of them on every day
    """INSERT INTO user_token_usage (user_id, date, total_input_tokens, total_output_tokens, total_cost_usd,
                                     discussion_tokens)
        SELECT id, current_date - (id % 30), 4000 + id % 5000, 600, 0.0012 + (id % 97) / 10000.0, 4600
        FROM users""",
    """INSERT INTO user_token_usage (user_id, date, total_input_tokens, total_output_tokens, total_cost_usd)
        SELECT u.id, current_date - d, 3000, 500, 0.0009 FROM users u, generate_series(1, 29) d
        WHERE u.id % 10 = 0 AND d <> u.id % 30""",
    # the user whose page is read: digests, deliveries, conversations, memory, held messages, audit
    """INSERT INTO digests (user_id, batch_id, status, post_count, created_at)
        SELECT 4242, 'bench-' || g, 'sent', 10, now() - make_interval(days => g) FROM generate_series(1, 300) g""",
    """INSERT INTO deliveries (user_id, post_id, batch_id, delivered_at)
        SELECT 4242, (SELECT min(id) FROM posts) + g, 'bench-' || (1 + g % 300), now() - make_interval(hours => g)
        FROM generate_series(0, 1999) g""",
    """INSERT INTO conversations (user_id, post_id, messages, started_at, last_message_at, ended_at)
        SELECT 4242, (SELECT min(id) FROM posts) + g,
               '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]'::jsonb,
               now() - make_interval(days => g), now() - make_interval(days => g), now() - make_interval(days => g)
        FROM generate_series(1, 200) g""",
    """INSERT INTO memory (user_id, type, content)
        SELECT 4242, 'interest', 'topic ' || g FROM generate_series(1, 50) g""",
    """INSERT INTO user_protocol (user_id, under_review, review_reason) VALUES (4242, true, 'bench')""",
    """INSERT INTO quarantine_messages (user_id, payload, text, expires_at)
        SELECT 4242, '{}'::jsonb, 'held ' || g, now() + interval '7 days' FROM generate_series(1, 30) g""",
    """INSERT INTO audit_log (actor_type, action, subject_user_id, operator)
        SELECT 'operator', 'protocol.review_on', 4242, 'bench' FROM generate_series(1, 100) g""",
    "ANALYZE",
]


def seed(url: str) -> float:
    from sqlalchemy import create_engine, text

    started = time.perf_counter()
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement))
    engine.dispose()
    return time.perf_counter() - started


def sql_alone(url: str, rounds: int) -> dict[str, float]:
    """p95 ms of each page's statements run alone, one connection, the pages' parameters."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import create_engine

    from hnpal.console import views

    now = datetime.now(UTC)
    since = (now - timedelta(days=13)).replace(hour=0, minute=0, second=0, microsecond=0)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    pages = {
        "queue": [(views.QUEUE_SQL, {"kind": None, "limit": views.PAGE, "offset": 0}), (views.QUEUE_COUNTS_SQL, {})],
        "user": [(statement, {"u": 4242}) for statement in views.USER_PAGE_SQL],
        "costs": [(views.COSTS_SQL, {"since": since.date()}), (views.SPENT_SQL, {"t": today}),
                  (views.HELD_COST_SQL, {"s": since}), (views.TOP_TODAY_SQL, {"day": today.date()})],
    }  # fmt: skip
    engine = create_engine(url)
    out = {}
    with engine.connect() as conn:
        for name, statements in pages.items():
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                for statement, params in statements:
                    conn.execute(statement, params).all()
                times.append((time.perf_counter() - started) * 1000)
            out[name] = _p(times, 95)
    engine.dispose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per page")
    parser.add_argument("--approvals", type=int, default=APPROVALS)
    args = parser.parse_args()

    import httpx

    from hnpal.sandbox.telegram_api import TelegramServer

    prefix = f"hnpal-bench-console-{uuid.uuid4().hex[:6]}:"
    with bench_database() as url, TelegramServer(enforce_limits=False) as telegram:
        port = _free_port()
        use_settings(database_url=url, redis_url=REDIS_URL, redis_key_prefix=prefix, telegram_token=telegram.token,
                     telegram_base_url=telegram.base_url, telegram_paid_broadcast="true",
                     console_port=str(port))  # fmt: skip
        seconds = seed(url)
        print(f"seeded {USERS:,} users, {PENDING:,} pending reviews, {CALLS:,} model calls in {seconds:.1f} s")
        from hnpal.console import auth
        from hnpal.db.session import session_scope

        with session_scope() as session:
            auth.add_operator(session, name="bench", password="bench password 1", role="reviewer")
        env = {**os.environ}
        procs = []
        logs = []
        try:
            for name, cmd in (
                ("console", [sys.executable, "-m", "hnpal.cli.main", "console"]),
                ("worker", [sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", "telegram", "-P", "threads",
                            "-c", "8", "-n", f"bench-{uuid.uuid4().hex[:4]}@%h", "--without-gossip",
                            "--without-mingle", "-l", "WARNING"]),
            ):  # fmt: skip
                log = open(f"/tmp/bench-console-{name}-{os.getpid()}.log", "w")
                logs.append(log)
                procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
            base = f"http://127.0.0.1:{port}"
            web = httpx.Client(base_url=base, timeout=30, follow_redirects=True)
            _wait_up(web)
            wait_for_workers(1, what="telegram worker")
            login = web.get("/login")
            page = web.post("/login", data={"name": "bench", "password": "bench password 1",
                                            "csrf": _csrf(login.text)})  # fmt: skip
            csrf = _csrf(page.text)

            # pages
            paths = {"queue": "/queue", "user": "/users/4242", "costs": "/costs"}
            server: dict[str, list[float]] = {k: [] for k in paths}
            client: dict[str, list[float]] = {k: [] for k in paths}
            for path in paths.values():  # warm-up (connections, templates)
                assert web.get(path).status_code == 200, path
            for _ in range(args.requests):
                for name, path in paths.items():
                    started = time.perf_counter()
                    response = web.get(path)
                    client[name].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                    timing = response.headers["server-timing"]
                    server[name].append(float(timing.split("dur=")[1]))
            sql = sql_alone(url, args.requests)

            # approvals through the form, each sent by the worker
            from sqlalchemy import text

            with session_scope() as session:
                items = session.execute(
                    text("SELECT id, chat_id FROM review_items WHERE status = 'pending' ORDER BY created_at LIMIT :n"),
                    {"n": args.approvals},
                ).all()  # fmt: skip
            for _, chat in items:
                telegram.add_user(chat, "Reader")
            started = time.perf_counter()
            for item_id, _ in items:
                response = web.post(f"/review/{item_id}/decide", data={"action": "approve", "csrf": csrf})
                assert response.status_code == 200 and "approved" in response.text, response.text[:500]
            posted = time.perf_counter() - started
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                with session_scope() as session:
                    sent = session.execute(text("SELECT count(*) FROM review_sends WHERE status = 'sent'")).scalar()
                if sent >= len(items):
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # a duplicate would arrive by now
            all_sent = time.perf_counter() - started
            per_chat = Counter(m.chat_id for chat_id in {c for _, c in items} for m in telegram.messages(chat_id))
            delivered = sum(1 for c in {c for _, c in items} if per_chat.get(c, 0) >= 1)
            duplicates = sum(n - 1 for n in per_chat.values() if n > 1)
        finally:
            stop_processes(procs)
            for log in logs:
                log.close()
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            for key in r.scan_iter(match=f"{prefix}*", count=1000):
                r.delete(key)

    figures = {}
    for name in paths:
        figures[f"{name}_p95_ms"] = _p(server[name], 95)
        figures[f"{name}_p50_ms"] = statistics.median(server[name])
        figures[f"{name}_roundtrip_p95_ms"] = _p(client[name], 95)
        figures[f"{name}_sql_p95_ms"] = sql[name]
        trip = figures[f"{name}_roundtrip_p95_ms"]
        print(f"{name:6} server p50 {figures[f'{name}_p50_ms']:.1f} ms, p95 {figures[f'{name}_p95_ms']:.1f} ms; "
              f"round trip p95 {trip:.1f} ms; its SQL alone p95 {sql[name]:.1f} ms")  # fmt: skip
    print(
        f"approvals: {len(items)} posted in {posted:.1f} s, all sent after {all_sent:.1f} s; "
        f"{delivered} delivered, {duplicates} duplicates"
    )
    missed = [name for name in paths if figures[f"{name}_p95_ms"] > TARGET_MS]
    ok = not missed and delivered == len(items) == args.approvals and duplicates == 0
    if not ok:
        print(
            f"target missed: pages over {TARGET_MS:.0f} ms {missed}, delivered {delivered} of {args.approvals}, "
            f"duplicates {duplicates}"
        )
    print(last_line(**{k: round(v, 1) for k, v in figures.items()}, approvals=len(items), delivered=delivered,
                    duplicates=duplicates, target_met=ok))  # fmt: skip
    return 0 if ok else 1


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _csrf(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', html)
    if not found:
        raise SystemExit("no CSRF token in the page: " + html[:500])
    return found.group(1)


def _wait_up(web) -> None:  # type: ignore[no-untyped-def]
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if web.get("/healthz").text == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the console did not come up within 60 s")


if __name__ == "__main__":
    sys.exit(main())
