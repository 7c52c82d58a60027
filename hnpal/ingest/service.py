"""Ingest HN lists into PostgreSQL: fetch concurrently, upsert in batches, enqueue the next step.

One INSERT ... ON CONFLICT (hn_id) statement per batch; a conflict refreshes score and comment_count
only (re-reading an item never resets its crawl). New posts with a URL are marked ``queued`` in that
same statement and their crawl tasks are enqueued after the commit; text posts (Ask HN, jobs...) send
their HN text to the content writer with no crawl. Bad items are skipped with a counted reason and
never fail the batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from hnpal import jobs
from hnpal.crawl.extract import ExtractionError, extract_hn_text
from hnpal.ingest.client import HNClient, ItemError
from hnpal.ingest.items import Skip, parse_item
from hnpal.posts.models import Post
from hnpal.posts.schemas import INT_MAX
from hnpal.relevance.features import text_start

log = logging.getLogger(__name__)
BATCH_SIZE = 500
POLL_OPTIONS_MAX = 100  # options fetched per poll


@dataclass
class IngestReport:
    requested: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: Counter = field(default_factory=Counter)
    crawl_enqueued: list[int] = field(default_factory=list)  # post ids
    text_posts: list[int] = field(default_factory=list)  # post ids whose HN text went to the writer
    threads: list[int] = field(default_factory=list)  # title-only posts whose comment thread was asked for

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "inserted": self.inserted,
            "updated": self.updated,
            "skipped": dict(self.skipped),
            "crawl_enqueued": len(self.crawl_enqueued),
            "text_posts": len(self.text_posts),
            "threads": len(self.threads),
        }


def _client() -> HNClient:
    from config.settings import get_settings

    s = get_settings()
    return HNClient(str(s.hn_api_base_url), concurrency=s.hn_concurrency, timeout=s.hn_timeout, user_agent=s.user_agent)


def _fetch(list_names: list[str], limit: int) -> dict[int, Any]:
    with _client() as client:
        ids: list[int] = []
        for name in list_names:
            ids.extend(client.list_ids(name)[:limit])
        return client.items(ids)


def _fetch_ids(ids: list[int]) -> dict[int, Any]:
    with _client() as client:
        return client.items(ids)


def fetch_lists(*, session: Session, lists: list[str], limit: int) -> IngestReport:
    """Fetch the given HN lists (at most ``limit`` ids each) and upsert every item."""
    items = _fetch(lists, limit)
    return store_items(session=session, items=items)


def refresh_recent(*, session: Session, hours: int) -> IngestReport:
    """Re-read recent posts so score and comment_count stay current."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    ids = list(session.scalars(select(Post.hn_id).where(Post.hn_published_at >= since)))
    if not ids:
        return IngestReport()
    return store_items(session=session, items=_fetch_ids(ids))


def fetch_items(*, session: Session, hn_ids: list[int]) -> IngestReport:
    return store_items(session=session, items=_fetch_ids(hn_ids))


