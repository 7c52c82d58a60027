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

from hnpal.content.payload import decode_payload
from hnpal.content.store import ContentStore
from hnpal.db.hooks import after_commit
from hnpal.posts.models import Post

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
            from tasks.ingest import fetch_comments

            after_commit(session, lambda pid=post.id: fetch_comments.delay(pid))
            if post.url is not None:
                summarize_styles.append("")  # the default style, from the article
        else:
            summarize_styles.append("")
    if summarize_styles:
        from tasks.summaries import summarize

        def send(pid: int = post.id, styles: tuple[str, ...] = tuple(dict.fromkeys(summarize_styles))) -> None:
            for style in styles:
                summarize.delay(pid, style or None)

        after_commit(session, send)
    return StoreResult(post.id, post.hn_id, tuple(kinds), "stored")


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
