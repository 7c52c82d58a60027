"""Ingest benchmark: 500 HN items from the replay server, sequential baseline vs HN Pal's ingest.

(a) baseline: a plain ``requests`` loop, one item at a time, one INSERT ... ON CONFLICT per item;
(b) HN Pal: the concurrent client (HNPAL_HN_CONCURRENCY requests in flight) and one upsert per batch.
Both write the same rows to a fresh PostgreSQL database. The replay server runs in its own process (as
the real API is on another machine) and answers each API request after --latency seconds (default
20 ms; the real Firebase API is further away than loopback).
Target: (b) at least 10x faster. The last line prints the figures.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from _common import bench_database, last_line, use_settings


def build_server(count: int, latency: float):
    from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot

    server = HNReplayServer(Snapshot.empty(), api_latency=latency).start()
    rng = random.Random(7)
    now = int(time.time())
    for i in range(count):
        kind = rng.random()
        title = f"Story {i}: notes on {rng.choice(['Postgres', 'Rust', 'Raft', 'WASM', 'eBPF', 'SQLite'])}"
        extra = {}
        if kind < 0.1:
            title = "Ask HN: " + title
            extra["text"] = "What do you think?<p>Curious."
        elif kind < 0.2:
            title = "Show HN: " + title
            extra["url"] = f"https://example.com/show/{i}"
        else:
            extra["url"] = f"https://example.com/articles/{i}"
        server.add_story(title=title, score=rng.randint(1, 900), by=f"user{i % 50}", time=now - i * 60, **extra)
    return server


def _serve(count: int, latency: float, urls, stop) -> None:  # type: ignore[no-untyped-def]
    server = build_server(count, latency)
    urls.put(server.api_url)
    stop.wait()
    server.stop()


def baseline(api_url: str, db_url: str, limit: int) -> float:
    """Sequential requests and a statement per row: the obvious first version."""
    import requests
    from sqlalchemy import create_engine, text

    from hnpal.ingest.items import Skip, parse_item

    engine = create_engine(db_url)
    started = time.perf_counter()
    with requests.Session() as http, engine.begin() as conn:
        ids = http.get(f"{api_url}newstories.json", timeout=10).json()[:limit]
        for item_id in ids:
            raw = http.get(f"{api_url}item/{item_id}.json", timeout=10).json()
            try:
                post, extra = parse_item(raw)
            except Skip:
                continue
            conn.execute(
                text(
                    "INSERT INTO posts (hn_id, type, title, url, domain, author, score, comment_count, "
                    "hn_published_at, canonical_url) VALUES (:hn_id, :type, :title, :url, :domain, :author, "
                    ":score, :comment_count, :hn_published_at, :canonical_url) ON CONFLICT (hn_id) DO UPDATE "
                    "SET score = excluded.score, comment_count = excluded.comment_count"
                ),
                {**post.model_dump(exclude={"url"}), "url": raw.get("url"), **extra},
            )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def ours(limit: int) -> tuple[float, dict]:
    from hnpal import jobs
    from hnpal.db.session import session_scope
    from hnpal.ingest import service

    started = time.perf_counter()
    with jobs.recording(), session_scope() as session:
        report = service.fetch_lists(session=session, lists=["new"], limit=limit)
    return time.perf_counter() - started, report.as_dict()


def count_rows(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM posts")).scalar_one()
    engine.dispose()
    return n


def truncate(db_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE posts CASCADE"))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02, help="replay server seconds per API request")
    parser.add_argument("--target", type=float, default=10.0)
    args = parser.parse_args()

    import multiprocessing

    urls, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(args.items, args.latency, urls, stop), daemon=True)
    server.start()
    api_url = urls.get(timeout=60)
    try:
        with bench_database() as db_url:
            use_settings(database_url=db_url, hn_api_base_url=api_url, hn_concurrency="32")
            base_s = baseline(api_url, db_url, args.items)
            base_rows = count_rows(db_url)
            truncate(db_url)
            ours_s, report = ours(args.items)
            our_rows = count_rows(db_url)
    finally:
        stop.set()
        server.join(timeout=10)
    speedup = base_s / ours_s
    print(f"items={args.items} api_latency={args.latency * 1000:.0f}ms")
    print(f"baseline (sequential requests + row-at-a-time upsert): {base_s:.2f}s, {base_rows} rows")
    print(f"hnpal (concurrent client, 32 in flight + batched upsert): {ours_s:.2f}s, {our_rows} rows, {report}")
    ok = speedup >= args.target and base_rows == our_rows == args.items
    print(
        last_line(
            items=args.items,
            latency_ms=round(args.latency * 1000),
            baseline_items_per_s=args.items / base_s,
            hnpal_items_per_s=args.items / ours_s,
            speedup=speedup,
            rows_equal=int(base_rows == our_rows),
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