def store_items(*, session: Session, items: dict[int, Any]) -> IngestReport:
    """Validate and upsert fetched items (id -> item, None or ItemError). New posts' crawls, comment
    threads and HN texts are enqueued once ``session`` commits."""
    report = IngestReport(requested=len(items))
    rows: list[dict[str, Any]] = []
    valid: dict[int, dict[str, Any]] = {}
    for item_id, raw in items.items():
        if isinstance(raw, ItemError):
            report.skipped["fetch_failed"] += 1
            log.warning("HN item %s skipped: %s", item_id, raw.reason)
            continue
        try:
            post, extra = parse_item(raw)
        except Skip as skip:
            report.skipped[skip.reason] += 1
            log.info("HN item %s skipped: %s", item_id, skip)
            continue
        row = post.model_dump(exclude={"url"})
        row["url"] = raw.get("url") if post.url is not None else None
        row["canonical_url"] = extra["canonical_url"]
        rows.append(row)
        valid[post.hn_id] = raw
    # A poll's options are fetched for a new poll only (a refresh re-reads every recent post).
    polls = [i for i, raw in valid.items() if raw.get("type") == "poll"]
    known = set(session.scalars(select(Post.hn_id).where(Post.hn_id.in_(polls)))) if polls else set()
    texts = hn_texts(valid, options_for=set(polls) - known)
    now = datetime.now(UTC)
    for start in range(0, len(rows), BATCH_SIZE):
        _upsert_batch(session, rows[start : start + BATCH_SIZE], texts, now, report)
    return report


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def hn_texts(items: dict[int, dict[str, Any]], options_for: set[int] | None = None) -> dict[int, str]:
    """The HN text (HTML) of each item that has one, a poll's options and their votes included (fetched
    here: a poll lists its options' ids in ``parts``), for the polls in ``options_for`` (default: all)."""
    texts: dict[int, str] = {}
    polls: dict[int, list[int]] = {}
    for hn_id, raw in items.items():
        text = raw.get("text")
        if isinstance(text, str) and text.strip():
            texts[hn_id] = text.replace("\x00", "\ufffd")
        parts = raw.get("parts")
        if raw.get("type") == "poll" and isinstance(parts, list) and (options_for is None or hn_id in options_for):
            polls[hn_id] = [p for p in parts if _int(p) is not None and p > 0][:POLL_OPTIONS_MAX]
    wanted = [p for parts in polls.values() for p in parts]
    options = _fetch_ids(wanted) if wanted else {}
    for hn_id, parts in polls.items():
        lines: list[str] = []
        for part in parts:
            option = options.get(part)
            if not isinstance(option, dict) or option.get("deleted") or option.get("dead"):
                continue
            if option.get("type") != "pollopt" or not isinstance(option.get("text"), str):
                continue
            votes = max(0, _int(option.get("score")) or 0)
            lines.append(f"<p>{len(lines) + 1}. {option['text']} ({votes} vote{'' if votes == 1 else 's'})")
        if lines:
            texts[hn_id] = (texts[hn_id] + "<p>" if hn_id in texts else "") + "Poll options:" + "".join(lines)
    return texts


def _upsert_batch(
    session: Session,
    batch: list[dict[str, Any]],
    texts: dict[int, str],
    now: datetime,
    report: IngestReport,
) -> None:
    for row in batch:
        has_url = row["url"] is not None
        has_text = row["hn_id"] in texts
        # A post with neither (a title-only Ask HN, a poll without text) has nothing to crawl; its
        # comment thread is its substance and is fetched below.
        row["crawl_status"] = "queued" if has_url else ("fetched" if has_text else "skipped")
        row["crawl_enqueued_at"] = now if has_url or has_text else None
    insert_rows = insert(Post).values(batch)
    stmt = insert_rows.on_conflict_do_update(
        index_elements=[Post.hn_id],
        set_={
            "score": insert_rows.excluded.score,
            "comment_count": insert_rows.excluded.comment_count,
        },
    ).returning(
        Post.id,
        Post.hn_id,
        Post.url,
        Post.comment_count,
        Post.comments_fetched_at,
        Post.crawl_status,
        text("(xmax = 0) AS inserted"),
    )
    result = session.execute(stmt).all()
    new_crawls: list[int] = []
    new_texts: list[tuple[int, int, str, bool]] = []  # post id, hn id, HTML, beside an article
    threads: list[int] = []
    for post_id, hn_id, url, comment_count, comments_fetched_at, crawl_status, inserted in result:
        if inserted:
            report.inserted += 1
            if url is not None:
                new_crawls.append(post_id)
            if hn_id in texts:
                new_texts.append((post_id, hn_id, texts[hn_id], url is not None))
        else:
            report.updated += 1
        title_only = url is None and hn_id not in texts and crawl_status == "skipped"
        if title_only and comment_count > 0 and comments_fetched_at is None:
            threads.append(post_id)
    report.crawl_enqueued.extend(new_crawls)
    # what each new post is about, once (hnpal.relevance), in a job of its own after the commit: the model's
    # CPU is not spent inside the upsert; a second fetch of the post does not redo it
    new_ids = [row[0] for row in result if row[-1]]
    if new_ids:
        id_of = {row[1]: row[0] for row in result if row[-1]}
        own = {str(id_of[h]): text_start(t) for h, t in texts.items() if h in id_of}
        jobs.enqueue(session, jobs.RELEVANCE_CLASSIFY, new_ids, own)
    for post_id, hn_id, html, beside_article in new_texts:
        _send_hn_text(session, post_id, hn_id, html, beside_article=beside_article)
        if not beside_article:
            report.text_posts.append(post_id)
    report.threads.extend(threads)
    for post_id in new_crawls:
        jobs.enqueue(session, jobs.CRAWL_POST, post_id)
    for post_id in threads:
        jobs.enqueue(session, jobs.INGEST_COMMENTS, post_id)


