"""HN ingestion against the replay server (real HTTP) and the real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hnpal import jobs
from hnpal.ingest import service
from hnpal.ingest.client import HNClient, ItemError
from hnpal.ingest.items import Skip, classify, parse_item
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer


@pytest.fixture(scope="module")
def replay():
    server = HNReplayServer().start()  # the bundled snapshot
    yield server
    server.stop()


@pytest.fixture
def hn_settings(replay, settings_env):
    settings_env(hn_api_base_url=replay.api_url, hn_concurrency="8")
    return replay


def test_classification() -> None:
    assert classify({"type": "story", "title": "Ask HN: Which DB?"}) == "ask_hn"
    assert classify({"type": "story", "title": "Show HN: My compiler"}) == "show_hn"
    assert classify({"type": "story", "title": "Postgres 18"}) == "story"
    assert classify({"type": "job", "title": "Acme is hiring"}) == "job"
    assert classify({"type": "poll", "title": "Poll: tabs or spaces?"}) == "poll"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (None, "null"),
        ({"id": 1, "deleted": True, "type": "story", "time": 1}, "deleted"),
        ({"id": 2, "dead": True, "type": "story", "title": "spam", "time": 1}, "dead"),
        ({"id": 3, "type": "comment", "text": "hi", "time": 1}, "not_a_post"),
        ({"id": 4, "type": "story", "time": 1}, "missing_fields"),
        ({"id": 5, "type": "story", "title": "t"}, "missing_fields"),
        ({"id": "6", "type": "story", "title": "t", "time": 1}, "missing_fields"),
        ({"id": -7, "type": "story", "title": "t", "time": 1}, "invalid"),
        ({"id": 8, "type": "story", "title": "t", "time": 1, "score": "lots"}, "invalid"),
        ([1, 2], "invalid"),
    ],
)
def test_malformed_items_are_skipped_with_a_reason(item, reason: str) -> None:
    with pytest.raises(Skip) as info:
        parse_item(item)
    assert info.value.reason == reason


def test_parse_item_extracts_domain_and_canonical_url() -> None:
    post, extra = parse_item(
        {
            "id": 9,
            "type": "story",
            "title": "  A   title ",
            "time": 1718900000,
            "url": "https://www.Example.com/a/?utm_source=hn",
            "by": "pg",
            "score": 10,
            "descendants": 3,
        }
    )
    assert post.title == "A title" and post.domain == "example.com"
    assert extra["canonical_url"] == "https://example.com/a"
    assert (post.score, post.comment_count, post.author) == (10, 3, "pg")
    javascript, _ = parse_item({"id": 10, "type": "story", "title": "x", "time": 1, "url": "javascript:alert(1)"})
    assert javascript.url is None


def test_fetch_lists_upserts_every_type_and_counts_skips(db_session: Session, hn_settings) -> None:
    with jobs.recording() as sent:
        report = service.fetch_lists(session=db_session, lists=["new", "job"], limit=500)
        assert sent == []  # nothing before the commit
        db_session.commit()  # the test's savepoint: the jobs go out
    assert report.skipped["deleted"] >= 1 and report.skipped["dead"] >= 1 and report.skipped["null"] >= 1
    # the sandbox's items only: other tests of the run may have committed posts of their own
    posts = db_session.scalars(select(Post).where(Post.hn_id.in_(list(hn_settings.items)))).all()
    assert report.inserted == len(posts) >= 30
    types = {p.type for p in posts}
    assert types == {"story", "ask_hn", "show_hn", "poll", "job"}
    by_status = {}
    for post in posts:
        by_status.setdefault(post.crawl_status, []).append(post)
    assert all(p.url for p in by_status["queued"])
    # text posts go straight to the content writer, with no crawl
    assert all(p.url is None for p in by_status.get("fetched", []))
    assert len(report.text_posts) == len(by_status.get("fetched", [])) >= 3
    assert all(p.domain and p.canonical_url for p in posts if p.url)
    # after the commit: a crawl per new post with a URL, the HN text of each text post to the content writer
    crawls = sorted(job.args[0] for job in sent if job.name == jobs.CRAWL_POST)
    assert crawls == sorted(p.id for p in by_status["queued"])
    texts = {job.args[0] for job in sent if job.name == jobs.CONTENT_STORE}
    assert set(report.text_posts) <= texts
    # and the topics of every new post, in jobs of their own
    classified = [i for job in sent if job.name == jobs.RELEVANCE_CLASSIFY for i in job.args[0]]
    assert sorted(classified) == sorted(p.id for p in posts)
    assert {job.name for job in sent} <= {
        jobs.CRAWL_POST,
        jobs.CONTENT_STORE,
        jobs.INGEST_COMMENTS,
        jobs.RELEVANCE_CLASSIFY,
    }


def test_refetch_refreshes_scores_without_duplicates(db_session: Session, hn_settings) -> None:
    with jobs.recording():
        first = service.fetch_lists(session=db_session, lists=["new", "top"], limit=500)
    story_id = next(iter(sorted(hn_settings.items)))
    story = hn_settings.item(story_id)
    post = db_session.scalar(select(Post).where(Post.hn_id == story_id))
    assert post is not None
    db_session.execute(
        Post.__table__.update().where(Post.id == post.id).values(crawl_status="success", is_crawl_success=True)
    )
    original = hn_settings.items[story_id]
    hn_settings.add_item({**original, "score": story["score"] + 100, "descendants": story.get("descendants", 0) + 5})
    try:
        with jobs.recording():
            second = service.fetch_lists(session=db_session, lists=["new", "top"], limit=500)
    finally:
        hn_settings.add_item(original)
    assert second.inserted == 0 and second.updated == first.inserted
    db_session.refresh(post)
    assert post.score == story["score"] + 100
    assert post.crawl_status == "success"  # a refresh never resets the crawl
    assert (
        db_session.scalar(select(func.count(Post.id)).where(Post.hn_id.in_(list(hn_settings.items)))) == first.inserted
    )


def test_transient_api_errors_are_retried(hn_settings) -> None:
    item_id = next(iter(sorted(hn_settings.items)))
    hn_settings.set_fault(f"/v0/item/{item_id}", "error", status=503, count=2)
    try:
        with HNClient(hn_settings.api_url, concurrency=4, backoff=0.01) as client:
            result = client.items([item_id])
    finally:
        hn_settings.clear_faults()
    assert isinstance(result[item_id], dict) and result[item_id]["id"] == item_id
    hits = [s for _m, p, s in hn_settings.request_log if p.startswith(f"/v0/item/{item_id}")]
    assert hits[-3:] == [503, 503, 200]


def test_malformed_json_is_retried_then_reported(hn_settings) -> None:
    item_id = next(iter(sorted(hn_settings.items)))
    hn_settings.set_fault(f"/v0/item/{item_id}", "malformed_json")
    try:
        with HNClient(hn_settings.api_url, concurrency=2, attempts=3, backoff=0.01) as client:
            result = client.items([item_id, 999_999_999])
    finally:
        hn_settings.clear_faults()
    assert result[item_id] == ItemError(item_id, "malformed")
    assert result[999_999_999] is None  # unknown ids answer null, like Firebase


def test_permanent_errors_skip_one_item_not_the_batch(db_session: Session, hn_settings) -> None:
    ids = sorted(i for i, it in hn_settings.items.items() if it.get("type") == "story" and not it.get("dead"))[:5]
    hn_settings.set_fault(f"/v0/item/{ids[0]}", "404")
    try:
        with jobs.recording():
            report = service.fetch_items(session=db_session, hn_ids=ids)
    finally:
        hn_settings.clear_faults()
    assert report.skipped["fetch_failed"] == 1
    assert report.inserted + sum(report.skipped.values()) == len(ids)


def test_comment_thread_drops_dead_and_deleted(hn_settings) -> None:
    from hnpal.ingest.comments import fetch_thread

    comments = {i: it for i, it in hn_settings.items.items() if it.get("type") == "comment"}
    hidden = {i for i, it in comments.items() if it.get("dead") or it.get("deleted")}
    assert hidden, "the snapshot has dead and deleted comments"
    stories = [
        hn_settings.item(i) for i, it in hn_settings.items.items() if it.get("type") == "story" and it.get("kids")
    ]
    kept_all = []
    with HNClient(hn_settings.api_url, concurrency=8) as client:
        for story in stories:
            kept = fetch_thread(client, story, depth=3, limit=5)
            assert len(kept) <= 5
            assert all(c["depth"] < 3 and c["text"] and "<p>" not in c["text"] for c in kept)
            kept_all.extend(kept)
        everything = [c for story in stories for c in fetch_thread(client, story, depth=10, limit=1000)]
    assert not {c["id"] for c in kept_all + everything} & hidden
    visible = {i for i, it in comments.items() if i not in hidden and it.get("text")}
    # with no limits, every visible comment whose ancestors are visible is kept
    assert {c["id"] for c in everything} <= visible and len(everything) >= len(visible) - 3 * len(hidden)
