"""Extraction choices judged by what generalizes: k-fold cross-validation over the shared pages.

Each trafilatura option set (default, ``fast``, ``favor_precision``, ``favor_recall`` and their fast
variants) extracts every page once. A *family* is either one option set, or a guarded pair: a first
pass kept unless its text is under ``ratio`` of the page's visible text, the second pass taken then
(HN Pal's :func:`keep_first_pass`), the ratio being tuned. The cross-validated F1 of a family is the
mean token-F1 on held-out folds after its ratio was chosen on the other folds (5 folds, repeated with
40 shuffles): a family whose lead comes from a few pages, or from a ratio fitted to them, loses it
here. Plain ``trafilatura.extract`` with default settings is scored on the same folds.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

OPTIONS: dict[str, dict[str, bool]] = {
    "default": {},
    "fast": {"fast": True},
    "precision": {"favor_precision": True},
    "recall": {"favor_recall": True},
    "precision_fast": {"favor_precision": True, "fast": True},
    "recall_fast": {"favor_recall": True, "fast": True},
}
RATIOS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
FOLDS, REPEATS, SEED = 5, 40, 20


@dataclass
class CVReport:
    families: dict[str, tuple[float, float, float]]  # name -> (cv F1, sd over folds, mean F1 on all pages)
    speeds: dict[str, float]  # option set (and "trafilatura.extract") -> pages/s, one process
    default_cv: float
    default_mean: float
    shipped: str  # HN Pal's family
    best: str  # the family with the best cross-validated F1

    def lines(self) -> list[str]:
        out = [f"{'family':28s} {'cv F1':>7s} {'sd':>6s} {'all pages':>9s}"]
        for name, (cv, sd, mean) in sorted(self.families.items(), key=lambda kv: -kv[1][0]):
            mark = "  <- HN Pal" if name == self.shipped else ""
            out.append(f"{name:28s} {cv:7.3f} {sd:6.3f} {mean:9.3f}{mark}")
        out.append(f"{'trafilatura.extract default':28s} {self.default_cv:7.3f} {'':6s} {self.default_mean:9.3f}")
        out.append("pages/s, one process: " + ", ".join(f"{k} {v:.1f}" for k, v in self.speeds.items()))
        return out


def _extract(html: str, url: str | None, options: dict[str, bool]) -> str:
    from hnpal.crawl.extract import pass_text

    return pass_text(html, url, options)


def _folds(ids: list[str]) -> list[tuple[list[str], list[str]]]:
    rnd = random.Random(SEED)
    out = []
    for _ in range(REPEATS):
        order = ids[:]
        rnd.shuffle(order)
        parts = [order[i::FOLDS] for i in range(FOLDS)]
        for i in range(FOLDS):
            out.append(([p for j, part in enumerate(parts) if j != i for p in part], parts[i]))
    return out


def cross_validate(pages: dict[str, tuple[str, str]], shared: Path) -> CVReport:
    import trafilatura
    from _common import token_f1

    from hnpal.crawl.extract import CHECK_PASS, MIN_TEXT_CHARS, PRECISION_PASS, _body_text, keep_first_pass

    urls = {k: v.get("url") for k, v in json.loads((shared / "ground-truth.json").read_text()).items()}
    ids = sorted(pages)
    for page_id in ids[:3]:  # warm-up: lazy initialisation is not throughput
        _extract(pages[page_id][0], urls.get(page_id), {})
    texts: dict[str, dict[str, str]] = {}
    speeds: dict[str, float] = {}
    for name, options in OPTIONS.items():
        started = time.perf_counter()
        texts[name] = {p: _extract(pages[p][0], urls.get(p), options) for p in ids}
        speeds[name] = len(ids) / (time.perf_counter() - started)
    started = time.perf_counter()
    plain = {p: trafilatura.extract(pages[p][0], url=urls.get(p)) or "" for p in ids}
    speeds["trafilatura.extract"] = len(ids) / (time.perf_counter() - started)

    scores: dict[str, dict[str, float]] = {}
    for name in OPTIONS:
        scores[name] = {p: token_f1(texts[name][p], pages[p][1]) for p in ids}
    default_scores = {p: token_f1(plain[p], pages[p][1]) for p in ids}
    families: dict[str, list[str]] = {name: [name] for name in OPTIONS}
    visible = {p: len(_body_text(pages[p][0])[0]) for p in ids}
    for first in OPTIONS:
        for second in ("default", "fast", "recall"):
            if first == second:
                continue
            members = []
            for ratio in RATIOS:
                member = f"{first}|{second}@{ratio}"
                chosen = {}
                for p in ids:
                    if keep_first_pass(len(texts[first][p]), visible[p], ratio):
                        chosen[p] = scores[first][p]
                    elif len(texts[second][p]) >= MIN_TEXT_CHARS or len(texts[first][p]) < MIN_TEXT_CHARS:
                        chosen[p] = scores[second][p]
                    else:
                        chosen[p] = scores[first][p]
                scores[member] = chosen
                members.append(member)
            families[f"{first}|{second}"] = members

    def mean(name: str, subset: list[str]) -> float:
        return statistics.fmean(scores[name][p] for p in subset)

    folds = _folds(ids)
    report: dict[str, tuple[float, float, float]] = {}
    for family, members in families.items():
        held = []
        for train, test in folds:
            best = max(members, key=lambda m: mean(m, train))
            held.append(mean(best, test))
        tuned = max(members, key=lambda m: mean(m, ids))
        report[family] = (statistics.fmean(held), statistics.stdev(held), mean(tuned, ids))
    default_held = [statistics.fmean(default_scores[p] for p in test) for _train, test in folds]
    name_of = {tuple(sorted(o.items())): n for n, o in OPTIONS.items()}
    shipped = f"{name_of[tuple(sorted(PRECISION_PASS.items()))]}|{name_of[tuple(sorted(CHECK_PASS.items()))]}"
    return CVReport(
        families=report,
        speeds=speeds,
        default_cv=statistics.fmean(default_held),
        default_mean=statistics.fmean(default_scores.values()),
        shipped=shipped,
        best=max(report, key=lambda f: report[f][0]),
    )