def _send_hn_text(session: Session, post_id: int, hn_id: int, html: str, *, beside_article: bool = False) -> None:
    """Ask HN / Show HN / job / poll text: no crawl, straight to the content writer. ``beside_article``:
    the post also has a URL, whose crawl stores the article; this text is kept as its ``hn_text``."""
    from hnpal.content.payload import encode_payload

    try:
        extraction = extract_hn_text(html)
    except ExtractionError:
        if not beside_article:
            session.execute(Post.__table__.update().where(Post.id == post_id).values(crawl_status="skipped"))
        return
    if beside_article:
        payload = encode_payload(hn_text=extraction.text, meta={"method": "hn_text"})
    else:
        payload = encode_payload(
            html=html,
            text=extraction.text,
            markdown=extraction.markdown,
            meta={"method": extraction.method, "final_url": None},
        )
    jobs.enqueue(session, jobs.CONTENT_STORE, post_id, payload)


def count_posts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Post)) or 0


def resend_texts(*, session: Session, hn_ids: list[int]) -> int:
    """Send the HN text of text posts to the content writer again (their first message was lost)."""
    if not hn_ids:
        return 0
    items = {i: raw for i, raw in _fetch_ids(hn_ids).items() if isinstance(raw, dict)}
    ids = dict(session.execute(select(Post.hn_id, Post.id).where(Post.hn_id.in_(hn_ids))).tuples().all())
    sent = 0
    for hn_id, html in hn_texts(items).items():
        if hn_id in ids:
            _send_hn_text(session, ids[hn_id], hn_id, html)
            sent += 1
    return sent


def fetch_comments(*, post_id: int, depth: int, limit: int) -> tuple[int, str] | None:
    """(hn_id, thread JSON) for a post, or None when the post or its story item is gone."""
    from hnpal.db.session import session_scope
    from hnpal.ingest.comments import fetch_thread, thread_document

    with session_scope() as session:
        row = session.execute(select(Post.hn_id, Post.comment_count).where(Post.id == post_id)).one_or_none()
    if row is None:
        return None

    with _client() as client:
        story = client.item(row.hn_id)
        if not isinstance(story, dict):
            return None
        comments = fetch_thread(client, story, depth=depth, limit=limit)
    descendants = story.get("descendants")
    if not isinstance(descendants, int) or isinstance(descendants, bool) or not 0 <= descendants <= INT_MAX:
        descendants = row.comment_count
    return row.hn_id, thread_document(row.hn_id, comments, descendants)


def send_comments(*, post_id: int, depth: int, limit: int) -> int | None:
    """Fetch a post's top comments and hand them to the content writer. Returns the post id, or None
    when the post or its story item is gone."""
    from hnpal.content.payload import encode_payload

    thread = fetch_comments(post_id=post_id, depth=depth, limit=limit)
    if thread is None:
        return None
    _hn_id, document = thread
    jobs.enqueue(None, jobs.CONTENT_STORE, post_id, encode_payload(comments=document, meta={"method": "comments"}))
    return post_id
