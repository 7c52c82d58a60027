"""Fairness benchmark: hostile users cannot slow the bot down for everyone else.

The real path: the sandbox Telegram server with Telegram's limits on (30 messages/s overall, 1/s per chat,
20/min per group) and the sandbox LLM, both in this process; the real ``hnpal bot`` process (long polling)
and one real Celery worker (``default``, ``telegram`` and ``llm`` queues, threads pool), as an operator
runs them, with the default update budgets (HNPAL_TELEGRAM_USER_UPDATE_RATE / _BURST, _GROUP_...).

50 ordinary users each send a command (/help, /settings, /saved, /token) every 2-4 s (random) and wait
for its answer. Latency = the update offered to the bot → the answer's ``sendMessage`` arriving at the
sandbox. First a phase without attackers (the baseline, in the same run), then a phase of the same load
while, at its start:

(a) one user sends 300 plain messages in 30 s;
(b) one user floods a supergroup with 40 commands in 10 s, half of them addressed to other bots;
(c) one user bursts 25 questions (each a paid model call if answered), with a daily allowance of
    HNPAL_DISCUSSION_DAILY_MESSAGES (5 here).

Printed: the ordinary users' p50/p95/max latency in each phase, the attackers' model calls against the cap,
their updates by outcome and the lost ones (an update the sandbox handed out that is not stored as
processed, deferred (waiting in its sender's own line) or refused with a recorded reason). Targets:
ordinary p95 <= 2 s and <= 2x the no-attacker p95; model calls within the cap; 0 lost.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import REDIS_URL, REPO, bench_database, last_line, stop_processes, use_settings, wait_for_workers

LLM_KEY = "sk-bench-fairness"
ORDINARY_FIRST = 8_300_001
FLOODER, GROUPER, ASKER = 8_390_001, 8_390_002, 8_390_003
GROUP = -1_008_390_000
COMMANDS = ("/help", "/settings", "/saved", "/token")
DAILY_CAP = 5


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


class Ordinary:
    """The 50 ordinary users: each a thread sending a command, waiting for its answer, pausing 2-4 s."""

    def __init__(self, tg, users: list[int]) -> None:  # type: ignore[no-untyped-def]
        self.tg = tg
        self.users = users
        self.phase = "warmup"
        self.latencies: dict[str, list[float]] = {}
        self.timeouts: dict[str, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(uid,), daemon=True) for uid in users]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self, uid: int) -> None:
        rng = random.Random(uid)
        self.stop.wait(rng.uniform(0, 3))
        while not self.stop.is_set():
            phase = self.phase
            before = len(self.tg.messages(uid))
            offered = time.monotonic()
            self.tg.send_user_message(uid, rng.choice(COMMANDS))
            try:
                answer = self.tg.wait_for_messages(uid, before + 1, timeout=60)[before]
                latency = answer.sent_at - offered
            except TimeoutError:
                with self.lock:
                    self.timeouts[phase] = self.timeouts.get(phase, 0) + 1
                continue
            if phase == self.phase:  # a command that straddles two phases counts in neither
                with self.lock:
                    self.latencies.setdefault(phase, []).append(latency)
            self.stop.wait(rng.uniform(2, 4))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=70)


def attack(tg, sent: dict[str, list[int]]) -> list[threading.Thread]:  # type: ignore[no-untyped-def]
    def flood() -> None:  # (a) 300 plain messages in 30 s
        for n in range(300):
            sent["a"].append(tg.send_user_message(FLOODER, f"look at this {n}")["update_id"])
            time.sleep(0.1)

    def group() -> None:  # (b) 40 commands in 10 s into one supergroup, half for other bots
        for n in range(40):
            text = ("/help@OtherBot", "/digest", "/x@SomeOtherBot now", "/start")[n % 4]
            update = tg.send_user_message(GROUPER, text, chat_type="supergroup", chat_id=GROUP)
            sent["b"].append(update["update_id"])
            time.sleep(0.25)

    def ask() -> None:  # (c) 25 questions at once
        for n in range(25):
            sent["c"].append(tg.send_user_message(ASKER, f"what is the best cache design, part {n}?")["update_id"])

    threads = [threading.Thread(target=fn, daemon=True) for fn in (flood, group, ask)]
    for thread in threads:
        thread.start()
    return threads


def outcomes(update_ids: list[int]) -> dict[str, int]:
    """The attacker updates by status, and how many are lost (not stored, or quarantined without a reason)."""
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    with session_scope() as session:
        found = session.execute(
            text("SELECT update_id, status, error FROM telegram_updates WHERE update_id = ANY(:ids)"),
            {"ids": update_ids},
        ).all()
    counts: dict[str, int] = {}
    for _, status, _ in found:
        counts[status] = counts.get(status, 0) + 1
    unexplained = sum(1 for _, status, error in found if status == "quarantined" and not error)
    counts["lost"] = len(set(update_ids)) - len(found) + unexplained
    return counts


def summary(name: str, values: list[float], timeouts: int) -> dict[str, float]:
    ms = [v * 1000 for v in values] or [float("nan")]
    result = {"p50": statistics.median(ms), "p95": percentile(ms, 95), "max": max(ms), "n": len(values)}
    print(f"{name}: {len(values)} commands, p50 {result['p50']:.0f} ms, p95 {result['p95']:.0f} ms, "
          f"max {result['max']:.0f} ms, {timeouts} without an answer within 60 s")  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--baseline-seconds", type=float, default=45.0)
    parser.add_argument("--attack-seconds", type=float, default=120.0)
    parser.add_argument("--target-ms", type=float, default=2000.0, help="ordinary users' p95 under attack")
    parser.add_argument("--ratio", type=float, default=2.0, help="p95 under attack / p95 without, at most")
    args = parser.parse_args()

    from hnpal.sandbox.llm_api import LLMServer
    from hnpal.sandbox.telegram_api import TelegramServer

    workdir = Path(tempfile.mkdtemp(prefix="hnpal-bench-fairness-"))
    tg = TelegramServer(enforce_limits=True)  # Telegram's limits: 30/s overall, 1/s per chat, 20/min per group
    tg.start()
    llm = LLMServer(api_key=LLM_KEY, latency=0.2)
    llm.start()
    procs: list[subprocess.Popen] = []
    users = [ORDINARY_FIRST + n for n in range(args.users)]
    for n, uid in enumerate(users):
        tg.add_user(uid, first_name=f"Reader {n}")
    for uid, name in ((FLOODER, "Flood"), (GROUPER, "Grouper"), (ASKER, "Asker")):
        tg.add_user(uid, first_name=name)
    tg.add_group(GROUP, "Busy group", chat_type="supergroup")
    sent: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    with bench_database() as url:
        use_settings(
            database_url=url,
            redis_url=REDIS_URL,
            redis_key_prefix=f"bench-fairness-{uuid.uuid4().hex[:6]}:",
            telegram_token=tg.token,
            telegram_base_url=tg.base_url,
            telegram_poll_timeout="10",
            openai_base_url=llm.base_url,
            openai_api_key=LLM_KEY,
            content_path=str(workdir / "content.rocksdb"),
            discussion_daily_messages=str(DAILY_CAP),
            log_level=os.environ.get("BENCH_WORKER_LOG", "WARNING"),
        )
        for key in ("TELEGRAM_USER_UPDATE_RATE", "TELEGRAM_USER_UPDATE_BURST", "TELEGRAM_GROUP_UPDATE_RATE",
                    "TELEGRAM_GROUP_UPDATE_BURST"):  # fmt: skip
            os.environ.pop(f"HNPAL_{key}", None)  # the defaults, as shipped
        env = dict(os.environ)
        ordinary = Ordinary(tg, users)
        try:
            worker = [sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", "default,telegram,llm",
                      "-P", "threads", "-c", "8", "-n", f"fairness-{uuid.uuid4().hex[:4]}@%h", "--without-gossip",
                      "--without-mingle", "--without-heartbeat", "-l", env["HNPAL_LOG_LEVEL"]]  # fmt: skip
            hnpal = str(Path(sys.executable).parent / "hnpal")
            for name, cmd in (("worker", worker), ("bot", [hnpal, "bot"])):
                log = (workdir / f"{name}.log").open("w")
                procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
            wait_for_workers(1, timeout=90, what=f"worker (see {workdir})")

            ordinary.start()
            time.sleep(10)  # warm-up: imports, pooled connections, every user's row
            ordinary.phase = "baseline"
            time.sleep(args.baseline_seconds)
            ordinary.phase = "attack"
            llm_before = len(llm.requests)
            attackers = attack(tg, sent)
            time.sleep(args.attack_seconds)
            ordinary.finish()
            for thread in attackers:
                thread.join()
            model_calls = len(llm.requests) - llm_before
            time.sleep(5)  # updates fetched just now: stored and claimed
            result = {key: outcomes(ids) for key, ids in sent.items()}
            group_answers = len(tg.messages(GROUP))
            notices = sum(m.text.startswith("You're sending messages faster") for m in tg.messages(FLOODER))
        finally:
            ordinary.stop.set()
            stop_processes(procs)
            tg.stop()
            llm.stop()

    base = summary("no attackers", ordinary.latencies.get("baseline", []), ordinary.timeouts.get("baseline", 0))
    under = summary("under attack", ordinary.latencies.get("attack", []), ordinary.timeouts.get("attack", 0))
    for key, label in (("a", "(a) 300 messages"), ("b", "(b) 40 group commands"), ("c", "(c) 25 questions")):
        print(f"{label}: {dict(sorted(result[key].items()))}")
    print(f"group answers: {group_answers}; over-budget notices to (a): {notices}; 429s: {tg.too_many_requests}; "
          f"model calls by the attackers: {model_calls} (cap {DAILY_CAP})")  # fmt: skip
    lost = sum(r["lost"] for r in result.values())
    deferred = sum(r.get("deferred", 0) for r in result.values())
    timeouts = sum(ordinary.timeouts.values())
    checks = {
        f"ordinary p95 <= {args.target_ms:.0f} ms under attack": under["p95"] <= args.target_ms,
        f"ordinary p95 under attack <= {args.ratio:g}x without": under["p95"] <= args.ratio * base["p95"],
        "attackers' model calls within the cap": model_calls <= DAILY_CAP,
        "no attacker update lost": lost == 0,
        "every ordinary command answered": timeouts == 0,
    }
    for name, met in checks.items():
        print(f"target: {name}: {'met' if met else 'NOT met'}")
    print(f"logs in {workdir}")
    print(
        last_line(
            users=args.users,
            base_p50_ms=base["p50"],
            base_p95_ms=base["p95"],
            base_max_ms=base["max"],
            p50_ms=under["p50"],
            p95_ms=under["p95"],
            max_ms=under["max"],
            attacker_model_calls=model_calls,
            model_cap=DAILY_CAP,
            attacker_updates=sum(len(v) for v in sent.values()),
            deferred=deferred,
            lost=lost,
            unanswered=timeouts,
            telegram_429=tg.too_many_requests,
            target_ms=args.target_ms,
        )
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
