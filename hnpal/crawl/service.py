"""Crawl one post: plan (PostgreSQL), fetch and extract (no transaction open), record the outcome.

Outcome bookkeeping follows the data model: success is recorded by the content writer once the content
is stored (``is_crawl_success``, ``crawled_at``); a failure increments ``crawl_retry_count`` and records
``crawl_error``. A transient failure is retried with backoff until the third failed attempt, after
which it is permanent; a permanent failure (404, refused address, not HTML...) stops at once. A worker
killed mid-crawl records nothing, so its redelivered task does not count as a failed attempt.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal import jobs
from hnpal.content.payload import encode_payload
from hnpal.crawl.extract import Extraction, ExtractionError, extract_html, extract_pdf
from hnpal.crawl.fetch import FetchedPage, Fetcher, FetchError
from hnpal.db.session import session_scope
from hnpal.posts.models import MAX_CRAWL_ATTEMPTS, Post

log = logging.getLogger(__name__)

# Stale means older than any retry countdown could make it: past the visibility timeout, after which
# the broker itself would have redelivered a message that still existed (a Redis restart loses them).
STALE_IN_FLIGHT = timedelta(seconds=get_settings().broker_visibility_timeout)
STALE_HANDOFF = min(timedelta(minutes=15), STALE_IN_FLIGHT)
_fetcher: Fetcher | None = None


def fetcher() -> Fetcher:
    """This process's fetcher (its HTTP connection pools and DNS guard are shared by its crawls)."""
    global _fetcher
    if _fetcher is None:
        _fetcher = Fetcher()
    return _fetcher


@dataclass(frozen=True)
class CrawlResult:
    post_id: int
    outcome: str  # fetched | reused | retry | failed | skipped | missing
    detail: str = ""
    retry_in: float | None = None


