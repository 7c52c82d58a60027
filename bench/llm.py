"""LLM benchmark: summaries through the real ``llm`` queue against the sandbox LLM at 200 ms per call.

Phase 1: 200 posts with stored content, one `hnpal.summaries.summarize` task each, served by one llm
worker with a thread pool of --concurrency. The ideal rate is concurrency / latency (every thread
always waiting on the model); the achieved rate is measured from the first enqueue until the last
summary row exists, after a warm-up of 16 summaries, over two rounds of 200 fresh posts (the best
counts: the machine is shared and noisy). Target: achieved / ideal >= 0.8, i.e. the worker
overlaps LLM I/O.

Phase 2: 1,000 simulated users with 3 styles in use, each asking for the summaries of a 30-post digest
(30,000 requests). The number of LLM calls must equal posts x styles: generated once, shared by all.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import (
    REDIS_URL,
    REPO,
    bench_database,
    cpu_seconds,
    last_line,
    shared_pages,
    use_settings,
    wait_for_workers,
)

STYLES = ("technical", "business", "concise")
WARMUP = 16


def _serve(latency: float, urls, stop) -> None:  # type: ignore[no-untyped-def]
    from hnpal.sandbox.llm_api import LLMServer

    server = LLMServer(latency=latency, model="sandbox-model", context_tokens=64000).start()
    urls.put(server.base_url)
    stop.wait()
    print(f"sandbox LLM: max concurrent requests {server.max_concurrent}, total {len(server.requests)}")
    urls.put(len(server.requests))
    server.stop()


def article_texts(count: int) -> list[str]:
    pages = shared_pages()
    if pages:
        texts = [truth for _html, truth in pages.values() if len(truth.split()) > 150]
    else:
        texts = [
            " ".join(f"Section {i} of article {n} discusses write-ahead logs and fsync batching." for i in range(60))
            for n in range(50)
        ]
    return [texts[i % len(texts)] for i in range(count)]


def seed(store_dir: Path, count: int) -> list[int]:
    from hnpal.content import ContentStore
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    texts = article_texts(count)
    with ContentStore.open_writer(store_dir) as store, session_scope() as session:
        posts = []
        for n, text in enumerate(texts, start=1):
            store.put(n, text=text, markdown=text)
            posts.append(
                Post(hn_id=n, type="story", title=f"Article {n}", url=f"https://example.com/{n}", score=500,
                     has_text=True, has_markdown=True, is_crawl_success=True, crawl_status="success")
            )  # fmt: skip
        session.add_all(posts)
        session.flush()
        return [p.id for p in posts]


def count_rows(style: str | None = None) -> int:
    from sqlalchemy import func, select

    from hnpal.db.session import session_scope
    from hnpal.summaries.models import Summary

    with session_scope() as session:
        query = select(func.count()).select_from(Summary)
        if style:
            query = query.where(Summary.style == style)
        return session.scalar(query)


def wait_rows(expected: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while count_rows() < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count_rows()} of {expected} summaries after {timeout}s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pool", default="threads", help="the llm worker's pool (threads, prefork)")
    parser.add_argument("--prefetch", type=int, default=1, help="the llm worker's prefetch multiplier")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2, help="timed rounds of --posts posts; the best counts")
    parser.add_argument("--digest", type=int, default=30)
    args = parser.parse_args()

    urls, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(args.latency, urls, stop), daemon=True)
    server.start()
    base_url = urls.get(timeout=60)
    workdir = Path(tempfile.mkdtemp(prefix="hnpal-bench-llm-"))
    worker = None
    try:
        with bench_database() as db_url:
            use_settings(
                database_url=db_url,
                redis_url=REDIS_URL,
                redis_key_prefix=f"hnpal-bench-{uuid.uuid4().hex[:6]}:",
                content_path=str(workdir / "content.rocksdb"),
                openai_api_key="sandbox",
                openai_base_url=base_url,
                openai_model="sandbox-model",
                llm_prices='{"sandbox-model": {"input": "0.15", "output": "0.60"}}',
                llm_paid_min_score="0",
                llm_daily_budget_usd="1000",
                log_level="WARNING",
            )
            ids = seed(workdir / "content.rocksdb", WARMUP + args.posts * args.runs)
            cmd = [
                sys.executable, "-m", "celery", "-A", "hnpal", "worker", "-Q", "llm", "-P", args.pool,
                "-c", str(args.concurrency), "--prefetch-multiplier", str(args.prefetch),
                "-n", f"llm-{uuid.uuid4().hex[:4]}@%h", "--without-gossip",
                "--without-mingle", "--without-heartbeat", "-l", os.environ.get("BENCH_WORKER_LOG", "WARNING"),
            ]  # fmt: skip
            worker = subprocess.Popen(
                cmd, env=dict(os.environ), cwd=REPO, stdout=(workdir / "llm.log").open("w"), stderr=subprocess.STDOUT
            )
            from tasks.summaries import summarize

            wait_for_workers(1, what="llm worker")
            time.sleep(1.0)

            # Warm-up (connections, first requests), then --runs timed rounds of --posts fresh posts each;
            # the machine is shared and noisy, so the best round counts.
            warm, rounds = ids[:WARMUP], [ids[WARMUP + n * args.posts : WARMUP + (n + 1) * args.posts]
                                          for n in range(args.runs)]  # fmt: skip
            for post_id in warm:
                summarize.delay(post_id, "basic")
            wait_rows(len(warm))
            best = None
            for n, batch in enumerate(rounds):
                cpu_before = {name: cpu_seconds(pid) for name, pid in (("worker", worker.pid), ("llm", server.pid))}
                started = time.perf_counter()
                for post_id in batch:
                    summarize.delay(post_id, "basic")
                wait_rows(len(warm) + (n + 1) * args.posts)
                elapsed = time.perf_counter() - started
                cpu_ms = {
                    name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / len(batch)
                    for name, pid in (("worker", worker.pid), ("llm", server.pid))
                }
                print(f"round {n + 1}: {len(batch)} summaries in {elapsed:.2f}s = {len(batch) / elapsed:.1f}/s")
                if best is None or elapsed < best[0]:
                    best = (elapsed, cpu_ms)
            assert best is not None
            elapsed, cpu_ms = best
            achieved = args.posts / elapsed
            ideal = args.concurrency / args.latency
            ids = rounds[0]

            # phase 2: many users, few styles
            started = time.perf_counter()
            requests = 0
            combos_requested: set[tuple[int, str]] = set()
            for user in range(args.users):
                style = STYLES[user % len(STYLES)]
                for k in range(args.digest):
                    post_id = ids[(user * 7 + k) % len(ids)]
                    summarize.delay(post_id, style)
                    combos_requested.add((post_id, style))
                    requests += 1
            wait_rows(WARMUP + args.posts * args.runs + len(combos_requested))
            fanout_s = time.perf_counter() - started
            time.sleep(2.0)  # let stragglers (tasks that found the row) finish
            from sqlalchemy import func, select

            from hnpal.db.session import session_scope
            from hnpal.usage.models import AgentCall

            with session_scope() as session:
                calls = session.scalar(select(func.count()).where(AgentCall.purpose.in_(STYLES), AgentCall.success))
                failed = session.scalar(select(func.count()).where(~AgentCall.success))
            combos = len(combos_requested)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        stop.set()
        server.join(timeout=10)
    server_requests = urls.get(timeout=5) if not urls.empty() else -1
    print(f"phase 1 (best round): {len(ids)} summaries in {elapsed:.2f}s = {achieved:.1f}/s; ideal {ideal:.1f}/s "
          f"({args.concurrency} threads / {args.latency * 1000:.0f} ms); CPU per summary: worker "
          f"{cpu_ms['worker']:.1f} ms, sandbox LLM {cpu_ms['llm']:.1f} ms")  # fmt: skip
    print(f"phase 2: {args.users} users x {args.digest} posts = {requests} requests in {fanout_s:.1f}s; "
          f"LLM calls {calls} for {combos} (post, style) pairs ({len(ids)} posts x {len(STYLES)} styles); "
          f"failed calls {failed}")  # fmt: skip
    print(f"sandbox saw {server_requests} chat requests in all")
    ratio = achieved / ideal
    ok = ratio >= 0.8 and calls == combos
    print(
        last_line(
            posts=len(ids),
            latency_ms=round(args.latency * 1000),
            concurrency=args.concurrency,
            achieved_per_s=achieved,
            ideal_per_s=ideal,
            ratio=ratio,
            users=args.users,
            llm_calls=calls,
            posts_x_styles=combos,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
