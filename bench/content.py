"""Benchmark the RocksDB content store against bare rocksdict on real article pages.

    .venv/bin/python bench/content.py [--entries 10000] [--shared ../shared/fixtures/articles]

Both sides use the same ``build_options``. Bare rocksdict writes one WriteBatch per entry
(html, text, markdown) and reads with ``cf.get(key)`` on pre-encoded keys; ContentStore uses
``put()`` and ``get()`` with int ids.

Every round fills a fresh directory per side. The two fills run at the same time in two
processes and each side's put rate is taken over the window in which both were writing, so
both see the same (noisy) machine load; the rates are therefore those of two concurrent
writers. Then, after ``flush()`` + ``compact()``, random gets (half on ``html``, half on
``text``) run in this process in chunks that alternate between the two sides. Over
``--rounds`` rounds the best put rate and the best time of each get chunk count.

The last line is ``key=value`` pairs; the exit status is 1 when the store's put or get
throughput is below 0.9x bare rocksdict or the on-disk saving is below 0.75.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import rocksdict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hnpal.content.store import KINDS, ContentStore, build_options  # noqa: E402

DEFAULT_SHARED = REPO.parent / "shared" / "fixtures" / "articles"
BENCH_KINDS = ("html", "text", "markdown")
MIN_PUT_RATIO = 0.9
MIN_GET_RATIO = 0.9
MIN_SAVINGS = 0.75


@dataclass
class Page:
    html: bytes
    text: bytes
    markdown: bytes

    @property
    def raw_bytes(self) -> int:
        return len(self.html) + len(self.text) + len(self.markdown)


@dataclass
class Result:
    name: str
    put_per_s: float
    get_per_s: float
    p50_get_us: float
    p99_get_us: float
    sst_bytes: int
    get_chunk_ns: list[int]


def to_markdown(text: str) -> str:
    """A plain markdown rendering of article text: first line as heading, then paragraphs."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return f"# {lines[0]}\n\n" + "\n\n".join(lines[1:]) + "\n"


def load_pages(shared: Path) -> list[Page]:
    truth = json.loads((shared / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id in sorted(truth):
        html_file = shared / "html" / f"{page_id}.html.gz"
        if not html_file.is_file():
            continue
        html = gzip.decompress(html_file.read_bytes())
        text = truth[page_id].get("articleBody") or ""
        pages.append(Page(html=html, text=text.encode("utf-8"), markdown=to_markdown(text).encode("utf-8")))
    return pages


def sst_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.sst"))


def percentile_us(samples_ns: list[int], pct: float) -> float:
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))] / 1000


class BareSide:
    """Plain rocksdict with the store's options: one WriteBatch per entry, ``cf.get(key)``."""

    name = "bare rocksdict"

    def __init__(self, path: Path) -> None:
        self.path = path
        opts = build_options()
        self.db = rocksdict.Rdict(str(path), opts, column_families={kind: opts for kind in KINDS})
        self.cfs = {kind: self.db.get_column_family(kind) for kind in KINDS}
        self.handles = {kind: self.db.get_column_family_handle(kind) for kind in KINDS}

    def time_puts(self, pages: list[Page], ids: range) -> int:
        """Write entries ``ids`` (page ``(id - 1) % len(pages)``); returns ns taken."""
        db, n_pages = self.db, len(pages)
        h_html, h_text, h_md = self.handles["html"], self.handles["text"], self.handles["markdown"]
        keys = [b"%d" % i for i in ids]
        start = time.perf_counter_ns()
        for i, key in zip(ids, keys, strict=True):
            page = pages[(i - 1) % n_pages]
            wb = rocksdict.WriteBatch(raw_mode=True)
            wb.put(key, page.html, h_html)
            wb.put(key, page.text, h_text)
            wb.put(key, page.markdown, h_md)
            db.write(wb)
        return time.perf_counter_ns() - start

    def settle(self) -> None:
        for cf in self.cfs.values():
            cf.flush(True)
        for cf in self.cfs.values():
            cf.compact_range(None, None)

    def prepare(self, gets: list[tuple[int, str]]) -> list[tuple[rocksdict.Rdict, bytes]]:
        return [(self.cfs[kind], b"%d" % hn_id) for hn_id, kind in gets]

    def time_gets(self, calls: list[tuple[rocksdict.Rdict, bytes]], latencies: list[int]) -> int:
        """Run the gets, append per-call ns to ``latencies``; returns total ns."""
        clock = time.perf_counter_ns
        append = latencies.append
        start = clock()
        for cf, key in calls:
            t0 = clock()
            value = cf.get(key)
            append(clock() - t0)
            if value is None:
                raise SystemExit(f"benchmark bug: bare get {key!r} returned None")
        return clock() - start

    def close(self) -> None:
        for cf in self.cfs.values():
            cf.close()
        self.cfs, self.handles = {}, {}
        if self.db is not None:
            self.db.close()
            self.db = None


