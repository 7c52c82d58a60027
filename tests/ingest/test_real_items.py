"""Real-world HN items: domains, numbers out of range, odd comment threads, HN's shortened links."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from hnpal import jobs
from hnpal.crawl.urls import canonical_url, domain_of, normalize_domain
from hnpal.ingest import service
from hnpal.ingest.client import HNClient
from hnpal.ingest.comments import fetch_thread
from hnpal.ingest.items import Skip, parse_item
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot
from hnpal.users.schemas import DigestPreferences
from tests.ingest.real_items import ASK_121003, COMMENT_2921983, STORY_8863


@pytest.fixture
def replay(settings_env):
    server = HNReplayServer(Snapshot.empty()).start()
    settings_env(hn_api_base_url=server.api_url, hn_concurrency="4")
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("url", "domain"),
    [
        ("https://en.wikipedia.org/wiki/Bloom_filter", "wikipedia.org"),
        ("http://blog.codecombat.com/post", "codecombat.com"),
        ("https://m.youtube.com/watch?v=1", "youtube.com"),
        ("https://old.reddit.com/r/programming", "reddit.com"),
        ("https://news.bbc.co.uk/x", "bbc.co.uk"),
        ("https://someone.github.io/notes", "someone.github.io"),  # a private suffix: each site its own
        ("http://www.getdropbox.com/u/2/screencast.html", "getdropbox.com"),
        ("http://127.0.0.1:8000/page", "127.0.0.1"),
    ],
)
def test_domain_is_the_registrable_domain(url: str, domain: str) -> None:
    assert domain_of(url) == domain


def test_public_suffix_list_is_used_offline(monkeypatch, tmp_path) -> None:
    """No list download and no cache written: a fresh extractor works with every socket refused."""
    import socket

    from hnpal.crawl import urls

    def refuse(*_a, **_k):
        raise AssertionError("the Public Suffix List must not be fetched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TLDEXTRACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    urls._extractor.cache_clear()
    try:
        assert urls.registrable_domain("a.b.example.co.uk") == "example.co.uk"
    finally:
        urls._extractor.cache_clear()
    assert not any(tmp_path.rglob("*"))


def test_muted_domains_are_normalized_like_post_domains() -> None:
    prefs = DigestPreferences(muted_domains=["https://en.wikipedia.org/wiki/X", "WWW.Example.com", "example.com"])
    assert prefs.muted_domains == ["wikipedia.org", "example.com"]
    assert normalize_domain("en.wikipedia.org") == domain_of("https://de.wikipedia.org/") == "wikipedia.org"


def test_double_slash_inside_a_path_is_kept() -> None:
    archived = "https://web.archive.org/web/20200101000000/https://example.com/a"
    assert canonical_url(archived) == archived
    assert canonical_url("http://www.example.com//blog/post/") == "https://example.com/blog/post"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("score", 2**31),
        ("descendants", 2**31),
        ("score", 1e308),
        ("descendants", 12.5),
        ("score", "12"),
        ("score", True),
        ("id", 2**63),
    ],
)
def test_out_of_range_and_wrongly_typed_numbers_are_refused(field: str, value) -> None:
    with pytest.raises(Skip) as info:
        parse_item({**STORY_8863, field: value})
    assert info.value.reason == "invalid" and field in str(info.value)


def test_one_bad_number_does_not_lose_the_batch(db_session: Session, replay) -> None:
    replay.add_item(STORY_8863)
    replay.add_item(ASK_121003)
    replay.add_item({**STORY_8863, "id": 8864, "score": 2**31, "title": "huge score"})
    replay.add_item({**STORY_8863, "id": 8865, "descendants": 1e308, "title": "huge descendants"})
    with jobs.recording():
        report = service.fetch_items(session=db_session, hn_ids=[8863, 8864, 8865, 121003])
    assert report.inserted == 2 and report.skipped["invalid"] == 2
    stored = dict(db_session.execute(select(Post.hn_id, Post.domain)).all())
    assert stored == {8863: "getdropbox.com", 121003: None}


def test_comment_threads_with_bad_kids_self_references_and_cycles(replay) -> None:
    story = {**STORY_8863, "id": 500, "kids": [501, 502, "503", None, 501, 500]}
    replay.add_item(story)
    replay.add_item({**COMMENT_2921983, "id": 501, "parent": 500, "kids": [501, 504]})  # lists itself
    replay.add_item({**COMMENT_2921983, "id": 502, "parent": 500, "kids": 7})  # kids is a number
    replay.add_item({**COMMENT_2921983, "id": 504, "parent": 501, "kids": [501, 500, 505]})  # a cycle
    replay.add_item({**COMMENT_2921983, "id": 505, "parent": 504, "text": ["not", "a", "string"]})
    with HNClient(replay.api_url, concurrency=4) as client:
        kept = fetch_thread(client, replay.item(500), depth=10, limit=100)
    assert [c["id"] for c in kept] == [501, 502, 504]
    assert [c["depth"] for c in kept] == [0, 0, 1]
    assert kept[0]["text"].startswith("Aw shucks") and "\n\nTell you what" in kept[0]["text"]


def test_comments_task_survives_a_malformed_story(replay) -> None:
    from hnpal.db.session import session_scope

    story = {**STORY_8863, "id": 9_008_863}
    replay.add_item(story)
    with jobs.recording(), session_scope() as session:
        service.fetch_items(session=session, hn_ids=[story["id"]])
    replay.add_item({**story, "kids": 8869, "descendants": "many"})  # the story changed since
    with session_scope() as session:
        post_id = session.scalar(select(Post.id).where(Post.hn_id == story["id"]))
    try:
        hn_id, document = service.fetch_comments(post_id=post_id, depth=3, limit=10)
    finally:
        with session_scope() as session:
            session.execute(Post.__table__.delete().where(Post.id == post_id))
    assert hn_id == story["id"] and '"comments":[]' in document and '"comment_count":71' in document


def test_hn_shortened_links_are_expanded() -> None:
    from hnpal.crawl.extract import extract_hn_text
    from hnpal.ingest.comments import comment_text

    long = "https://web.archive.org/web/20200101000000/https://example.com/a/very/long/path/to/a/page"
    html = f'See <a href="{long}" rel="nofollow">{long[:60]}...</a><p>Thoughts?'
    assert long in extract_hn_text(html).text and "..." not in extract_hn_text(html).text
    assert long in comment_text(html) and "..." not in comment_text(html)
    short = '<a href="https://example.com/x">my site</a>'  # a link with words keeps them
    assert comment_text(short) == "my site"


def test_a_title_only_post_asks_for_its_thread_once_it_has_comments(db_session: Session, replay) -> None:
    """New Ask HN posts arrive with no comments: the refresh that sees the first ones asks for the thread."""
    ask = {"by": "asker", "descendants": 0, "id": 9_300_001, "score": 1, "time": 1733400000, "type": "story",
           "title": "Ask HN: Anyone else seeing this?"}  # fmt: skip
    replay.add_item(ask)
    with jobs.recording():
        first = service.fetch_items(session=db_session, hn_ids=[ask["id"]])
        db_session.commit()
    assert first.inserted == 1 and first.threads == [] and first.text_posts == []
    replay.add_item({**ask, "descendants": 3, "kids": [9_300_002]})
    with jobs.recording() as sent:
        second = service.fetch_items(session=db_session, hn_ids=[ask["id"]])
        db_session.commit()
    post = db_session.scalar(select(Post).where(Post.hn_id == ask["id"]))
    assert second.updated == 1 and second.threads == [post.id] and post.crawl_status == "skipped"
    assert sent == [jobs.Job(jobs.INGEST_COMMENTS, (post.id,))]
