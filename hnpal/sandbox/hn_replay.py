"""A local stand-in for the Hacker News Firebase API and the article pages its stories link to.

One loopback HTTP server plays both parts:

* ``/v0/...`` answers exactly like https://hacker-news.firebaseio.com/v0/ (items, story lists,
  ``maxitem``, ``updates``, users; ``null`` for unknown ids; with or without ``.json``);
* ``/articles/<slug>.html`` and ``/papers/<name>.pdf`` serve the bundled snapshot's pages (our own
  writing, see ``snapshot/``); query strings are ignored and a trailing slash is stripped, so
  ``/articles/x.html/?utm_source=hn`` is the same page;
* ``/hostile/...`` is a fixed set of misbehaving pages (slow, huge, binary, redirect loops, ...);
* anything else can be added with :meth:`HNReplayServer.add_page` or
  :meth:`HNReplayServer.mount_directory`, and any path can be made to misbehave with
  :meth:`HNReplayServer.set_fault`.

Item URLs in ``items.json`` are written ``{base}/articles/slug.html``; the server puts its own
``base_url`` there when it answers, so the snapshot works on any port. With ``shift_times`` (the
default) every snapshot ``time`` moves so that the newest item is "now".

In-process::

    with HNReplayServer() as hn:
        settings.hn_api_base_url = hn.api_url

Command line::

    python -m hnpal.sandbox.hn_replay [--port 8765] [--host 127.0.0.1] [--no-shift-times]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import html
import json
import mimetypes
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hnpal.sandbox._server import CONNECTION_ERRORS as _CONNECTION_ERRORS
from hnpal.sandbox._server import LoopbackServer, SandboxHandler

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshot"
BASE_PLACEHOLDER = "{base}"
ITEM_TYPES = ("story", "comment", "job", "poll", "pollopt")
LISTABLE_TYPES = ("story", "job", "poll")
MAX_TOP = 500
MAX_TYPED = 200
FAULT_KINDS = (
    "slow",
    "trickle",
    "error",
    "404",
    "huge",
    "binary",
    "redirect_loop",
    "redirect",
    "bad_encoding",
    "malformed_json",
    "drop",
    "retry_after",
)
HTML_UTF8 = "text/html; charset=utf-8"
JSON_UTF8 = "application/json; charset=utf-8"
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
_META_CHARSET_TAG = re.compile(r"""<meta[^>]+charset\s*=[^>]*>\s*""", re.I)


# --------------------------------------------------------------------------------------------
# Snapshot
# --------------------------------------------------------------------------------------------


@dataclass
class Page:
    """A body served at a fixed path."""

    body: bytes
    content_type: str = HTML_UTF8
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


def _sniff_html_type(body: bytes) -> str:
    match = _META_CHARSET.search(body[:2048])
    charset = match.group(1).decode("ascii").lower() if match else "utf-8"
    return f"text/html; charset={charset}"


@dataclass
class Snapshot:
    """Hacker News items plus the pages they link to, as bundled in ``snapshot/``.

    ``items`` maps id → item in the Firebase format (``url`` fields use ``{base}``); ``pages`` maps
    a URL path (``/articles/x.html``) to its :class:`Page`; ``epoch`` is the fixed "now" the
    snapshot's times were written against; ``missing_ids`` are ids listed in ``newstories`` and
    ``topstories`` that answer ``null`` (an item not yet propagated, as happens on the real API).
    """

    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    pages: dict[str, Page] = field(default_factory=dict)
    epoch: int = 0
    missing_ids: list[int] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> Snapshot:
        """Load a snapshot directory (or its ``items.json``); default: the bundled one."""
        root = Path(path) if path is not None else SNAPSHOT_DIR
        items_file = root if root.is_file() else root / "items.json"
        root = items_file.parent
        data = json.loads(items_file.read_text(encoding="utf-8"))
        items = {int(item["id"]): item for item in data["items"]}
        pages: dict[str, Page] = {}
        for file in sorted((root / "pages").glob("*.html")):
            body = file.read_bytes()
            pages[f"/articles/{file.name}"] = Page(body, _sniff_html_type(body))
        for file in sorted((root / "papers").glob("*.pdf")):
            pages[f"/papers/{file.name}"] = Page(file.read_bytes(), "application/pdf")
        return cls(
            items=items,
            pages=pages,
            epoch=int(data.get("epoch") or max((i.get("time", 0) for i in items.values()), default=0)),
            missing_ids=[int(i) for i in data.get("missing_ids", [])],
            users={u["id"]: u for u in data.get("users", [])},
            path=root,
        )

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(epoch=int(time.time()))

    def top_level(self) -> list[dict[str, Any]]:
        """Stories, jobs and polls (deleted ones included), oldest first."""
        chosen = [i for i in self.items.values() if i.get("type") in LISTABLE_TYPES]
        return sorted(chosen, key=lambda i: i["id"])

    def resolve(self, value: Any, base_url: str) -> Any:
        """``value`` (an item, a URL, ...) with ``{base}`` replaced by ``base_url``."""
        return json.loads(json.dumps(value).replace(BASE_PLACEHOLDER, base_url.rstrip("/")))


# --------------------------------------------------------------------------------------------
# Replies and faults
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the handler sends: a body (bytes, or chunks with an optional declared length)."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str | None = HTML_UTF8
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int | None = None  # for chunk iterables: Content-Length; None → chunked encoding
    rate: float | None = None  # bytes per second (trickle)
    delay: float = 0.0
    drop: str | None = None  # "close" or "reset": no answer at all


@dataclass
class Fault:
    prefix: str
    kind: str
    params: dict[str, Any]
    remaining: int | None


def _simple_html(title: str, message: str) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>\n"
    ).encode()


def _huge_chunks(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    head = b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>The page that never ends</title>'
    head += b"</head><body>\n"
    tail = b"\n</body></html>\n"
    para = (
        b"<p>Row after row of generated telemetry follows. Each line repeats the same measurements, "
        b"altitude, airspeed, heading and fuel flow, because the export job never stops.</p>\n"
    )
    if size <= len(head) + len(tail):
        yield (head + tail)[:size]
        return
    yield head
    block = (para * (chunk // len(para) + 1))[:chunk]
    remaining = size - len(head) - len(tail)
    while remaining > 0:
        piece = block[: min(chunk, remaining)]
        remaining -= len(piece)
        yield piece
    yield tail


def _binary_chunks(size: int, seed: int = 1337, chunk: int = 64 * 1024) -> Iterator[bytes]:
    rng = random.Random(seed)
    prefix = b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\x00\x00"
    sent = 0
    while sent < size:
        piece = rng.randbytes(min(chunk, size - sent))
        if sent == 0:
            piece = (prefix + piece)[: len(piece)]
        sent += len(piece)
        yield piece


LATIN1_PAGE = """<!DOCTYPE html>
<html><head><title>Café society: a naïve history of the résumé</title></head>
<body><article><h1>Café society: a naïve history of the résumé</h1>
<p>In 1482 Leonardo wrote what is often called the first résumé — a letter to the Duke of Milan
listing his skills as an engineer, with painting mentioned almost as an afterthought. The café
culture of the following centuries did the rest: deals were struck over coffee, and a naïve
newcomer with a well-written letter could land a commission.</p>
<p>Today’s “résumé” keeps the accent only in careful typesetting. Most applicant-tracking systems
strip it, along with the é in café and the ï in naïve, which is why this page is a small test of
how a crawler decodes text: its bytes are Windows-1252, whatever the headers claim.</p>
</article></body></html>
"""

SPA_PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Loading...</title>
<script src="/static/app.7f3a9c.js" defer></script></head>
<body><div id="root"></div><noscript>You need to enable JavaScript to run this app.</noscript>
<script>window.__INITIAL_STATE__ = {"route": "/post/1", "user": null};</script></body></html>
"""