class StoreSide:
    """ContentStore writer: ``put()`` and ``get()`` with int ids."""

    name = "ContentStore"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = ContentStore.open_writer(path)

    def time_puts(self, pages: list[Page], ids: range) -> int:
        """Write entries ``ids`` (page ``(id - 1) % len(pages)``); returns ns taken."""
        put, n_pages = self.store.put, len(pages)
        start = time.perf_counter_ns()
        for i in ids:
            page = pages[(i - 1) % n_pages]
            put(i, html=page.html, text=page.text, markdown=page.markdown)
        return time.perf_counter_ns() - start

    def settle(self) -> None:
        self.store.flush()
        self.store.compact()

    def prepare(self, gets: list[tuple[int, str]]) -> list[tuple[int, str]]:
        return list(gets)

    def time_gets(self, calls: list[tuple[int, str]], latencies: list[int]) -> int:
        """Run the gets, append per-call ns to ``latencies``; returns total ns."""
        clock = time.perf_counter_ns
        append = latencies.append
        get = self.store.get
        start = clock()
        for hn_id, kind in calls:
            t0 = clock()
            value = get(hn_id, kind)
            append(clock() - t0)
            if value is None:
                raise SystemExit(f"benchmark bug: store get {hn_id} {kind} returned None")
        return clock() - start

    def close(self) -> None:
        self.store.close()


def fill_worker(side: str, path: str, shared: str, entries: int, step: int, barrier, results) -> None:
    """Child process: fill one side, reporting ``time.monotonic_ns()`` after every ``step`` puts."""
    pages = load_pages(Path(shared))
    store = {"bare": BareSide, "store": StoreSide}[side](Path(path))
    try:
        barrier.wait(timeout=120)
        marks = [time.monotonic_ns()]
        for lo in range(1, entries + 1, step):
            store.time_puts(pages, range(lo, min(lo + step, entries + 1)))
            marks.append(time.monotonic_ns())
        store.settle()
    finally:
        store.close()
    results.put((side, marks))


def done_by(marks: list[int], step: int, entries: int, t: int) -> float:
    """Entries a side had written at time ``t``, interpolated between its marks."""
    for i in range(1, len(marks)):
        if marks[i] >= t:
            lo_n, hi_n = (i - 1) * step, min(i * step, entries)
            return lo_n + (hi_n - lo_n) * (t - marks[i - 1]) / max(1, marks[i] - marks[i - 1])
    return float(entries)


