"""Benchmark the RocksDB content store against bare rocksdict on real article pages.

    .venv/bin/python bench/content.py [--entries 10000] [--shared ../shared/fixtures/articles]

Both sides use the same ``build_options``. Bare rocksdict writes one WriteBatch per entry
(html, text, markdown) and reads with ``cf.get(key)`` on pre-encoded keys; ContentStore uses
``put()`` and ``get()`` with int ids.

Every round fills a fresh directory per side. Puts run in segments of ``--put-chunk`` entries
that alternate between the two sides (both open in this process); each segment ends by
flushing and waiting until RocksDB has no flush or compaction pending, so a segment's time
includes all the background work its puts caused and none spills into the other side's
segment. The gated put rate is entries / segment time; the rate of the put calls alone is
shown for information. After ``flush()`` + ``compact()``, random gets (half on ``html``, half
on ``text``) run in chunks of ``--get-chunk`` that alternate between the two sides. The same
segments and chunks repeat every round (who goes first alternates); over ``--rounds`` rounds
the best time of each segment and chunk counts, which filters out bursts of load from other
processes on the machine.

The last line is ``key=value`` pairs; the exit status is 1 when the store's put or get
throughput is below 0.9x bare rocksdict or the on-disk saving is below 0.75.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
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
    put_per_s: float  # entries / (puts + the flushes and compactions they cause): gated
    put_loop_per_s: float  # entries / put() calls alone (background work may lag behind)
    get_per_s: float
    p50_get_us: float
    p99_get_us: float
    sst_bytes: int
    put_chunk_ns: list[int]
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


BACKGROUND_WORK = (
    "rocksdb.mem-table-flush-pending",
    "rocksdb.compaction-pending",
    "rocksdb.num-running-flushes",
    "rocksdb.num-running-compactions",
)


def drain(cfs: list[rocksdict.Rdict]) -> None:
    """Flush every column family and wait until RocksDB has no flush or compaction left to do."""
    for cf in cfs:
        cf.flush(True)
    deadline = time.monotonic() + 600
    while any(cf.property_int_value(prop) for cf in cfs for prop in BACKGROUND_WORK):
        if time.monotonic() > deadline:
            raise SystemExit("RocksDB background work did not finish within 600 s")
        time.sleep(0.002)


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

    def drain(self) -> None:
        drain(list(self.cfs.values()))

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

    def drain(self) -> None:
        # The store has no public "wait for background work"; the bench peeks at its CF objects.
        drain(list(self.store._cfs.values()))

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


def run_round(
    tmp: Path,
    round_no: int,
    pages: list[Page],
    entries: int,
    gets: list[tuple[int, str]],
    put_chunk: int,
    get_chunk: int,
) -> dict[str, Result]:
    """Fill a fresh bare DB and a fresh store, then read both. Puts run in segments that alternate
    between the two sides; each segment ends by draining RocksDB's background work (flushes and
    the compactions they trigger), so a segment's time holds all the work its puts caused and
    none of it spills into the other side's segment. Gets run in alternating chunks too."""
    order = ("bare", "store") if round_no % 2 == 0 else ("store", "bare")
    factories = {"bare": BareSide, "store": StoreSide}
    paths = {side: tmp / f"{side}-{round_no}" for side in order}
    sides: dict[str, BareSide | StoreSide] = {}
    try:
        for side in order:
            sides[side] = factories[side](paths[side])
        put_ns: dict[str, list[int]] = {side: [] for side in order}
        loop_ns: dict[str, int] = dict.fromkeys(order, 0)
        for n, lo in enumerate(range(1, entries + 1, put_chunk)):
            ids = range(lo, min(lo + put_chunk, entries + 1))
            for side in order if n % 2 == 0 else order[::-1]:
                start = time.perf_counter_ns()
                loop_ns[side] += sides[side].time_puts(pages, ids)
                sides[side].drain()
                put_ns[side].append(time.perf_counter_ns() - start)
        for side in order:
            sides[side].settle()
        calls = {side: sides[side].prepare(gets) for side in order}
        latencies: dict[str, list[int]] = {side: [] for side in order}
        get_ns: dict[str, list[int]] = {side: [] for side in order}
        for n, lo in enumerate(range(0, len(gets), get_chunk)):
            for side in order if n % 2 == 0 else order[::-1]:
                part = calls[side][lo : lo + get_chunk]
                get_ns[side].append(sides[side].time_gets(part, latencies[side]))
        results = {}
        for side in order:
            sides.pop(side).close()
            results[side] = Result(
                name=factories[side].name,
                put_per_s=entries / (sum(put_ns[side]) / 1e9),
                put_loop_per_s=entries / (loop_ns[side] / 1e9),
                get_per_s=len(gets) / (sum(get_ns[side]) / 1e9),
                p50_get_us=percentile_us(latencies[side], 0.50),
                p99_get_us=percentile_us(latencies[side], 0.99),
                sst_bytes=sst_bytes(paths[side]),
                put_chunk_ns=put_ns[side],
                get_chunk_ns=get_ns[side],
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
    parser.add_argument("--put-chunk", type=int, default=1_000, help="puts per side before switching")
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
            round_results = run_round(Path(tmp), round_no, pages, entries, gets, args.put_chunk, args.get_chunk)
            for side in ("bare", "store"):
                result = round_results[side]
                results[side].append(result)
                print(
                    f"round {round_no + 1} {result.name:>14}: put {result.put_per_s:6.0f}/s "
                    f"(loop {result.put_loop_per_s:6.0f}/s)  "
                    f"get {result.get_per_s:8.0f}/s  p99 {result.p99_get_us:7.1f} µs",
                    flush=True,
                )

    best = {
        side: Result(
            name=rs[0].name,
            put_per_s=best_rate([r.put_chunk_ns for r in rs], entries),
            put_loop_per_s=max(r.put_loop_per_s for r in rs),
            get_per_s=best_rate([r.get_chunk_ns for r in rs], len(gets)),
            p50_get_us=min(r.p50_get_us for r in rs),
            p99_get_us=min(r.p99_get_us for r in rs),
            sst_bytes=min(r.sst_bytes for r in rs),
            put_chunk_ns=[],
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
        ("  put loop only", *(f"{best[s].put_loop_per_s:,.0f}" for s in ("bare", "store"))),
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
