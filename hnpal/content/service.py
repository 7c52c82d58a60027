"""The writer side: store a payload in RocksDB (one batch), then record it in PostgreSQL.

Runs only in the content queue's single worker. Idempotent: storing the same payload twice writes the
same bytes and the same flags, so a redelivered task (after a kill) simply rewrites its content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hnpal import jobs
from hnpal.content.payload import decode_payload
from hnpal.content.store import ContentStore
from hnpal.db.retry import DB_TRANSIENT
from hnpal.db.session import session_scope
from hnpal.errors import Retry, WorkFailed
from hnpal.posts.models import Post
from hnpal.summaries.models import THREAD_BASES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    post_id: int
    hn_id: int | None
    kinds: tuple[str, ...]
    status: str  # stored | missing_post


def store_payload(*, session: Session, store: ContentStore, post_id: int, payload: str) -> StoreResult:
    doc = decode_payload(payload)
    post = session.get(Post, post_id, with_for_update=True)
    if post is None:
        log.warning("content for post %s dropped: the post no longer exists", post_id)
        return StoreResult(post_id, None, (), "missing_post")
    kinds = store.put(
        post.hn_id,
        html=doc.get("html"),
        text=doc.get("text"),
        markdown=doc.get("markdown"),
        comments=doc.get("comments"),
        hn_text=doc.get("hn_text"),
    )
    meta = doc.get("meta") or {}
    if "hn_text" in kinds:
        post.has_hn_text = True  # the submitter's words beside the article: no crawl state changes
    now = datetime.now(UTC)
    summarize_styles: list[str] = []
    if "comments" in kinds:
        post.comments_fetched_at = now
        from config.settings import get_settings

        settings = get_settings()
        if post.comment_count >= settings.comments_summary_min:
            summarize_styles.append("comments")
        if post.url is None and post.summary_status != "done":
            # Ask/Show HN: summarized from the post text and the discussion, once the thread is here.
            summarize_styles.append(settings.summary_default_style)
        elif post.summary_status == "done" and post.summary_basis in THREAD_BASES:
            # its summary read the thread: made again once the thread has grown by half (the task decides)
            summarize_styles.append(settings.summary_default_style)
    if {"html", "text", "markdown"} & set(kinds):
        post.has_html = post.has_html or "html" in kinds
        post.has_text = post.has_text or "text" in kinds
        post.has_markdown = post.has_markdown or "markdown" in kinds
        post.is_crawl_success = True
        post.crawl_status = "reused" if meta.get("method") == "reused" else "success"
        post.crawled_at = now
        post.crawl_error = None
        post.extraction_method = meta.get("method")
        if meta.get("repost_of_post_id"):
            post.repost_of_post_id = meta["repost_of_post_id"]
        if post.comment_count > 0 and post.comments_fetched_at is None:
            jobs.enqueue(session, jobs.INGEST_COMMENTS, post.id)
            if post.url is not None:
                summarize_styles.append("")  # the default style, from the article
        else:
            summarize_styles.append("")
    for style in dict.fromkeys(summarize_styles):
        jobs.enqueue(session, jobs.SUMMARIES_SUMMARIZE, post.id, style or None)
    return StoreResult(post.id, post.hn_id, tuple(kinds), "stored")


# A payload that cannot be decoded or written is tried this many more times (a write may fail for a
# moment), then quarantined: its post is marked failed and listed by `hnpal quarantine`.
STORE_RETRIES = 3


def store_or_quarantine(*, store: ContentStore, post_id: int, payload: str, retries: int) -> int | None:
    """Store a payload (its own transaction). ``retries``: how many times this payload failed before.
    Returns the post id once stored (None: nothing to store for it).

    Raises the database's transient errors as they are (the task retries them with backoff), :class:`Retry`
    while a failing payload has retries left, and :class:`WorkFailed` once it is quarantined."""
    try:
        with session_scope() as session:
            result = store_payload(session=session, store=store, post_id=post_id, payload=payload)
    except DB_TRANSIENT:
        raise
    except Exception as exc:  # any failure of this payload: retried, then quarantined
        error = f"{type(exc).__name__}: {exc}"
        if retries < STORE_RETRIES:
            raise Retry(2**retries, error) from exc
        with session_scope() as session:
            quarantine_payload(session=session, post_id=post_id, error=error)
        raise WorkFailed(f"content of post {post_id} not stored, quarantined: {error}") from None
    return result.post_id if result.status == "stored" else None


def copy_stored(*, store: ContentStore, post_id: int, source_post_id: int) -> int | None:
    """:func:`copy_content` in its own transaction. Returns the post id once stored."""
    with session_scope() as session:
        result = copy_content(session=session, store=store, post_id=post_id, source_post_id=source_post_id)
    return result.post_id if result.status == "stored" else None


def quarantine_payload(*, session: Session, post_id: int, error: str) -> bool:
    """A payload that could not be stored after its retries: the post's crawl is marked failed with the
    reason, so it is listed by `hnpal quarantine` (whose retry produces the content again) instead of
    staying ``fetched`` for ever. Only a post waiting for the writer (``fetched``) is marked; otherwise
    the failure is logged."""
    post = session.get(Post, post_id, with_for_update=True)
    if post is None:
        return False
    if post.is_crawl_success or post.crawl_status != "fetched":
        # Its article is stored, or not handed to the writer yet (this was its own text or its thread,
        # fetched again later): the crawl's state stays as it is.
        log.error("content for post %s could not be stored (crawl %s): %s", post_id, post.crawl_status, error)
        return False
    log.error("content for post %s could not be stored; quarantined: %s", post_id, error)
    post.crawl_status = "failed"
    post.crawl_error = f"content could not be stored: {error}"[:2000]
    post.crawled_at = datetime.now(UTC)
    return True


def copy_content(*, session: Session, store: ContentStore, post_id: int, source_post_id: int) -> StoreResult:
    """A repost: copy the earlier post's stored article to this post's key, and link the two."""
    from hnpal.content.payload import encode_payload

    source_hn_id = session.scalar(select(Post.hn_id).where(Post.id == source_post_id))
    if source_hn_id is None:
        return StoreResult(post_id, None, (), "missing_post")
    docs = {kind: store.get_text(source_hn_id, kind) for kind in ("html", "text", "markdown")}
    if not any(docs.values()):
        # The earlier content is gone: crawl this post for itself.
        post = session.get(Post, post_id, with_for_update=True)
        if post is not None and not post.is_crawl_success:
            post.crawl_status = "pending"
            post.crawl_enqueued_at = None
        return StoreResult(post_id, None, (), "missing_post")
    payload = encode_payload(**docs, meta={"method": "reused", "repost_of_post_id": source_post_id})
    return store_payload(session=session, store=store, post_id=post_id, payload=payload)