def concurrent_fill(paths: dict[str, Path], shared: Path, entries: int, step: int = 50) -> dict[str, float]:
    """Fill both sides at the same time, each in its own process (own RocksDB thread pools), and
    return each side's put rate over the window in which both were writing: the same machine
    load for both, however noisy the machine is."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(paths)), ctx.Queue()
    procs = [
        ctx.Process(target=fill_worker, args=(side, str(path), str(shared), entries, step, barrier, queue))
        for side, path in paths.items()
    ]
    for proc in procs:
        proc.start()
    marks: dict[str, list[int]] = {}
    try:
        for _ in procs:
            side, side_marks = queue.get(timeout=3600)
            marks[side] = side_marks
    finally:
        for proc in procs:
            proc.join(timeout=600)
    if any(proc.exitcode != 0 for proc in procs):
        raise SystemExit(f"a fill process failed: exit codes {[proc.exitcode for proc in procs]}")
    start = max(m[0] for m in marks.values())
    end = min(m[-1] for m in marks.values())
    return {
        side: (done_by(m, step, entries, end) - done_by(m, step, entries, start)) / ((end - start) / 1e9)
        for side, m in marks.items()
    }


def run_round(
    tmp: Path,
    round_no: int,
    shared: Path,
    entries: int,
    gets: list[tuple[int, str]],
    get_chunk: int,
) -> dict[str, Result]:
    """Fill a fresh bare DB and a fresh store concurrently, then read both with gets in chunks
    that alternate between the two sides (who goes first alternates by round and chunk)."""
    order = ("bare", "store") if round_no % 2 == 0 else ("store", "bare")
    factories = {"bare": BareSide, "store": StoreSide}
    paths = {side: tmp / f"{side}-{round_no}" for side in order}
    sides: dict[str, BareSide | StoreSide] = {}
    try:
        put_rates = concurrent_fill(paths, shared, entries)
        for side in order:
            sides[side] = factories[side](paths[side])
        calls = {side: sides[side].prepare(gets) for side in order}
        latencies: dict[str, list[int]] = {side: [] for side in order}
        chunk_ns: dict[str, list[int]] = {side: [] for side in order}
        for n, lo in enumerate(range(0, len(gets), get_chunk)):
            for side in order if n % 2 == 0 else order[::-1]:
                part = calls[side][lo : lo + get_chunk]
                chunk_ns[side].append(sides[side].time_gets(part, latencies[side]))
        results = {}
        for side in order:
            sides.pop(side).close()
            results[side] = Result(
                name=factories[side].name,
                put_per_s=put_rates[side],
                get_per_s=len(gets) / (sum(chunk_ns[side]) / 1e9),
                p50_get_us=percentile_us(latencies[side], 0.50),
                p99_get_us=percentile_us(latencies[side], 0.99),
                sst_bytes=sst_bytes(paths[side]),
                get_chunk_ns=chunk_ns[side],
            )
        return results
    finally:
        for side in sides.values():
            with contextlib.suppress(Exception):
                side.close()
        for path in paths.values():
            shutil.rmtree(path, ignore_errors=True)
        gc.collect()


def best_rate(chunk_ns_per_round: list[list[int]], operations: int) -> float:
    """Operations/s from the best time of each chunk over the rounds (chunks are the same work)."""
    best_ns = sum(min(times) for times in zip(*chunk_ns_per_round, strict=True))
    return operations / (best_ns / 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--gets", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per side; the best counts")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--get-chunk", type=int, default=1_000, help="gets per side before switching")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    shared = args.shared.resolve()
    if not (shared / "ground-truth.json").is_file() or not (shared / "html").is_dir():
        print(f"shared article fixtures not found at {shared} (a user's clone has no ../shared); skipping")
        print("skipped=1 reason=no_shared_fixtures")
        return 0
    pages = load_pages(shared)
    if not pages:
        print(f"no pages with ground truth under {shared}; skipping")
        print("skipped=1 reason=no_shared_fixtures")
        return 0

    entries = args.entries
    raw_bytes = sum(pages[(i - 1) % len(pages)].raw_bytes for i in range(1, entries + 1))
    rng = random.Random(args.seed)
    gets = [(rng.randint(1, entries), "html" if j % 2 == 0 else "text") for j in range(args.gets)]
    print(
        f"{len(pages)} pages -> {entries} entries, {raw_bytes / 1e6:.1f} MB raw "
        f"(html+text+markdown), {args.gets} random gets, {args.rounds} rounds per side"
    )

    results: dict[str, list[Result]] = {"bare": [], "store": []}
    with tempfile.TemporaryDirectory(prefix="hnpal-bench-content-") as tmp:
        for round_no in range(args.rounds):
            round_results = run_round(Path(tmp), round_no, shared, entries, gets, args.get_chunk)
            for side in ("bare", "store"):
                result = round_results[side]
                results[side].append(result)
                print(
                    f"round {round_no + 1} {result.name:>14}: put {result.put_per_s:8.0f}/s  "
                    f"get {result.get_per_s:8.0f}/s  p99 {result.p99_get_us:7.1f} µs",
                    flush=True,
                )

    best = {
        side: Result(
            name=rs[0].name,
            put_per_s=max(r.put_per_s for r in rs),
            get_per_s=best_rate([r.get_chunk_ns for r in rs], len(gets)),
            p50_get_us=min(r.p50_get_us for r in rs),
            p99_get_us=min(r.p99_get_us for r in rs),
            sst_bytes=min(r.sst_bytes for r in rs),
            get_chunk_ns=[],
        )
        for side, rs in results.items()
    }
    put_ratio = best["store"].put_per_s / best["bare"].put_per_s
    get_ratio = best["store"].get_per_s / best["bare"].get_per_s
    savings = 1 - best["store"].sst_bytes / raw_bytes
    print_table(best, raw_bytes)

    failures = []
    if put_ratio < MIN_PUT_RATIO:
        failures.append(f"put_ratio {put_ratio:.3f} < {MIN_PUT_RATIO}")
    if get_ratio < MIN_GET_RATIO:
        failures.append(f"get_ratio {get_ratio:.3f} < {MIN_GET_RATIO}")
    if savings < MIN_SAVINGS:
        failures.append(f"savings {savings:.3f} < {MIN_SAVINGS}")
    if failures:
        print("FAILED: " + "; ".join(failures))
    print(
        f"put_ratio={put_ratio:.3f} get_ratio={get_ratio:.3f} "
        f"p99_get_us_store={best['store'].p99_get_us:.1f} p99_get_us_bare={best['bare'].p99_get_us:.1f} "
        f"savings={savings:.3f} entries={entries}"
    )
    return 1 if failures else 0


def print_table(best: dict[str, Result], raw_bytes: int) -> None:
    rows = [
        ("put entries/s", *(f"{best[s].put_per_s:,.0f}" for s in ("bare", "store"))),
        ("get /s", *(f"{best[s].get_per_s:,.0f}" for s in ("bare", "store"))),
        ("get p50 µs", *(f"{best[s].p50_get_us:.1f}" for s in ("bare", "store"))),
        ("get p99 µs", *(f"{best[s].p99_get_us:.1f}" for s in ("bare", "store"))),
        ("SST MB", *(f"{best[s].sst_bytes / 1e6:.1f}" for s in ("bare", "store"))),
        ("saved vs raw", *(f"{1 - best[s].sst_bytes / raw_bytes:.1%}" for s in ("bare", "store"))),
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"{'':16}{'bare':>16}{'store':>16}")
        for label, bare, store in rows:
            print(f"{label:16}{bare:>16}{store:>16}")
        return
    table = Table(title="content store vs bare rocksdict (best of rounds)")
    table.add_column("")
    table.add_column("bare rocksdict", justify="right")
    table.add_column("ContentStore", justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
