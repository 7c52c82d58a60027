"""The HN replay server, driven over loopback with real clients (httpx and requests)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot
from hnpal.sandbox.pdfwriter import build_pdf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return Snapshot.load()


@pytest.fixture
def hn(snapshot: Snapshot) -> Iterator[HNReplayServer]:
    with HNReplayServer(snapshot) as server:
        yield server


@pytest.fixture
def client(hn: HNReplayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hn.base_url, timeout=5) as c:
        yield c


def _top_level(items: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items.values() if i.get("type") in ("story", "job", "poll")]


def _live(item: dict[str, Any]) -> bool:
    return not item.get("deleted") and not item.get("dead")


class _ArticleText(HTMLParser):
    """Text of the first <article>, else <div class="post-content">, else <main>."""

    SKIP = {"script", "style", "nav", "aside", "figure", "form"}
    VOID = {"meta", "link", "img", "br", "hr", "input"}

    def __init__(self, container: str) -> None:
        super().__init__()
        self.container = container
        self.depth = 0  # open elements inside the container (0: outside)
        self.skip = 0
        self.done = False
        self.parts: list[str] = []

    def _matches(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if self.container == "post-content":
            return tag == "div" and "post-content" in (dict(attrs).get("class") or "").split()
        return tag == self.container

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done or tag in self.VOID:
            return
        if self.depth == 0:
            if self._matches(tag, attrs):
                self.depth = 1
            return
        self.depth += 1
        if tag in self.SKIP or self.skip:
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        if self.done or self.depth == 0 or tag in self.VOID:
            return
        if self.skip:
            self.skip -= 1
        self.depth -= 1
        if self.depth == 0:
            self.done = True

    def handle_data(self, data: str) -> None:
        if self.depth and not self.skip and not self.done:
            self.parts.append(data)


def article_text(html_text: str) -> str:
    for container in ("article", "post-content", "main"):
        parser = _ArticleText(container)
        parser.feed(html_text)
        if parser.parts:
            return " ".join(" ".join(parser.parts).split())
    return ""


# ----------------------------------------------------------------------------------- Firebase API


def test_lists_and_items_in_firebase_format(hn: HNReplayServer, client: httpx.Client) -> None:
    top = client.get("/v0/topstories.json")
    assert top.status_code == 200
    assert top.headers["content-type"] == "application/json; charset=utf-8"
    assert top.http_version == "HTTP/1.1"
    top_ids = top.json()
    assert all(isinstance(i, int) for i in top_ids) and 30 <= len(top_ids) <= 500
    new_ids = client.get("/v0/newstories.json").json()
    assert new_ids == sorted(new_ids, reverse=True)
    assert client.get("/v0/newstories").json() == new_ids  # with or without .json
    assert client.get("/v0/maxitem.json").json() == max(new_ids) == hn.maxitem()

    items = {i: client.get(f"/v0/item/{i}.json").json() for i in top_ids}
    live = [item for item in items.values() if item and _live(item)]
    assert len(live) >= 30
    for item in live:
        assert set(item) <= {
            "id",
            "type",
            "by",
            "time",
            "title",
            "url",
            "text",
            "score",
            "descendants",
            "kids",
            "parts",
        }
        assert {"id", "type", "by", "time", "title", "score"} <= set(item)
        assert isinstance(item["time"], int) and 1 <= item["score"] <= 900
        if item["type"] != "job":
            assert isinstance(item["descendants"], int)
    # top ranking puts the high-scoring recent stories ahead of the old small ones
    scores = [items[i]["score"] for i in top_ids if items[i] and _live(items[i])]
    assert sum(scores[:5]) > sum(scores[-5:])

    ask = client.get("/v0/askstories.json").json()
    show = client.get("/v0/showstories.json").json()
    jobs = client.get("/v0/jobstories.json").json()
    best = client.get("/v0/beststories.json").json()
    assert len(ask) >= 3 and len(show) >= 3 and len(jobs) >= 1
    assert all(hn.item(i)["title"].startswith("Ask HN:") for i in ask)
    assert all(hn.item(i)["title"].startswith("Show HN:") for i in show)
    assert all(hn.item(i)["type"] == "job" for i in jobs)
    best_scores = [hn.item(i)["score"] for i in best]
    assert best_scores == sorted(best_scores, reverse=True)

    updates = client.get("/v0/updates.json").json()
    assert set(updates) == {"items", "profiles"} and updates["items"] and updates["profiles"]
    pretty = client.get("/v0/maxitem.json", params={"print": "pretty"})
    assert pretty.json() == hn.maxitem()


def test_unknown_ids_answer_null(client: httpx.Client) -> None:
    for path in ("/v0/item/1.json", "/v0/item/999999999.json", "/v0/user/nobody-here.json", "/v0/nope.json"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.text == "null"


def test_items_comments_users_and_escaping(hn: HNReplayServer) -> None:
    items = hn.items
    comments = [i for i in items.values() if i["type"] == "comment"]
    assert any("&#x27;" in c.get("text", "") for c in comments)
    assert any("<p>" in c.get("text", "") for c in comments)
    assert any('<a href="https:&#x2F;&#x2F;' in c.get("text", "") for c in comments)
    assert any("<i>" in c.get("text", "") for c in comments)
    assert any(c.get("deleted") and "by" not in c and "text" not in c for c in comments)
    assert any(c.get("dead") and c.get("text") for c in comments)

    def walk(ids: list[int], depth: int) -> tuple[int, int, int]:
        visible = total = deepest = 0
        for kid in ids:
            child = items[kid]
            assert child["type"] == "comment" and child["time"] >= items[child["parent"]]["time"]
            total += 1
            visible += _live(child)
            v, t, d = walk(child.get("kids", []), depth + 1)
            visible, total, deepest = visible + v, total + t, max(deepest, d, depth + 1)
        return visible, total, deepest

    depths = []
    for story in _top_level(items):
        if story.get("descendants"):
            visible, total, deepest = walk(story["kids"], 0)
            assert visible == story["descendants"]
            assert 3 <= total <= 15
            depths.append(deepest)
    assert len(depths) >= 20 and max(depths) >= 3 and min(depths) >= 2

    poll = next(i for i in items.values() if i["type"] == "poll")
    options = [items[p] for p in poll["parts"]]
    assert len(options) >= 2 and all(o["type"] == "pollopt" and o["poll"] == poll["id"] for o in options)

    user = httpx.get(hn.api_url + f"user/{poll['by']}.json").json()
    assert user["id"] == poll["by"] and poll["id"] in user["submitted"] and user["karma"] > 0


def test_base_placeholder_is_replaced(hn: HNReplayServer, client: httpx.Client) -> None:
    raw = [client.get(f"/v0/item/{i}.json").text for i in client.get("/v0/topstories.json").json()]
    assert not any("{base}" in text for text in raw)
    urls = [json.loads(t)["url"] for t in raw if t != "null" and "url" in json.loads(t)]
    assert len(urls) >= 25
    assert all(u.startswith(hn.base_url + "/") for u in urls)
    article = next(u for u in urls if "/articles/" in u and "utm_" not in u and "billing" not in u)
    page = requests.get(article, timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_lists_include_dead_deleted_and_null_ids(hn: HNReplayServer, client: httpx.Client) -> None:
    new_ids = client.get("/v0/newstories.json").json()
    top_ids = client.get("/v0/topstories.json").json()
    answers = {i: client.get(f"/v0/item/{i}.json").json() for i in new_ids}
    nulls = [i for i, item in answers.items() if item is None]
    deleted = [item for item in answers.values() if item and item.get("deleted")]
    dead = [item for item in answers.values() if item and item.get("dead")]
    assert nulls and deleted and dead
    assert all("title" not in item and item["type"] == "story" and "time" in item for item in deleted)
    assert all(item["title"] for item in dead)
    for hazard in [*nulls, *(d["id"] for d in deleted), *(d["id"] for d in dead)]:
        assert hazard in top_ids[:20]
    assert max(nulls) <= client.get("/v0/maxitem.json").json()


def test_shift_times(snapshot: Snapshot) -> None:
    with HNReplayServer(snapshot, shift_times=False) as fixed, HNReplayServer(snapshot) as shifted:
        newest_fixed = max(i["time"] for i in fixed.items.values())
        assert newest_fixed == max(i["time"] for i in snapshot.items.values()) <= snapshot.epoch
        newest = max(i["time"] for i in shifted.items.values())
        assert abs(newest - time.time()) < 60
        oldest = min(i["time"] for i in shifted.items.values())
        assert newest - oldest <= 48 * 3600


def test_api_latency(snapshot: Snapshot) -> None:
    with HNReplayServer(snapshot, api_latency=0.2) as slow:
        started = time.monotonic()
        assert httpx.get(slow.api_url + "maxitem.json").status_code == 200
        assert time.monotonic() - started >= 0.2


def test_add_story_and_add_item(hn: HNReplayServer, client: httpx.Client) -> None:
    before = client.get("/v0/maxitem.json").json()
    url = hn.add_page("/fresh/post.html", "<html><body><article><p>Fresh.</p></article></body></html>")
    story_id = hn.add_story(title="A fresh story", url=url, score=5, by="tester")
    assert story_id > before
    assert client.get("/v0/maxitem.json").json() == story_id
    assert client.get("/v0/newstories.json").json()[0] == story_id
    assert client.get("/v0/topstories.json").json()[0] == story_id
    item = client.get(f"/v0/item/{story_id}.json").json()
    assert item["title"] == "A fresh story" and item["url"] == url and item["descendants"] == 0
    assert client.get(url).text.endswith("</html>")

    comment_id = story_id + 1
    hn.add_item(
        {
            "id": comment_id,
            "type": "comment",
            "by": "tester",
            "parent": story_id,
            "text": "Hi",
            "time": int(time.time()),
        }
    )
    hn.add_item({**item, "kids": [comment_id], "descendants": 1})
    assert client.get(f"/v0/item/{story_id}.json").json()["kids"] == [comment_id]
    assert comment_id in client.get("/v0/updates.json").json()["items"]
    assert client.get("/v0/maxitem.json").json() == comment_id
    ask_id = hn.add_story(title="Ask HN: Does this show up?", text="Question<p>Body")
    assert client.get("/v0/askstories.json").json()[0] == ask_id
    with pytest.raises(ValueError):
        hn.add_item({"id": 5, "type": "essay"})


# ----------------------------------------------------------------------------------------- pages


def test_pages_ignore_query_and_trailing_slash(hn: HNReplayServer) -> None:
    base = hn.url("/articles/rust-async-cancellation.html")
    plain = requests.get(base, timeout=5)
    assert plain.status_code == 200
    for variant in (base + "/", base + "?utm_source=hn&utm_medium=social", base + "/?utm_campaign=x#frag"):
        assert requests.get(variant, timeout=5).content == plain.content
    assert requests.get(hn.url("/articles/not-a-page.html"), timeout=5).status_code == 404
    head = httpx.head(base)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(plain.content)
    assert head.content == b""


def test_keep_alive_serves_many_requests_on_one_connection(hn: HNReplayServer) -> None:
    with requests.Session() as session:
        for _ in range(5):
            assert session.get(hn.url("/v0/maxitem.json"), timeout=5).status_code == 200
            assert session.get(hn.url("/articles/zig-comptime.html"), timeout=5).status_code == 200
    assert len([r for r in hn.request_log if r[1] == "/v0/maxitem.json"]) == 5


def test_repost_pair_points_at_the_same_article(hn: HNReplayServer) -> None:
    stories = [i for i in _top_level(hn.items) if _live(i) and "url" in i]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for story in stories:
        by_path.setdefault(urlsplit(story["url"]).path.rstrip("/"), []).append(story)
    pairs = [group for group in by_path.values() if len(group) > 1]
    assert len(pairs) == 1
    first, second = sorted(pairs[0], key=lambda s: s["id"])
    assert first["url"] != second["url"] and first["title"] != second["title"]
    assert "utm_source=" in second["url"] and "#" in second["url"] and ".html/" in second["url"]
    assert requests.get(first["url"], timeout=5).content == requests.get(second["url"], timeout=5).content


def test_snapshot_contents(snapshot: Snapshot, hn: HNReplayServer) -> None:
    top = _top_level(snapshot.items)
    assert len(top) >= 30
    live = [s for s in top if _live(s)]
    kinds = Counter(s["type"] for s in live)
    assert kinds["job"] >= 1 and kinds["poll"] >= 1
    ask = [s for s in live if s["title"].startswith("Ask HN:")]
    show = [s for s in live if s["title"].startswith("Show HN:")]
    assert len(ask) >= 3 and all("url" not in s and s["text"] for s in ask)
    assert len(show) >= 3
    assert any("url" in s and "/articles/" in s["url"] for s in show)
    assert any("url" not in s and s.get("text") for s in show)
    assert all("url" not in s and s.get("text") for s in live if s["type"] == "job")
    assert any(s.get("deleted") and "title" not in s for s in top)
    assert any(s.get("dead") for s in top)
    assert all(1 <= s["score"] <= 900 for s in live)
    assert all(snapshot.epoch - 48 * 3600 <= i["time"] <= snapshot.epoch for i in snapshot.items.values())

    hostile = [s["url"] for s in live if "/hostile/" in s.get("url", "")]
    assert len([u for u in hostile if any(k in u for k in ("slow", "huge", "binary"))]) >= 2
    assert any("redirect-loop" in u for u in hostile)
    assert any(urlsplit(s["url"]).path.endswith(".pdf") for s in live if "url" in s)
    missing_page = [s for s in live if "/articles/" in s.get("url", "")]
    statuses = {s["id"]: requests.get(hn.resolve(s["url"]), timeout=5).status_code for s in missing_page}
    assert list(statuses.values()).count(404) == 1

    article_stories = [s for s in live if "/articles/" in s.get("url", "") and statuses[s["id"]] == 200]
    pages = {urlsplit(hn.resolve(s["url"])).path.rstrip("/") for s in article_stories}
    assert len(pages) >= 22 and len(pages) == len([p for p in snapshot.pages if p.startswith("/articles/")])
    firsts = set()
    cp1252 = 0
    for path in sorted(pages):
        response = requests.get(hn.url(path), timeout=5)
        charset = response.headers["content-type"].partition("charset=")[2]
        text = response.content.decode(charset)
        assert "<head>" in text and "<footer" in text and "cookie" in text.lower() and "<nav" in text
        body = article_text(text)
        words = len(body.split())
        assert 300 <= words <= 950, (path, words)
        firsts.add(body[:200])
        if charset == "windows-1252":
            cp1252 += 1
            assert 'charset="windows-1252"' in text and any(ord(ch) > 127 for ch in text)
            with pytest.raises(UnicodeDecodeError):
                response.content.decode("utf-8")
    assert len(firsts) == len(pages) and cp1252 >= 2


def test_pdf_extracts_with_markitdown(hn: HNReplayServer, tmp_path: Path) -> None:
    markitdown = pytest.importorskip("markitdown")
    story = next(s for s in hn.items.values() if s.get("url", "").endswith(".pdf"))
    response = requests.get(story["url"], timeout=5)
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-1.4") and response.content.rstrip().endswith(b"%%EOF")
    path = tmp_path / "paper.pdf"
    path.write_bytes(response.content)
    text = markitdown.MarkItDown().convert(str(path)).text_content
    assert "Adaptive Admission Control" in text and "congestion collapse" in text
    assert len(text.split()) > 300

    made = tmp_path / "small.pdf"
    made.write_bytes(build_pdf("A (tiny) test", ["First paragraph about caching.", "Second one."]))
    text = markitdown.MarkItDown().convert(str(made)).text_content
    assert "A (tiny) test" in text and "caching" in text


def test_mount_directory_serves_gzipped_html(hn: HNReplayServer, tmp_path: Path) -> None:
    body = "<html><head><title>Corpus</title></head><body><p>Gzipped café page.</p></body></html>"
    (tmp_path / "page-001.html.gz").write_bytes(gzip.compress(body.encode()))
    (tmp_path / "plain.txt").write_text("plain text")
    hn.mount_directory("/corpus", tmp_path)
    response = httpx.get(hn.url("/corpus/page-001.html"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == body
    assert httpx.get(hn.url("/corpus/plain.txt")).text == "plain text"
    assert httpx.get(hn.url("/corpus/missing.html")).status_code == 404
    assert httpx.get(hn.url("/corpus/..%2F..%2Fetc%2Fpasswd")).status_code == 404


# ---------------------------------------------------------------------------------------- faults


def test_slow_fault_times_out_the_client(hn: HNReplayServer, client: httpx.Client) -> None:
    hn.set_fault("/v0/item/", "slow", seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v0/item/1.json", timeout=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(hn.url("/hostile/slow?seconds=2"), timeout=0.3)
    started = time.monotonic()
    assert client.get("/hostile/slow", params={"seconds": 0.2}).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_trickle_fault_sends_headers_then_drips(hn: HNReplayServer) -> None:
    url = hn.add_page("/drip.html", b"x" * 400)
    hn.set_fault("/drip.html", "trickle", bytes_per_sec=1000)
    started = time.monotonic()
    with httpx.stream("GET", url, timeout=5) as response:
        headers_at = time.monotonic() - started
        assert response.status_code == 200 and response.headers["content-length"] == "400"
        body = response.read()
    assert body == b"x" * 400
    assert headers_at < 0.3 and time.monotonic() - started >= 0.3


def test_error_404_and_retry_after(hn: HNReplayServer, client: httpx.Client) -> None:
    hn.set_fault("/v0/topstories", "error", status=503)
    response = client.get("/v0/topstories.json")
    assert response.status_code == 503 and response.content
    hn.set_fault("/articles/zig", "404")
    assert client.get("/articles/zig-comptime.html").status_code == 404
    hn.set_fault("/v0/newstories", "retry_after", seconds=7)
    limited = client.get("/v0/newstories.json")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert client.get("/hostile/500").status_code == 500
    assert client.get("/hostile/404").status_code == 404
    assert client.get("/hostile/429").headers["retry-after"] == "30"
    hn.clear_faults()
    assert client.get("/v0/topstories.json").status_code == 200
    assert client.get("/articles/zig-comptime.html").status_code == 200


def test_count_limited_fault_stops_after_n_requests(hn: HNReplayServer, client: httpx.Client) -> None:
    hn.set_fault("/v0/maxitem", "error", count=2)
    statuses = [client.get("/v0/maxitem.json").status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert [s for m, p, s in hn.request_log if p == "/v0/maxitem.json"] == statuses
    hn.set_fault("/v0/", "error", status=502)
    hn.set_fault("/v0/maxitem", "404", count=1)  # the newest matching fault wins
    assert client.get("/v0/maxitem.json").status_code == 404
    assert client.get("/v0/maxitem.json").status_code == 502
    with pytest.raises(ValueError):
        hn.set_fault("/x", "explode")


def test_huge_fault_with_and_without_length(hn: HNReplayServer, client: httpx.Client) -> None:
    size = 3 * 1024 * 1024 + 17
    hn.set_fault("/articles/ssa", "huge", size=size)
    response = client.get("/articles/ssa-form-compilers.html")
    assert response.headers["content-length"] == str(size) and len(response.content) == size
    assert response.content.startswith(b"<!DOCTYPE html>") and response.content.endswith(b"</html>\n")
    chunked = client.get("/hostile/huge-chunked", params={"size": size})
    assert "content-length" not in chunked.headers
    assert chunked.headers["transfer-encoding"] == "chunked" and len(chunked.content) == size
    streamed = 0
    with client.stream("GET", "/hostile/huge") as stream:  # the default 20 MB: read a little, hang up
        assert int(stream.headers["content-length"]) == 20 * 1024 * 1024
        for chunk in stream.iter_bytes():
            streamed += len(chunk)
            if streamed > 256 * 1024:
                break
    assert streamed > 256 * 1024


def test_binary_fault(hn: HNReplayServer, client: httpx.Client) -> None:
    response = client.get("/hostile/binary", params={"size": 5000})
    assert response.headers["content-type"] == "application/octet-stream" and len(response.content) == 5000
    hn.set_fault("/articles/bloom", "binary", size=4096, lie=True)
    lying = client.get("/articles/bloom-filters-in-the-wild.html")
    assert lying.headers["content-type"].startswith("text/html") and len(lying.content) == 4096
    with pytest.raises(UnicodeDecodeError):
        lying.content.decode("utf-8")
    pdf = client.get("/hostile/pdf-lie")
    assert pdf.headers["content-type"].startswith("text/html") and pdf.content.startswith(b"%PDF")


def test_redirect_loops_and_redirects(hn: HNReplayServer, client: httpx.Client) -> None:
    with pytest.raises(httpx.TooManyRedirects):
        client.get("/hostile/redirect-loop", follow_redirects=True)
    with pytest.raises(httpx.TooManyRedirects):
        client.get("/hostile/redirect-pingpong", follow_redirects=True)
    with pytest.raises(requests.exceptions.TooManyRedirects):
        requests.get(hn.url("/hostile/redirect-loop"), timeout=5)
    hn.set_fault("/articles/crdt", "redirect_loop", mode="pingpong")
    with pytest.raises(httpx.TooManyRedirects):
        client.get("/articles/crdt-text-editing.html", follow_redirects=True)
    metadata = "http://169.254.169.254/latest/meta-data/"
    hn.set_fault("/articles/wasm", "redirect", location=metadata)
    moved = client.get("/articles/wasm-component-model.html")
    assert moved.status_code == 302 and moved.headers["location"] == metadata
    assert client.get("/hostile/redirect-private").headers["location"].startswith("http://169.254.169.254/")
    landed = client.get("/hostile/redirect", follow_redirects=True)
    assert landed.status_code == 200 and landed.url.path == "/hostile/landing"


def test_bad_encoding_fault(hn: HNReplayServer, client: httpx.Client) -> None:
    latin = client.get("/hostile/latin1")
    assert latin.headers["content-type"] == "text/html; charset=utf-8"
    with pytest.raises(UnicodeDecodeError):
        latin.content.decode("utf-8")
    assert "café" in latin.content.decode("cp1252")
    hn.set_fault("/articles/sqlite", "bad_encoding", mode="none")
    page = client.get("/articles/sqlite-wal-production.html")
    assert page.headers["content-type"] == "text/html"
    assert b"charset" not in page.content[:2048].lower()
    assert "cafés" in page.content.decode("cp1252")


def test_malformed_json_fault(hn: HNReplayServer, client: httpx.Client) -> None:
    hn.set_fault("/v0/topstories", "malformed_json")
    hn.set_fault("/v0/maxitem", "malformed_json")
    for path in ("/v0/topstories.json", "/v0/maxitem.json"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            response.json()


def test_drop_fault_closes_the_connection(hn: HNReplayServer, client: httpx.Client) -> None:
    hn.set_fault("/v0/item/", "drop", count=1)
    with pytest.raises(httpx.TransportError):
        client.get("/v0/item/1.json")
    assert client.get("/v0/item/1.json").status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(hn.url("/hostile/drop"), timeout=5)
    with pytest.raises(httpx.TransportError):
        httpx.get(hn.url("/hostile/reset"))
    assert ("GET", "/hostile/drop", 0) in hn.request_log


def test_hostile_misc(client: httpx.Client) -> None:
    assert client.get("/hostile/empty").content == b""
    assert b'<div id="root"></div>' in client.get("/hostile/spa").content
    assert client.get("/hostile/").status_code == 200
    assert client.get("/hostile/no-such-thing").status_code == 404
    assert b"/articles/" in client.get("/").content


# -------------------------------------------------------------------------------------- command line


def test_command_line_serves_until_stopped() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hnpal.sandbox.hn_replay", "--port", "0", "--no-shift-times"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        api_url = proc.stdout.readline().strip()
        assert api_url.startswith("http://127.0.0.1:") and api_url.endswith("/v0/")
        assert httpx.get(api_url + "maxitem.json", timeout=5).json() > 0
        top = httpx.get(api_url + "topstories.json", timeout=5).json()
        story = httpx.get(api_url + f"item/{top[0]}.json", timeout=5).json()
        assert story["time"] <= Snapshot.load().epoch
    finally:
        proc.terminate()
        proc.wait(timeout=10)