HOSTILE_PAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "slow": ("slow", {"seconds": 10.0}),
    "trickle": ("trickle", {"bytes_per_sec": 64}),
    "huge": ("huge", {"size": 20 * 1024 * 1024, "declare_length": True}),
    "huge-chunked": ("huge", {"size": 20 * 1024 * 1024, "declare_length": False}),
    "binary": ("binary", {"size": 1024 * 1024}),
    "binary-lie": ("binary", {"size": 1024 * 1024, "lie": True}),
    "redirect-loop": ("redirect_loop", {"mode": "self"}),
    "redirect-pingpong": ("redirect_loop", {"mode": "pingpong"}),
    "redirect-private": ("redirect", {"location": "http://169.254.169.254/latest/meta-data/"}),
    "redirect-internal": ("redirect", {"location": "http://10.0.0.1/admin"}),
    "redirect-localhost": ("redirect", {"location": "http://localhost:9/"}),
    "redirect-file": ("redirect", {"location": "file:///etc/passwd"}),
    "redirect": ("redirect", {"location": "/hostile/landing", "status": 301}),
    "500": ("error", {"status": 500}),
    "502": ("error", {"status": 502}),
    "503": ("error", {"status": 503}),
    "403": ("error", {"status": 403}),
    "404": ("404", {}),
    "429": ("retry_after", {"seconds": 30}),
    "latin1": ("bad_encoding", {"mode": "utf8_lie"}),
    "no-charset": ("bad_encoding", {"mode": "none"}),
    "drop": ("drop", {"mode": "close"}),
    "reset": ("drop", {"mode": "reset"}),
}
HOSTILE_STATIC = ("landing", "empty", "spa", "pdf-lie", "index")


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class HNReplayServer(LoopbackServer):
    """The Hacker News API plus article pages on one loopback port; see the module docstring.

    ``snapshot=None`` loads the bundled snapshot; pass ``Snapshot.empty()`` for a bare server.
    The socket is bound at construction, so ``base_url`` is known before :meth:`start`.
    """

    _thread_name = "hn-replay"

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_latency: float = 0.0,
        shift_times: bool = True,
        verbose: bool = False,
    ) -> None:
        self.snapshot = snapshot if snapshot is not None else Snapshot.load()
        self.api_latency = api_latency
        self.verbose = verbose
        self.request_log: list[tuple[str, str, int]] = []
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._mounts: list[tuple[str, Path]] = []
        self._pages: dict[str, Page] = dict(self.snapshot.pages)
        self._pinned_top: list[int] = []
        self._touched: list[int] = []
        self._lists: dict[str, list[int]] | None = None
        self.time_offset = 0
        items = copy.deepcopy(self.snapshot.items)
        if shift_times and items:
            newest = max(i.get("time", 0) for i in items.values())
            self.time_offset = int(time.time()) - newest
            for item in items.values():
                if "time" in item:
                    item["time"] += self.time_offset
        self._items: dict[int, dict[str, Any]] = items
        self._missing = set(self.snapshot.missing_ids)
        self._max_id = max([0, *self._items, *self._missing])

        self.base_url = self._bind(host, port, _Handler, "replay")
        self.api_url = self.base_url + "/v0/"

    # -- lifecycle ---------------------------------------------------------------------------

    # -- content -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def resolve(self, value: Any) -> Any:
        """``value`` with ``{base}`` replaced by this server's base URL."""
        return self.snapshot.resolve(value, self.base_url)

    def item(self, item_id: int) -> dict[str, Any] | None:
        """The item as the API serves it (times shifted, ``{base}`` resolved), or None."""
        with self._lock:
            found = self._items.get(int(item_id))
            return self.resolve(found) if found is not None else None

    @property
    def items(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return {k: self.resolve(v) for k, v in self._items.items()}

    def add_item(self, item: dict[str, Any]) -> None:
        """Add or replace an item (any type); it shows up in the lists and in ``updates``."""
        if "id" not in item:
            raise ValueError("item needs an id")
        if item.get("type") not in ITEM_TYPES:
            raise ValueError(f"item type must be one of {ITEM_TYPES}")
        with self._lock:
            item_id = int(item["id"])
            self._items[item_id] = copy.deepcopy(item)
            self._missing.discard(item_id)
            self._max_id = max(self._max_id, item_id)
            self._touched.append(item_id)
            self._lists = None

    def maxitem(self) -> int:
        with self._lock:
            return self._max_id

    def add_story(
        self,
        *,
        title: str,
        url: str | None = None,
        text: str | None = None,
        score: int = 1,
        by: str = "sandbox_user",
        kids: Iterable[int] = (),
        type: str = "story",
        time: int | None = None,
        descendants: int | None = None,
        **extra: Any,
    ) -> int:
        """A new top-level item with id maxitem+1, first in newstories and topstories."""
        import time as _time

        with self._lock:
            item_id = self.maxitem() + 1
            kid_list = [int(k) for k in kids]
            item: dict[str, Any] = {
                "id": item_id,
                "type": type,
                "by": by,
                "time": int(_time.time()) if time is None else int(time),
                "title": title,
                "score": score,
            }
            if url is not None:
                item["url"] = url
            if text is not None:
                item["text"] = text
            if kid_list:
                item["kids"] = kid_list
            if type != "job":
                if descendants is None:
                    descendants = self._count_descendants(kid_list)
                item["descendants"] = descendants
            item.update(extra)
            self.add_item(item)
            self._pinned_top.append(item_id)
            return item_id

    def _count_descendants(self, kids: list[int]) -> int:
        total = 0
        for kid in kids:
            child = self._items.get(kid)
            if child is None:
                total += 1
                continue
            if not child.get("deleted") and not child.get("dead"):
                total += 1
            total += self._count_descendants(child.get("kids", []))
        return total

    def add_page(
        self,
        path: str,
        body: bytes | str,
        content_type: str = HTML_UTF8,
        status: int = 200,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> str:
        """Serve ``body`` at ``path`` (query string and trailing slash ignored); returns the URL."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        pairs = tuple(headers.items()) if isinstance(headers, dict) else tuple(headers or ())
        with self._lock:
            self._pages[_normalize(path)] = Page(body, content_type, status, pairs)
        return self.url(path)

    def mount_directory(self, url_prefix: str, directory: str | Path) -> None:
        """Serve files under ``directory`` at ``url_prefix``; ``x.html.gz`` also answers ``x.html``."""
        prefix = "/" + url_prefix.strip("/")
        with self._lock:
            self._mounts.append((prefix, Path(directory).resolve()))

    # -- faults --------------------------------------------------------------------------------

    def set_fault(self, path_prefix: str, kind: str, *, count: int | None = None, **params: Any) -> None:
        """Requests whose path starts with ``path_prefix`` misbehave as ``kind``.

        ``count=None``: until :meth:`clear_faults`; else only the next ``count`` matching requests.
        The most recently set matching fault wins. Kinds and their params (defaults):
        slow(seconds=10), trickle(bytes_per_sec=100), error(status=500), 404,
        huge(size=20 MB, declare_length=True), binary(size=1 MiB, lie=False),
        redirect_loop(mode="self"|"pingpong", status=302), redirect(location, status=302),
        bad_encoding(mode="utf8_lie"|"none"|"meta_only"), malformed_json, drop(mode="close"|"reset"),
        retry_after(seconds=30, status=429).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if kind == "redirect" and "location" not in params:
            raise ValueError("a redirect fault needs location=")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        with self._lock:
            self._faults.append(Fault(path_prefix, kind, dict(params), count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in reversed(self._faults):
                if path.startswith(fault.prefix):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.request_log.append((method, path, status))
        if self.verbose:
            print(f"{method} {path} {status}", file=sys.stderr, flush=True)

    # -- Firebase API ---------------------------------------------------------------------------

    def _live(self, item: dict[str, Any]) -> bool:
        return not item.get("deleted") and not item.get("dead")

    def _compute_lists(self) -> dict[str, list[int]]:
        with self._lock:
            if self._lists is not None:
                return self._lists
            top_level = [i for i in self._items.values() if i.get("type") in LISTABLE_TYPES]
            live = [i for i in top_level if self._live(i)]
            missing = list(self._missing)
            hazards = sorted([i["id"] for i in top_level if not self._live(i)] + missing, reverse=True)
            reference = max((i.get("time", 0) for i in self._items.values()), default=0)

            def rank(item: dict[str, Any]) -> float:
                age_hours = max(0.0, (reference - item.get("time", reference)) / 3600)
                return (max(item.get("score", 1), 1) - 1 + 0.5) / (age_hours + 2) ** 1.8

            ranked = [i["id"] for i in sorted(live, key=rank, reverse=True)]
            pinned = [p for p in reversed(self._pinned_top) if p in self._items]
            pinned_set = set(pinned)
            top = pinned + [i for i in ranked if i not in pinned_set]
            for n, hazard in enumerate(hazards):  # a client must skip these, so put them early
                top.insert(min(len(top), 2 + 4 * n), hazard)
            new = sorted([i["id"] for i in top_level if i.get("type") != "job"] + missing, reverse=True)
            best = [i["id"] for i in sorted(live, key=lambda i: (i.get("score", 0), i["id"]), reverse=True)]

            def titled(prefix: str) -> list[int]:
                chosen = [i for i in live if str(i.get("title", "")).startswith(prefix)]
                return [i["id"] for i in sorted(chosen, key=lambda i: i["id"], reverse=True)]

            jobs = [i["id"] for i in sorted(live, key=lambda i: i["id"], reverse=True) if i["type"] == "job"]
            self._lists = {
                "topstories": top[:MAX_TOP],
                "newstories": new[:MAX_TOP],
                "beststories": best[:MAX_TOP],
                "askstories": titled("Ask HN:")[:MAX_TYPED],
                "showstories": titled("Show HN:")[:MAX_TYPED],
                "jobstories": jobs[:MAX_TYPED],
            }
            return self._lists

    def _user(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            mine = [i for i in self._items.values() if i.get("by") == name]
            if not mine and name not in self.snapshot.users:
                return None
            user: dict[str, Any] = dict(self.snapshot.users.get(name, {}))
            user["id"] = name
            first = min((i.get("time", 0) for i in mine), default=int(time.time()))
            user.setdefault("created", first - 86400 * (400 + sum(map(ord, name)) % 3000))
            user.setdefault("karma", 1 + sum(int(i.get("score", 0)) for i in mine) + 3 * len(mine))
            user["submitted"] = sorted([i["id"] for i in mine], reverse=True)
            return user

    def _updates(self) -> dict[str, list[Any]]:
        with self._lock:
            recent = sorted(self._items.values(), key=lambda i: (i.get("time", 0), i["id"]), reverse=True)
            ids = list(dict.fromkeys([*reversed(self._touched), *(i["id"] for i in recent)]))[:30]
            profiles = list(dict.fromkeys(self._items[i]["by"] for i in ids if self._items[i].get("by")))
            return {"items": ids, "profiles": profiles[:20]}

    def _api(self, path: str, query: dict[str, str]) -> Reply:
        if self.api_latency > 0:
            self._stopping.wait(self.api_latency)
        name = path[len("/v0/") :]
        if name.endswith(".json"):
            name = name[: -len(".json")]
        name = name.strip("/")
        value: Any = None
        if name.startswith("item/"):
            try:
                value = self.item(int(name[len("item/") :]))
            except ValueError:
                value = None
        elif name.startswith("user/"):
            value = self._user(name[len("user/") :])
        elif name == "maxitem":
            value = self.maxitem()
        elif name == "updates":
            value = self._updates()
        elif name in ("topstories", "newstories", "beststories", "askstories", "showstories", "jobstories"):
            value = list(self._compute_lists()[name])
        if query.get("print") == "pretty":
            body = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
        else:
            body = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        return Reply(
            200,
            body.encode("utf-8"),
            JSON_UTF8,
            [("Access-Control-Allow-Origin", "*"), ("Cache-Control", "no-cache")],
        )

    # -- pages ------------------------------------------------------------------------------------

    def _hostile(self, name: str, query: dict[str, str]) -> Reply | tuple[str, dict[str, Any]]:
        if name in HOSTILE_PAGES:
            kind, params = HOSTILE_PAGES[name]
            params = {**params, **{k: _coerce(v) for k, v in query.items()}}
            return kind, params
        if name == "landing":
            return Reply(200, _simple_html("You made it", "This page is the end of a legitimate redirect."))
        if name == "empty":
            return Reply(200, b"")
        if name == "spa":
            return Reply(200, SPA_PAGE)
        if name == "pdf-lie":
            paper = self._pages.get("/papers/adaptive-admission-control.pdf")
            body = paper.body if paper else b"%PDF-1.4\n%%EOF\n"
            return Reply(200, body, HTML_UTF8)
        if name in ("", "index"):
            links = "".join(
                f'<li><a href="/hostile/{n}">/hostile/{n}</a></li>' for n in [*HOSTILE_PAGES, *HOSTILE_STATIC]
            )
            return Reply(200, f"<!DOCTYPE html><html><body><ul>{links}</ul></body></html>".encode())
        return Reply(404, _simple_html("404 Not Found", "No such hostile page."))

    def _page(self, path: str) -> Reply:
        norm = _normalize(path)
        with self._lock:
            page = self._pages.get(norm)
            mounts = list(self._mounts)
        if page is not None:
            return Reply(page.status, page.body, page.content_type, list(page.headers))
        for prefix, directory in mounts:
            if norm.startswith(prefix + "/"):
                reply = _from_directory(directory, norm[len(prefix) + 1 :])
                if reply is not None:
                    return reply
        if norm == "/":
            return Reply(200, self._index())
        if norm in ("/robots.txt", "/favicon.ico"):
            return Reply(404, b"", "text/plain")
        return Reply(404, _simple_html("404 Not Found", f"Nothing at {norm}."))

    def _index(self) -> bytes:
        with self._lock:
            paths = sorted(self._pages)
        rows = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>' for p in paths)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>HN replay</title></head><body>"
            f"<h1>HN replay</h1><p>API: <a href='/v0/topstories.json'>/v0/</a> · "
            f"<a href='/hostile/'>/hostile/</a></p><ul>{rows}</ul></body></html>"
        ).encode()

    def _route(self, path: str, query: dict[str, str]) -> Reply | tuple[str, dict[str, Any]]:
        if path == "/v0" or path.startswith("/v0/"):
            return self._api(path if path != "/v0" else "/v0/", query)
        if path.startswith("/hostile/") or path == "/hostile":
            return self._hostile(_normalize(path)[len("/hostile/") :], query)
        return self._page(path)

    def respond(self, method: str, raw_path: str) -> Reply:
        """The reply to one request (faults applied)."""
        split = urlsplit(raw_path)
        path = unquote(split.path) or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        fault = self._take_fault(path)
        if fault is not None:
            return self._apply(fault.kind, fault.params, path, raw_path, query)
        routed = self._route(path, query)
        if isinstance(routed, tuple):
            kind, params = routed
            return self._apply(kind, params, path, raw_path, query, hostile=True)
        return routed

    def _base_for_fault(self, path: str, query: dict[str, str], hostile: bool) -> Reply:
        """The normal answer a wrapping fault (slow, trickle, bad_encoding...) delays or mangles."""
        if hostile:
            return Reply(200, _simple_html("Eventually, a page", "This page took its time to arrive."))
        routed = self._route(path, query)
        if isinstance(routed, tuple):
            return Reply(200, _simple_html("Eventually, a page", "This page took its time to arrive."))
        return routed

    def _apply(
        self,
        kind: str,
        params: dict[str, Any],
        path: str,
        raw_path: str,
        query: dict[str, str],
        *,
        hostile: bool = False,
    ) -> Reply:
        is_api = path.startswith("/v0/")
        if kind == "slow":
            reply = self._base_for_fault(path, query, hostile)
            reply.delay = float(params.get("seconds", 10.0))
            return reply
        if kind == "trickle":
            reply = self._base_for_fault(path, query, hostile)
            if not isinstance(reply.body, bytes) or not reply.body:
                reply.body = _simple_html("Slowly", "A page delivered a few bytes at a time. " * 20)
            reply.rate = float(params.get("bytes_per_sec", 100))
            reply.delay = float(params.get("seconds", 0.0))
            return reply
        if kind in ("error", "404"):
            status = 404 if kind == "404" else int(params.get("status", 500))
            reason = _reason(status)
            if is_api:
                return Reply(status, json.dumps({"error": reason}).encode(), JSON_UTF8)
            return Reply(status, _simple_html(f"{status} {reason}", "The server could not answer."))
        if kind == "huge":
            size = int(params.get("size", 20 * 1024 * 1024))
            declare = bool(params.get("declare_length", True))
            return Reply(200, _huge_chunks(size), HTML_UTF8, length=size if declare else None)
        if kind == "binary":
            size = int(params.get("size", 1024 * 1024))
            ctype = HTML_UTF8 if params.get("lie") else "application/octet-stream"
            return Reply(200, _binary_chunks(size), ctype, length=size)
        if kind == "redirect_loop":
            status = int(params.get("status", 302))
            target = raw_path
            if params.get("mode", "self") == "pingpong":
                bare = urlsplit(raw_path)
                other = bare.path[:-1] if bare.path.endswith("/") else bare.path + "/"
                target = other + (f"?{bare.query}" if bare.query else "")
            return Reply(status, b"", None, [("Location", target)])
        if kind == "redirect":
            location = str(params["location"]).replace(BASE_PLACEHOLDER, self.base_url)
            return Reply(int(params.get("status", 302)), b"", None, [("Location", location)])
        if kind == "bad_encoding":
            return self._bad_encoding(path, query, hostile, str(params.get("mode", "utf8_lie")))
        if kind == "malformed_json":
            reply = self._base_for_fault(path, query, hostile)
            body = reply.body if isinstance(reply.body, bytes) else b'{"items":[1,2,3]}'
            cut = body[: max(1, len(body) // 2)]
            try:
                json.loads(cut)
                cut = b"[" + cut
            except ValueError:
                pass
            return Reply(200, cut, JSON_UTF8)
        if kind == "drop":
            return Reply(0, drop=str(params.get("mode", "close")))
        if kind == "retry_after":
            seconds = params.get("seconds", 30)
            shown = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
            status = int(params.get("status", 429))
            body = json.dumps({"error": "Too Many Requests"}).encode() if is_api else b"Too Many Requests\n"
            ctype = JSON_UTF8 if is_api else "text/plain; charset=utf-8"
            return Reply(status, body, ctype, [("Retry-After", shown)])
        raise ValueError(f"unknown fault kind {kind!r}")

    def _bad_encoding(self, path: str, query: dict[str, str], hostile: bool, mode: str) -> Reply:
        text = LATIN1_PAGE
        if not hostile:
            base = self._base_for_fault(path, query, hostile)
            ctype = base.content_type or ""
            if base.status == 200 and isinstance(base.body, bytes) and "html" in ctype:
                charset = ctype.partition("charset=")[2].strip() or "utf-8"
                text = base.body.decode(charset, errors="replace")
        text = _META_CHARSET_TAG.sub("", text)
        if mode == "meta_only":
            text = text.replace("<head>", '<head><meta charset="windows-1252">', 1)
        body = text.encode("cp1252", errors="xmlcharrefreplace")
        ctype = HTML_UTF8 if mode == "utf8_lie" else "text/html"
        return Reply(200, body, ctype)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _normalize(path: str) -> str:
    bare = unquote(urlsplit(path).path) or "/"
    if len(bare) > 1:
        bare = bare.rstrip("/") or "/"
    return bare


def _from_directory(directory: Path, rel: str) -> Reply | None:
    candidate = (directory / rel).resolve()
    if not candidate.is_relative_to(directory):
        return None
    if candidate.is_file():
        if candidate.name.endswith(".html") or candidate.name.endswith(".htm"):
            body = candidate.read_bytes()
            return Reply(200, body, _sniff_html_type(body))
        ctype = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        if candidate.name.endswith(".gz"):
            ctype = "application/gzip"
        return Reply(200, candidate.read_bytes(), ctype)
    gz = candidate.with_name(candidate.name + ".gz")
    if candidate.name.endswith((".html", ".htm")) and gz.is_file():
        return Reply(200, gzip.decompress(gz.read_bytes()), HTML_UTF8)
    return None


class _Handler(SandboxHandler):
    server_version = "HNReplay/1.0"

    def do_POST(self) -> None:
        self.send_error(501)

    do_DELETE = do_POST

    def _serve(self, method: str) -> None:
        replay = self.server.replay
        head = method == "HEAD"
        reply = replay.respond(method, self.path)
        stopping = replay._stopping
        if reply.delay > 0 and stopping.wait(reply.delay):
            self.close_connection = True
            replay._log(method, self.path, 0)
            return
        if reply.drop is not None:
            self._drop(reply.drop)
            replay._log(method, self.path, 0)
            return
        replay._log(method, self.path, reply.status)
        try:
            self._write(reply, head, stopping)
        except _CONNECTION_ERRORS:
            self.close_connection = True

    def _write(self, reply: Reply, head: bool, stopping: threading.Event) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for key, value in reply.headers:
            self.send_header(key, value)
        chunked = False
        if isinstance(reply.body, bytes):
            self.send_header("Content-Length", str(len(reply.body)))
        elif reply.length is not None:
            self.send_header("Content-Length", str(reply.length))
        else:
            chunked = True
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        chunks: Iterable[bytes] = [reply.body] if isinstance(reply.body, bytes) else reply.body
        if reply.rate:
            chunks = _throttle(chunks, reply.rate, stopping)
        for chunk in chunks:
            if not chunk:
                continue
            if chunked:
                self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
            else:
                self.wfile.write(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def _throttle(chunks: Iterable[bytes], rate: float, stopping: threading.Event) -> Iterator[bytes]:
    tick = 0.05
    step = max(1, int(rate * tick))
    for chunk in chunks:
        for start in range(0, len(chunk), step):
            yield chunk[start : start + step]
            if stopping.wait(step / rate):
                raise ConnectionAbortedError("server stopping")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hnpal.sandbox.hn_replay",
        description="Serve a local Hacker News API and the article pages its stories link to.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-shift-times", action="store_true", help="keep the snapshot's own times")
    parser.add_argument("--snapshot", type=Path, default=None, help="snapshot directory (default: bundled)")
    parser.add_argument("--api-latency", type=float, default=0.0, help="seconds added to every API answer")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every request to stderr")
    args = parser.parse_args(argv)
    server = HNReplayServer(
        Snapshot.load(args.snapshot),
        host=args.host,
        port=args.port,
        api_latency=args.api_latency,
        shift_times=not args.no_shift_times,
        verbose=args.verbose,
    )
    return server.serve_cli(server.api_url)


if __name__ == "__main__":
    raise SystemExit(main())
