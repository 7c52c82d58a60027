"""What each kind of HN post keeps, end to end: real workers (content, default, llm), the HN replay
server, the real PostgreSQL and RocksDB.

- a post with both a URL and a text keeps the submitter's words beside the article (``hn_text``);
- a title-only Ask HN gets its comment thread, then a summary made from it and saying so;
- a poll gets its options, with their votes, as its text.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from hnpal.content import ContentStore
from hnpal.db.session import session_scope
from hnpal.ingest import service
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot
from hnpal.summaries.service import NO_TEXT_PREFIX
from tests.ingest.real_items import COMMENT_2921983, POLL_126809, POLLOPT_126811

BASE = 9_200_000
# Written here: a Show HN with both a URL and a text, as many Show HN and Launch HN posts are.
SHOW_HN = {
    "by": "maker",
    "descendants": 0,
    "id": BASE + 1,
    "score": 12,
    "text": "Hi HN, I built this because our team kept losing track of flaky tests.<p>It runs locally.",
    "time": 1733400000,
    "title": "Show HN: Flakehunter, a local flaky-test tracker",
    "type": "story",
    "url": "https://flakehunter.example.com/",
}
# Written here: a title-only Ask HN (no text, no URL) with a thread of two comments.
ASK = {
    "by": "asker",
    "descendants": 2,
    "id": BASE + 2,
    "kids": [BASE + 3, BASE + 4],
    "score": 40,
    "time": 1733400000,
    "title": "Ask HN: What is the best book on distributed systems you have read?",
    "type": "story",
}
REPLIES = [
    {**COMMENT_2921983, "id": BASE + 3, "parent": BASE + 2, "kids": [],
     "text": "Designing Data-Intensive Applications, by far: it explains replication and consensus clearly."},
    {**COMMENT_2921983, "id": BASE + 4, "parent": BASE + 2, "kids": [],
     "text": "Distributed Systems by van Steen and Tanenbaum is free online and covers the fundamentals well."},
]  # fmt: skip
# The README's poll (126809, text ""), with its three options: 126811 as recorded, 126810 and 126812
# written here in the same shape (their recorded text is not in the recordings found).
POLL = {**POLL_126809, "kids": []}
OPTIONS = [
    {**POLLOPT_126811, "id": 126810, "score": 23, "text": "Users would create more polls."},
    POLLOPT_126811,
    {**POLLOPT_126811, "id": 126812, "score": 1, "text": "Nothing much would change."},
]


def wait_for(predicate, what: str, timeout: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_url_text_posts_title_only_ask_hn_and_polls(tmp_path: Path, settings_env, spawn_worker) -> None:
    server = HNReplayServer(Snapshot.empty()).start()
    store_path = tmp_path / "content.rocksdb"
    ids = [SHOW_HN["id"], ASK["id"], POLL["id"]]
    try:
        for item in (SHOW_HN, ASK, *REPLIES, POLL, *OPTIONS):
            server.add_item(item)
        settings_env(hn_api_base_url=server.api_url, content_path=str(store_path), hn_concurrency="4")
        spawn_worker("content").wait_ready()
        spawn_worker("default,llm", concurrency=2, pool="threads").wait_ready()
        with session_scope() as session:
            report = service.fetch_items(session=session, hn_ids=ids)
        assert report.inserted == 3 and len(report.threads) == 1 and len(report.text_posts) == 1

        def posts() -> dict[int, Post]:
            with session_scope() as session:
                return {p.hn_id: p for p in session.scalars(select(Post).where(Post.hn_id.in_(ids)))}

        wait_for(lambda: posts()[SHOW_HN["id"]].has_hn_text, "the Show HN text")
        wait_for(lambda: posts()[ASK["id"]].summary_status == "done", "the Ask HN summary")
        wait_for(lambda: posts()[POLL["id"]].has_text, "the poll options")
        stored = posts()
        with ContentStore.open_reader(store_path) as store:
            show_text = store.get_text(SHOW_HN["id"], "hn_text")
            poll_text = store.get_text(POLL["id"], "text")
            thread = store.get_text(ASK["id"], "comments")
    finally:
        server.stop()
        with session_scope() as session:
            session.execute(Post.__table__.delete().where(Post.hn_id.in_(ids)))
    show, ask = stored[SHOW_HN["id"]], stored[ASK["id"]]
    # the URL post keeps its words, and its crawl is untouched (still on its way)
    assert show_text.startswith("Hi HN, I built this") and "\n\nIt runs locally." in show_text
    assert show.crawl_status == "queued" and not show.has_text and show.domain == "example.com"
    # the title-only Ask HN: its thread was fetched, its summary made from it and flagged as such
    assert ask.crawl_status == "skipped" and ask.comments_fetched_at is not None and "Designing Data" in thread
    assert ask.summary_basis == "title_and_comments" and ask.summary.startswith(NO_TEXT_PREFIX)
    # the poll: every option in order, with its votes
    assert poll_text.splitlines()[0] == "Poll options:"
    assert "1. Users would create more polls. (23 votes)" in poll_text
    assert "2. Users would create fewer polls, because" in poll_text and "(49 votes)" in poll_text
    assert "3. Nothing much would change. (1 vote)" in poll_text