def backoff_seconds(failures: int, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base, 2×base, 4×base... (±25%), never above ``cap``."""
    delay = base * (2 ** max(0, failures - 1))
    return min(cap, delay * random.uniform(0.75, 1.25))


def extract_page(page: FetchedPage) -> Extraction:
    if page.content_type == "pdf":
        return extract_pdf(page.body)
    return extract_html(page.text(), page.final_url)


def crawl(*, post_id: int, fetcher: Fetcher, settings: Settings | None = None) -> CrawlResult:
    """Crawl one post by id. Short transactions only: none is open while the page downloads."""
    settings = settings or get_settings()
    with session_scope() as session:
        plan = _plan(session, post_id, settings)
    if isinstance(plan, CrawlResult):
        return plan
    url, hn_id = plan
    try:
        page = fetcher.fetch(url)
        extraction = extract_page(page)
    except FetchError as exc:
        return _record_failure(
            post_id, str(exc), transient=exc.transient, retry_after=exc.retry_after, settings=settings
        )
    except ExtractionError as exc:
        return _record_failure(post_id, f"extraction: {exc}", transient=False, retry_after=None, settings=settings)
    meta = {
        "method": extraction.method,
        "final_url": page.final_url,
        "truncated": page.truncated,
        "encoding": page.encoding,
    }
    payload = encode_payload(
        html=page.text() if page.content_type == "html" else None,
        text=extraction.text,
        markdown=extraction.markdown,
        meta=meta,
    )
    with session_scope() as session:
        post = session.get(Post, post_id, with_for_update=True)
        if post is None or post.is_crawl_success:
            return CrawlResult(post_id, "skipped", "already stored")
        post.crawl_status = "fetched"
        post.crawl_enqueued_at = datetime.now(UTC)
        jobs.enqueue(session, jobs.CONTENT_STORE, post_id, payload)
    log.info("crawled post %s (hn %s) via %s: %d chars", post_id, hn_id, extraction.method, len(extraction.text))
    return CrawlResult(post_id, "fetched", extraction.method)


def _plan(session: Session, post_id: int, settings: Settings) -> tuple[str, int] | CrawlResult:
    post = session.get(Post, post_id, with_for_update=True)
    if post is None:
        return CrawlResult(post_id, "missing", "no such post")
    if post.is_crawl_success or post.crawl_status in ("failed", "skipped"):
        return CrawlResult(post_id, "skipped", post.crawl_status)
    if post.crawl_retry_count >= MAX_CRAWL_ATTEMPTS:
        post.crawl_status = "failed"
        return CrawlResult(post_id, "failed", "no attempts left")
    if not post.url:
        post.crawl_status = "skipped"
        return CrawlResult(post_id, "skipped", "no URL")
    earlier = _earlier_crawl(session, post, settings)
    if earlier is not None:
        post.crawl_status = "fetched"
        post.crawl_enqueued_at = datetime.now(UTC)
        jobs.enqueue(session, jobs.CONTENT_COPY, post.id, earlier)
        return CrawlResult(post_id, "reused", f"content of post {earlier}")
    return post.url, post.hn_id


def _earlier_crawl(session: Session, post: Post, settings: Settings) -> int | None:
    if not post.canonical_url or settings.repost_window_days <= 0:
        return None
    since = datetime.now(UTC) - timedelta(days=settings.repost_window_days)
    return session.scalar(
        select(Post.id)
        .where(
            Post.canonical_url == post.canonical_url,
            Post.is_crawl_success,
            Post.crawled_at >= since,
            Post.id != post.id,
            Post.repost_of_post_id.is_(None),
        )
        .order_by(Post.crawled_at.desc())
        .limit(1)
    )


def _record_failure(
    post_id: int, error: str, *, transient: bool, retry_after: float | None, settings: Settings
) -> CrawlResult:
    import celeryconfig

    with session_scope() as session:
        post = session.get(Post, post_id, with_for_update=True)
        if post is None:
            return CrawlResult(post_id, "missing", "no such post")
        if post.is_crawl_success:
            return CrawlResult(post_id, "skipped", "already stored")
        post.crawl_retry_count += 1
        post.crawl_error = error[:2000]
        if transient and post.crawl_retry_count < MAX_CRAWL_ATTEMPTS:
            post.crawl_status = "retrying"
            post.crawl_enqueued_at = datetime.now(UTC)
            delay = backoff_seconds(
                post.crawl_retry_count, base=settings.crawl_retry_backoff, cap=celeryconfig.MAX_COUNTDOWN
            )
            if retry_after is not None:
                delay = min(max(delay, retry_after), celeryconfig.MAX_COUNTDOWN)
            log.info(
                "crawl of post %s failed (attempt %d), retry in %.0fs: %s",
                post_id,
                post.crawl_retry_count,
                delay,
                error,
            )
            return CrawlResult(post_id, "retry", error, retry_in=delay)
        post.crawl_status = "failed"
        log.info("crawl of post %s failed for good after %d attempt(s): %s", post_id, post.crawl_retry_count, error)
        return CrawlResult(post_id, "failed", error)


def dispatch(
    *,
    session: Session,
    limit: int,
    stale_after: timedelta,
    stale_statuses: tuple[str, ...] = ("queued", "retrying", "fetched"),
    include_pending: bool = True,
) -> list[int]:
    """Posts to (re)enqueue: pending ones, and in-flight ones whose message was lost.

    Posts in ``stale_statuses`` untouched for longer than ``stale_after`` had their message lost (a Redis
    restart, a purge): they are crawled again. Marks them queued; the caller enqueues them after the
    commit (:func:`dispatch_pending`, :func:`sweep_handoffs`).
    """
    cutoff = datetime.now(UTC) - stale_after
    pending = Post.crawl_status == "pending" if include_pending else Post.id.is_(None)
    ids = list(
        session.scalars(
            select(Post.id)
            .where(
                Post.url.is_not(None),
                or_(
                    pending,
                    and_(
                        Post.crawl_status.in_(stale_statuses),
                        or_(Post.crawl_enqueued_at.is_(None), Post.crawl_enqueued_at < cutoff),
                    ),
                ),
            )
            .order_by(Post.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(Post).where(Post.id.in_(ids)).values(crawl_status="queued", crawl_enqueued_at=datetime.now(UTC))
        )
    return ids


def dispatch_pending() -> int:
    """Enqueue crawls (after the commit) for pending posts and in-flight posts whose message was lost."""
    settings = get_settings()
    with session_scope() as session:
        ids = dispatch(session=session, limit=settings.crawl_dispatch_batch, stale_after=STALE_IN_FLIGHT)
        for post_id in ids:
            jobs.enqueue(session, jobs.CRAWL_POST, post_id)
    return len(ids)


def sweep_handoffs() -> dict[str, int]:
    """Content handed to the writer but never stored (its message was lost) is produced again: fetched
    pages are crawled again, text posts' HN texts are fetched and sent again."""
    from hnpal.ingest.service import resend_texts

    settings = get_settings()
    with session_scope() as session:
        ids = dispatch(
            session=session,
            limit=settings.crawl_dispatch_batch,
            stale_after=STALE_HANDOFF,
            stale_statuses=("fetched",),
            include_pending=False,
        )
        for post_id in ids:
            jobs.enqueue(session, jobs.CRAWL_POST, post_id)
    with session_scope() as session:
        hn_ids = stale_text_posts(session=session, stale_after=STALE_HANDOFF, limit=settings.crawl_dispatch_batch)
        resent = resend_texts(session=session, hn_ids=hn_ids)
    return {"recrawled": len(ids), "texts_resent": resent}


def stale_text_posts(*, session: Session, stale_after: timedelta, limit: int) -> list[int]:
    """Text posts (no URL) whose HN text never reached the store: their hn ids, to fetch again."""
    cutoff = datetime.now(UTC) - stale_after
    rows = session.execute(
        select(Post.id, Post.hn_id)
        .where(
            Post.url.is_(None),
            Post.crawl_status == "fetched",
            or_(Post.crawl_enqueued_at.is_(None), Post.crawl_enqueued_at < cutoff),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        session.execute(
            update(Post).where(Post.id.in_([r.id for r in rows])).values(crawl_enqueued_at=datetime.now(UTC))
        )
    return [r.hn_id for r in rows]
