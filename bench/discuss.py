"""Discussion benchmark: what the bot → queue → worker path adds to a discussion answer.

Users discuss a post through the real path: the sandbox Telegram server (in this process) hands each
message to the real ``hnpal bot`` process (long polling), which stores it and enqueues
``hnpal.telegram.handle``; a real Celery worker (``telegram`` and ``llm`` queues, threads pool) stores
the message in the conversation and enqueues ``hnpal.discussions.reply``, which builds the prompt,
calls the sandbox LLM (OpenAI-compatible, in this process, latency 0) and sends the answer.

Per message, on one clock (both sandboxes run in this process):

* in  = the update is offered to the bot  → the model request arrives at the sandbox LLM
* out = the sandbox LLM returns the answer → the bot's ``sendMessage`` arrives at the sandbox Telegram
* overhead = in + out (everything but the model's own time)

Baseline in the same run: the same work as a direct in-process call (store the message, then
``hnpal.conversations.service.reply`` here), measured the same way. Messages go one at a time (latency,
not throughput) and round-robin over the users, so Telegram's 1 message/s per chat never delays an
answer, and a new message is offered at most every 50 ms (20 a second), so the answers stay under the
30 messages/s overall that the shared limiter paces sends to. Target: p95 overhead <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import REDIS_URL, REPO, bench_database, last_line, stop_processes, use_settings, wait_for_workers

LLM_KEY = "sk-bench-discuss"
FIRST_TID = 8_100_001
QUESTION = "q{n}: what does the author claim about the cache, and is it right?"
# One message at a time, and at most 20 a second: the answers then leave at most 20 a second too, under
# Telegram's 30 per second overall, so the shared limiter's pacing never delays one (see the docstring).
MIN_GAP = 0.05


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


class Clock:
    """The sandbox LLM's side: when each question's model request arrived and when its answer left."""

    def __init__(self, llm) -> None:  # type: ignore[no-untyped-def]
        self.llm = llm
        self.answered: dict[str, float] = {}
        self.events: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def expect(self, marker: str) -> threading.Event:
        with self.lock:
            event = self.events[marker] = threading.Event()
        return event

    def responder(self, body: dict) -> str | None:  # called by the sandbox as it answers
        messages = body.get("messages") or []
        last = messages[-1].get("content") if messages else None
        marker = last.split(":", 1)[0] if isinstance(last, str) and last.startswith("q") else None
        with self.lock:
            event = self.events.get(marker) if marker else None
        if event is None:
            return None  # a fold of older turns or anything else: the default answer
        answer = f"Answer to {marker}: the author measured it, and the numbers support the claim."
        with self.lock:
            self.answered[marker] = time.monotonic()
        event.set()
        return answer

    def arrived(self, marker: str) -> float:
        with self.llm._lock:
            for request in reversed(self.llm.requests):
                messages = request.get("messages") or []
                last = messages[-1].get("content") if messages else None
                if isinstance(last, str) and last.startswith(f"{marker}:"):
                    return request["received_at"]
        raise LookupError(f"no model request for {marker}")


def seed_posts(count: int) -> None:
    from sqlalchemy import text

    from hnpal.db.session import session_scope

    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO posts (hn_id, type, title, url, domain, score, comment_count, summarized_at, summary, "
                "summary_status) VALUES (:hn_id, 'story', :title, 'https://example.com/' || :hn_id, 'example.com', "
                "100, 3, now(), 'The author benchmarks a cache and reports a large speed-up.', 'done')"
            ),
            [{"hn_id": 90_000 + n, "title": f"Benchmarking a cache, part {n}"} for n in range(count)],
        )


def start_discussions(tg, users: list[int]) -> None:  # type: ignore[no-untyped-def]
    for n, uid in enumerate(users):
        tg.add_user(uid, first_name=f"Reader {n}")
        tg.send_user_message(uid, f"/discuss {90_000 + n}")
    for uid in users:
        header = tg.wait_for_messages(uid, 1, timeout=60)[0]
        if "Discussing" not in header.text:
            raise RuntimeError(f"no discussion header for {uid}: {header.text[:200]!r}")


def measure(tg, clock: Clock, users: list[int], rounds: int, send) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    """(in, out) seconds per message; ``send(uid, text)`` delivers one user message."""
    figures = []
    n = 0
    next_offer = 0.0
    for _ in range(rounds):
        for uid in users:
            marker = f"q{n}"
            n += 1
            before = len(tg.messages(uid))
            event = clock.expect(marker)
            time.sleep(max(0.0, next_offer - time.monotonic()))
            next_offer = time.monotonic() + MIN_GAP
            offered = time.monotonic()
            send(uid, QUESTION.format(n=n - 1))
            if not event.wait(30):
                raise TimeoutError(f"the model was not asked {marker} within 30 s")
            sent = tg.wait_for_messages(uid, before + 1, timeout=30)[before]
            if marker not in sent.text:
                raise RuntimeError(f"unexpected answer for {marker}: {sent.text[:200]!r}")
            figures.append((clock.arrived(marker) - offered, sent.sent_at - clock.answered[marker]))
    return figures


def in_process_sender(tg):  # type: ignore[no-untyped-def]
    """The baseline: the handler's and the task's work as direct calls in this process."""
    from hnpal.conversations import service
    from hnpal.db.session import session_scope
    from hnpal.users.models import User

    def send(uid: int, text: str) -> None:
        with session_scope() as session:
            user_id = session.query(User.id).filter(User.telegram_id == uid).scalar()
            conversation = service.active_conversation(session=session, user_id=user_id)
            index = service.append_user_message(session=session, conversation_id=conversation.id, text=text)
        service.reply(conversation_id=conversation.id, message_index=index)

    return send


def summary(name: str, figures: list[tuple[float, float]]) -> dict[str, float]:
    ins = [f[0] * 1000 for f in figures]
    outs = [f[1] * 1000 for f in figures]
    total = [a + b for a, b in zip(ins, outs, strict=True)]
    result = {
        "p50_ms": statistics.median(total),
        "p95_ms": _percentile(total, 95),
        "in_p50_ms": statistics.median(ins),
        "in_p95_ms": _percentile(ins, 95),
        "out_p50_ms": statistics.median(outs),
        "out_p95_ms": _percentile(outs, 95),
    }
    print(
        f"{name}: {len(figures)} messages; overhead p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms "
        f"(update → model request p50 {result['in_p50_ms']:.1f} / p95 {result['in_p95_ms']:.1f} ms; "
        f"answer → sendMessage p50 {result['out_p50_ms']:.1f} / p95 {result['out_p95_ms']:.1f} ms)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--users", type=int, default=40, help="discussions the messages are spread over")
    parser.add_argument("--baseline-messages", type=int, default=100)
    parser.add_argument("--target-ms", type=float, default=50.0, help="p95 overhead target")
    args = parser.parse_args()
    rounds = max(1, args.messages // args.users)

    from hnpal.sandbox.llm_api import LLMServer
    from hnpal.sandbox.telegram_api import TelegramServer

    workdir = Path(tempfile.mkdtemp(prefix="hnpal-bench-discuss-"))
    tg = TelegramServer(enforce_limits=True)  # Telegram's real limits: 30/s overall, 1/s per chat
    tg.start()
    llm = LLMServer(api_key=LLM_KEY, latency=0.0, context_tokens=200_000)
    clock = Clock(llm)
    llm.set_responder(clock.responder)
    llm.start()
    procs: list[subprocess.Popen] = []
    with bench_database() as url:
        use_settings(
            database_url=url,
            redis_url=REDIS_URL,
            redis_key_prefix=f"bench-discuss-{uuid.uuid4().hex[:6]}:",
            telegram_token=tg.token,
            telegram_base_url=tg.base_url,
            telegram_poll_timeout="10",
            openai_base_url=llm.base_url,
            openai_api_key=LLM_KEY,
            content_path=str(workdir / "content.rocksdb"),
            discussion_daily_messages="100000",
            log_level=os.environ.get("BENCH_WORKER_LOG", "WARNING"),
        )
        users = [FIRST_TID + n for n in range(args.users)]
        baseline_users = [FIRST_TID + args.users + n for n in range(args.users)]
        seed_posts(2 * args.users)
        env = dict(os.environ)
        try:
            worker = [sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", "telegram,llm", "-P", "threads",
                      "-c", "4", "-n", f"discuss-{uuid.uuid4().hex[:4]}@%h", "--without-gossip", "--without-mingle",
                      "--without-heartbeat", "-l", env["HNPAL_LOG_LEVEL"]]  # fmt: skip
            hnpal = str(Path(sys.executable).parent / "hnpal")
            for name, cmd in (("worker", worker), ("bot", [hnpal, "bot"])):
                log = (workdir / f"{name}.log").open("w")
                procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))

            wait_for_workers(1, timeout=90, what=f"worker (see {workdir})")
            start_discussions(tg, users + baseline_users)
            # warm-up: one message per discussion path (imports, pooled connections, the model client)
            measure(tg, clock, users[:2], 1, tg.send_user_message)
            path = summary("bot → queue → worker", measure(tg, clock, users, rounds, tg.send_user_message))
            base = summary("in-process baseline", measure(tg, clock, baseline_users, max(1, args.baseline_messages
                                                                                          // args.users),
                                                          in_process_sender(tg)))  # fmt: skip
        finally:
            stop_processes(procs)
            tg.stop()
            llm.stop()
    met = path["p95_ms"] <= args.target_ms
    print(f"target: p95 overhead <= {args.target_ms:.0f} ms: {'met' if met else 'NOT met'} (logs in {workdir})")
    print(
        last_line(
            messages=rounds * len(users),
            p50_ms=path["p50_ms"],
            p95_ms=path["p95_ms"],
            in_p95_ms=path["in_p95_ms"],
            out_p95_ms=path["out_p95_ms"],
            baseline_p50_ms=base["p50_ms"],
            baseline_p95_ms=base["p95_ms"],
            target_ms=args.target_ms,
        )
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
