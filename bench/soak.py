"""Soak benchmark: 30 simulated minutes of the whole system, compressed into a few real ones.

``hnpal up`` (no Flower, no metrics server) runs every worker, one beat and the bot against the sandbox
servers of this process, on a database (``bench_database``) and a Redis key prefix of its own:

* the HN replay server (bundled snapshot) gains a new story every ``--story-every`` real seconds, linking
  to one of its article pages (a distinct URL each time), so fetch → crawl → content → summarize runs
  all along;
* the sandbox Telegram server (Telegram's limits: 30 messages/s, 1/s per chat) with ``--users`` users
  (500), whose digests fall due in three cohorts (10 % early, as part of the warm-up, then two halves a
  minute apart); most read brief digests, one in ten a three-post flat scroll;
* ``--discussers`` of them (50) discuss a post through the bot (``/discuss``, several messages each,
  answered on the llm queue by the sandbox LLM, then ``/done``);
* the beat intervals that are settings (fetch, refresh, crawl dispatch, content sweep, digests due) are
  divided by ``--speedup`` (``30 min / --minutes real``), so the schedule runs as it would in 30 minutes.
  The fixed intervals of celeryconfig (summary sweep, telegram and discussion sweeps) are not scaled.

The run starts with one list fetch sent at once (as an operator would prime a fresh system with
``celery call``) and the clock starts when 20 posts are summarized. Warm-up is over when every kind of
work has run once (crawls, summaries, the first digest cohort sent, discussion answers) and ``--warmup``
of the run has passed (at half-time at the latest): imports done on first use (extractors, the LLM
client, the sender's connections) are not growth.

Sampled every second: each queue's depth (Redis), and the RSS of each ``hnpal up`` child with its pool
processes (psutil). Printed: tasks/s (``hnpal.task`` SUCCESS lines in the workers' logs, per real
second), the queue depth max, each process's RSS high-water mark, after warm-up and at the end, the
failures (task FAILURE lines, quarantined updates, failed digests, restarted children, digests or
answers missing), and whether memory grew without bound: target final RSS / RSS after warm-up ≤ 1.2 for
every process, and no failure. Exit 1 when missed. The last line is key=value pairs.

    .venv/bin/python bench/soak.py [--minutes 4] [--users 500] [--discussers 50]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import REDIS_URL, REPO, bench_database, last_line, use_settings

SIMULATED_MINUTES = 30
FIRST_TID = 8_300_001
LLM_KEY = "sk-bench-soak"
CHILDREN = ("content", "crawl", "default", "llm", "telegram", "beat", "bot")
STATUS = re.compile(r"^status \S+ (\S+)\s+pid=(\S+)\s+state=(\S+)\s+restarts=(\d+)", re.MULTILINE)
TASK_LINE = re.compile(r"task=(\S+) id=\S+ state=(\w+)")
QUEUES = ("default", "crawl", "content", "llm", "telegram")
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
TOPICS = ["AI", "Programming", "Databases", "Security", "Linux", "Web", "Hardware", "Science"]
QUESTIONS = [
    "What is the main claim of the article?",
    "Is there a catch the author does not mention?",
    "How would this apply to a small team?",
    "Which part would you try first, and why?",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="real minutes for the 30 simulated ones")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--discussers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=4, help="messages per discussion")
    parser.add_argument("--story-every", type=float, default=2.0, help="real seconds between new HN stories")
    parser.add_argument("--warmup", type=float, default=0.3, help="fraction of the run that is warm-up")
    parser.add_argument("--target-ratio", type=float, default=1.2)
    return parser.parse_args(argv)


# --- the world ---------------------------------------------------------------------------------------


def seed_users(count: int, first_cohort: datetime, second: datetime, third: datetime) -> None:
    """Users who have started the bot, with their digest times in three cohorts (UTC)."""
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    rng = random.Random(7)
    rows = []
    for n in range(count):
        when = first_cohort if n < count // 10 else (second if n % 2 else third)
        flat = n % 10 == 9
        prefs = {"style": "flat_scroll" if flat else "brief", "max_posts": 3 if flat else 8,
                 "time": f"{when:%H:%M}", "timezone": "UTC"}  # fmt: skip
        rows.append({"tid": FIRST_TID + n, "name": f"Soak {n}", "interests": json.dumps(rng.sample(TOPICS, 2)),
                     "prefs": json.dumps(prefs)})  # fmt: skip
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO users (telegram_id, first_name, interests, digest_preferences, created_at) "
                "VALUES (:tid, :name, CAST(:interests AS jsonb), CAST(:prefs AS jsonb), now() - interval '3 days')"
            ),
            rows,
        )


class Stories(threading.Thread):
    """Adds a story to the replay server every ``every`` seconds, linking to one of its article pages."""

    def __init__(self, replay, every: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(name="soak-stories", daemon=True)
        self.replay = replay
        self.every = every
        self.stop = threading.Event()
        self.added = 0
        self.pages = sorted(p for p in replay.snapshot.pages if p.startswith("/articles/"))

    def run(self) -> None:
        rng = random.Random(11)
        for n in itertools.count(1):
            if self.stop.wait(self.every):
                return
            page = self.pages[n % len(self.pages)]
            self.replay.add_story(
                title=f"{rng.choice(TOPICS)}: soak story {n} on {page.rsplit('/', 1)[1][:-5].replace('-', ' ')}",
                url=self.replay.url(f"{page}?soak={n}"),
                score=rng.randint(20, 400),
                by=f"soak{n % 7}",
            )
            self.added += 1


class Sampler(threading.Thread):
    """Every second: queue depths and the RSS of each child process tree."""

    def __init__(self, prefix: str, up_out: Path) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        import redis

        self.redis = redis.Redis.from_url(REDIS_URL)
        self.prefix = prefix
        self.up_out = up_out
        self.stop = threading.Event()
        self.depth_max: dict[str, int] = dict.fromkeys(QUEUES, 0)
        self.total_depth_max = 0
        self.rss_peak: dict[str, int] = {}
        self.rss_now: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.restarts: dict[str, int] = {}

    def status(self) -> None:
        text = self.up_out.read_text(errors="replace")
        for name, pid, _state, restarts in STATUS.findall(text):
            if pid.isdigit():
                self.pids[name] = int(pid)
            self.restarts[name] = int(restarts)

    def rss(self) -> dict[str, int]:
        import psutil

        found: dict[str, int] = {}
        for name, pid in self.pids.items():
            if name not in CHILDREN:
                continue
            try:
                proc = psutil.Process(pid)
                found[name] = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                continue
        return found

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        self.status()
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(f"{self.prefix}{queue}{suffix}")
            lengths = pipe.execute()
        step = len(PRIORITY_SUFFIXES)
        total = 0
        for i, queue in enumerate(QUEUES):
            depth = sum(lengths[i * step : (i + 1) * step])
            total += depth
            self.depth_max[queue] = max(self.depth_max[queue], depth)
        self.total_depth_max = max(self.total_depth_max, total)
        self.rss_now = self.rss()
        for name, value in self.rss_now.items():
            self.rss_peak[name] = max(self.rss_peak.get(name, 0), value)

    def depth(self) -> int:
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(f"{self.prefix}{queue}{suffix}")
            return sum(pipe.execute())


class Discussions(threading.Thread):
    """``discussers`` users each discuss a post: /discuss, ``messages`` questions, /done."""

    def __init__(self, tg, users: list[int], messages: int, spacing: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(name="soak-discussions", daemon=True)
        self.tg = tg
        self.users = users
        self.messages = messages
        self.spacing = spacing
        self.sent = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            hn_ids = _summarized_hn_ids(len(self.users))
            for user, hn_id in zip(self.users, itertools.cycle(hn_ids), strict=False):
                self.tg.send_user_message(user, f"/discuss {hn_id}")
                self.sent += 1
            for n in range(self.messages):
                time.sleep(self.spacing)
                for user in self.users:
                    self.tg.send_user_message(user, f"{QUESTIONS[n % len(QUESTIONS)]} ({n + 1})")
                    self.sent += 1
            time.sleep(self.spacing)
            for user in self.users:
                self.tg.send_user_message(user, "/done")
                self.sent += 1
        except Exception as exc:  # noqa: BLE001 - reported as a failure of the bench
            self.error = f"{type(exc).__name__}: {exc}"


def _summarized_hn_ids(count: int) -> list[int]:
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    deadline = time.monotonic() + 120
    while True:
        with session_scope() as session:
            ids = list(
                session.scalars(
                    text("SELECT hn_id FROM posts WHERE summary IS NOT NULL ORDER BY score DESC LIMIT :n"), {"n": count}
                )
            )
        if ids or time.monotonic() > deadline:
            return ids or [1]
        time.sleep(1)


def send_task(prefix: str, name: str, *args: object) -> None:
    from celery import Celery

    from hnpal.runtime import broker_url

    client = Celery("hnpal-soak", broker=broker_url(), set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    try:
        client.send_task(name, args=list(args), queue="default")
    finally:
        client.close()


def wait_summarized(count: int, timeout: float) -> None:
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            if session.execute(text("SELECT count(*) FROM posts WHERE summary IS NOT NULL")).scalar() >= count:
                return
        time.sleep(1)
    print(f"soak: fewer than {count} posts summarized after {timeout:.0f}s; starting anyway", flush=True)


def warmed_up(first_tid: int, cohort: int) -> bool:
    """The first digest cohort is sent and discussions have been answered."""
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    with session_scope() as session:
        sent = session.execute(
            text(
                "SELECT count(*) FROM digests g JOIN users u ON u.id = g.user_id WHERE g.status = 'sent' "
                "AND u.telegram_id < :b"
            ),
            {"b": first_tid + cohort},
        ).scalar()
        answers = session.execute(
            text(
                "SELECT count(*) FROM conversations c, jsonb_array_elements(c.messages) m "
                "WHERE m->>'role' = 'assistant'"
            )
        ).scalar()
    return sent >= cohort and answers > 0


def task_counts(log_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in log_dir.glob("*.log"):
        for _task, state in TASK_LINE.findall(path.read_text(errors="replace")):
            counts[state] = counts.get(state, 0) + 1
    return counts


def failed_tasks(log_dir: Path) -> tuple[list[str], int]:
    """Task failures, and apart from them the crawls that failed for good: a page its site refused (404, a
    redirect loop, a type that is not crawled; the snapshot holds some on purpose) is recorded and shown
    as a FAILURE in Flower, but it is the site's failure, not HN Pal's."""
    found = []
    crawls_refused = 0
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if " state=FAILURE " in line and 'error="WorkFailed: crawl of post ' in line:
                crawls_refused += 1
            elif " state=FAILURE " in line or " raised unexpected" in line:
                found.append(f"{path.stem}: {line[:300]}")
    return found, crawls_refused


def database_figures(first: int, count: int) -> dict[str, int]:
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    with session_scope() as session:

        def one(sql: str) -> int:
            return int(session.execute(text(sql), {"a": first, "b": first + count}).scalar() or 0)

        return {
            "posts": one("SELECT count(*) FROM posts"),
            "posts_summarized": one("SELECT count(*) FROM posts WHERE summary IS NOT NULL"),
            "posts_crawled": one("SELECT count(*) FROM posts WHERE is_crawl_success"),
            "users_with_digest": one(
                "SELECT count(DISTINCT g.user_id) FROM digests g JOIN users u ON u.id = g.user_id "
                "WHERE g.status = 'sent' AND u.telegram_id >= :a AND u.telegram_id < :b"
            ),
            "digests_failed": one("SELECT count(*) FROM digests WHERE status = 'failed'"),
            "updates": one("SELECT count(*) FROM telegram_updates"),
            "updates_quarantined": one("SELECT count(*) FROM telegram_updates WHERE status = 'quarantined'"),
            "updates_unfinished": one(
                "SELECT count(*) FROM telegram_updates WHERE status NOT IN ('processed', 'quarantined')"
            ),  # fmt: skip
            "answers": one(
                "SELECT count(*) FROM conversations c, jsonb_array_elements(c.messages) m "
                "WHERE m->>'role' = 'assistant'"
            ),
        }


# --- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hnpal.sandbox.hn_replay import HNReplayServer
    from hnpal.sandbox.llm_api import LLMServer
    from hnpal.sandbox.telegram_api import TelegramServer

    duration = args.minutes * 60
    speedup = SIMULATED_MINUTES / args.minutes
    workdir = Path(tempfile.mkdtemp(prefix="hnpal-bench-soak-"))
    prefix = f"hnpal-soak-{uuid.uuid4().hex[:6]}:"
    replay = HNReplayServer().start()
    tg = TelegramServer(enforce_limits=True)
    users = [FIRST_TID + n for n in range(args.users)]
    for n, tid in enumerate(users):
        tg.add_user(tid, first_name=f"Soak {n}")
    tg.start()
    llm = LLMServer(api_key=LLM_KEY, latency=0.05, model="soak-model").start()
    stories = Stories(replay, args.story_every)
    up: subprocess.Popen | None = None
    code = 1
    with bench_database() as url:
        intervals = {"fetch_interval": 600, "refresh_interval": 1800, "crawl_dispatch_interval": 120,
                     "content_sweep_interval": 900, "digest_due_interval": 60}  # fmt: skip
        settings = {
            "database_url": url,
            "redis_url": REDIS_URL,
            "redis_key_prefix": prefix,
            "data_dir": str(workdir / "var"),
            "telegram_token": tg.token,
            "telegram_base_url": tg.base_url,
            "telegram_poll_timeout": "2",
            "openai_base_url": llm.base_url,
            "openai_api_key": LLM_KEY,
            "openai_model": "soak-model",
            "llm_prices": json.dumps({"soak-model": {"input": "0.15", "output": "0.60"}}),
            "hn_api_base_url": replay.api_url,
            "crawl_allow_hosts": "127.0.0.1",
            "discussion_daily_messages": "100000",
            "log_level": "INFO",
            **{k: str(max(5.0, v / speedup)) for k, v in intervals.items()},
        }
        use_settings(**settings)
        start = datetime.now(UTC)
        env = dict(os.environ)
        out_path = workdir / "up.out"
        hnpal = str(Path(sys.executable).parent / "hnpal")
        cmd = [hnpal, "up", "--no-flower", "--no-metrics", "--crawl-concurrency", "1", "--default-concurrency",
               "1", "--llm-threads", "4", "--telegram-threads", "8", "--status-interval", "1", "--stop-timeout",
               "60"]  # fmt: skip
        print(f"soak: {args.minutes:g} real minutes for {SIMULATED_MINUTES} simulated (speed-up {speedup:.1f}), "
              f"{args.users} users, {args.discussers} discussing; logs in {workdir}", flush=True)  # fmt: skip
        with out_path.open("w") as out:
            up = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = Sampler(prefix, out_path)
        try:
            deadline = time.monotonic() + 180
            while not all(
                re.search(rf"^status \S+ {name}\s+pid=\d+\s+state=running", out_path.read_text(), re.MULTILINE)
                for name in CHILDREN
            ):
                if up.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"hnpal up did not start everything:\n{out_path.read_text()[-3000:]}")
                time.sleep(0.5)
            print(f"soak: stack up after {(datetime.now(UTC) - start).total_seconds():.0f}s", flush=True)
            # The first list fetch now, as an operator would start a fresh system (`celery call`), rather
            # than after the first fetch interval; the clock starts once there are posts to send.
            send_task(prefix, "hnpal.ingest.fetch")
            wait_summarized(20, timeout=120)
            # digest times: the next minute at least 30 s away (10 %, part of the warm-up), then two halves
            first = (datetime.now(UTC) + timedelta(seconds=90)).replace(second=0, microsecond=0)
            seed_users(args.users, first, first + timedelta(minutes=1), first + timedelta(minutes=2))
            began = time.monotonic()
            tasks_before = task_counts(workdir / "var" / "logs").get("SUCCESS", 0)
            print(f"soak: clock started {(datetime.now(UTC) - start).total_seconds():.0f}s after launch", flush=True)
            sampler.start()
            stories.start()
            discussers = users[args.users // 10 : args.users // 10 + args.discussers]
            talks = Discussions(tg, discussers, args.messages, spacing=max(3.0, duration / 12))
            threading.Timer(duration * 0.1, talks.start).start()
            warm_rss: dict[str, int] = {}
            trajectory: dict[str, list[int]] = {}
            checkpoints = [duration * n / 10 for n in range(1, 11)]
            while (elapsed := time.monotonic() - began) < duration:
                # Warm-up is over once every kind of work has run (crawls, summaries, the first digest
                # cohort, discussion answers) and --warmup of the run has passed; at half-time at the latest.
                if (
                    not warm_rss
                    and elapsed >= duration * args.warmup
                    and (elapsed >= duration / 2 or warmed_up(FIRST_TID, args.users // 10))
                ):
                    warm_rss = dict(sampler.rss_now)
                    shown = " ".join(f"{k}={v / 2**20:.0f}" for k, v in sorted(warm_rss.items()))
                    print(f"soak: warm-up done at {elapsed:.0f}s: rss MB {shown}", flush=True)
                if checkpoints and elapsed >= checkpoints[0]:
                    checkpoints.pop(0)
                    for name, value in sampler.rss_now.items():
                        trajectory.setdefault(name, []).append(value)
                if up.poll() is not None:
                    raise RuntimeError(f"hnpal up exited with {up.returncode}")
                time.sleep(1)
            stories.stop.set()
            talks.join(timeout=60)
            drain_deadline = time.monotonic() + 60
            while sampler.depth() and time.monotonic() < drain_deadline:
                time.sleep(1)
            time.sleep(3)  # in-flight tasks finish
            sampler.sample()
            real = time.monotonic() - began
            final_rss = dict(sampler.rss_now)
            counts = task_counts(workdir / "var" / "logs")
            figures = database_figures(FIRST_TID, args.users)
        finally:
            sampler.stop.set()
            stories.stop.set()
            if up is not None and up.poll() is None:
                os.killpg(up.pid, signal.SIGTERM)
                try:
                    up.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
                    up.wait()
            tg.stop()
            llm.stop()
            replay.stop()
        failures, crawls_refused = failed_tasks(workdir / "var" / "logs")
        restarts = sum(sampler.restarts.get(name, 0) for name in CHILDREN)
        expected_answers = len(discussers) * args.messages
        missing_digests = args.users - figures["users_with_digest"]
        missing_answers = max(0, expected_answers - figures["answers"])
        failure_count = (
            len(failures) + figures["updates_quarantined"] + figures["digests_failed"] + restarts
            + figures["updates_unfinished"] + missing_digests + missing_answers + (1 if talks.error else 0)
        )  # fmt: skip
        ratios = {name: final_rss[name] / warm_rss[name] for name in final_rss if warm_rss.get(name)}
        ratio_max = max(ratios.values()) if ratios else float("inf")
        tasks = counts.get("SUCCESS", 0) - tasks_before
        print(f"soak: {real:.0f}s real, {tasks} tasks succeeded ({tasks / real:.1f}/s), states {counts}")
        print(f"soak: {stories.added} stories added; database {figures}")
        print("soak: queue depth max " + " ".join(f"{q}={d}" for q, d in sampler.depth_max.items())
              + f" (all queues together {sampler.total_depth_max})")  # fmt: skip
        for name in CHILDREN:
            if name in final_rss:
                print(f"soak: {name:<9} rss peak {sampler.rss_peak[name] / 2**20:6.1f} MB, after warm-up "
                      f"{warm_rss.get(name, 0) / 2**20:6.1f} MB, final {final_rss[name] / 2**20:6.1f} MB, "
                      f"ratio {ratios.get(name, float('nan')):.3f}; every tenth of the run: "
                      + " ".join(f"{v / 2**20:.0f}" for v in trajectory.get(name, [])))  # fmt: skip
        print(f"soak: failures {failure_count}: task failures {len(failures)}, quarantined updates "
              f"{figures['updates_quarantined']}, failed digests {figures['digests_failed']}, restarts {restarts}, "
              f"unfinished updates {figures['updates_unfinished']}, users without a digest {missing_digests}, "
              f"answers missing {missing_answers}{', discussions: ' + talks.error if talks.error else ''}; "
              f"crawls the sites refused for good (not counted) {crawls_refused}")  # fmt: skip
        for line in failures[:10]:
            print(f"  {line}")
        bounded = ratio_max <= args.target_ratio
        met = bounded and failure_count == 0
        print(f"target: final RSS / RSS after warm-up <= {args.target_ratio} for every process "
              f"({'bounded' if bounded else 'NOT bounded'}) and 0 failures: {'met' if met else 'NOT met'}")  # fmt: skip
        code = 0 if met else 1
        print(
            last_line(
                real_s=real,
                simulated_min=SIMULATED_MINUTES,
                tasks=tasks,
                tasks_per_s=tasks / real,
                queue_depth_max=sampler.total_depth_max,
                failures=failure_count,
                rss_ratio_max=ratio_max,
                users_with_digest=figures["users_with_digest"],
                answers=figures["answers"],
                stories_added=stories.added,
                **{f"rss_peak_mb_{k}": round(v / 2**20, 1) for k, v in sorted(sampler.rss_peak.items())},
                memory_bounded="yes" if bounded else "no",
            )
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
