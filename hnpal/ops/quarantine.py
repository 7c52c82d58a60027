"""Work that failed for good, listed for an operator to retry or drop (``hnpal quarantine``).

========  =====================================  ===========================  ========================
kind      what                                   retry                        drop
========  =====================================  ===========================  ========================
update    a poison Telegram update               status back to ``received``  the row is deleted (the
          (``telegram_updates.status =           and ``hnpal.telegram.handle``  payload is user data)
          'quarantined'``)                       enqueued
crawl     a post whose crawl failed permanently  ``queued`` with no attempts   kept ``failed``; its
          or whose content could not be stored   counted, ``hnpal.crawl.post``  error says it was dropped
          (``posts.crawl_status = 'failed'``)    enqueued (a text post: back   and it leaves the list
                                                 to the content sweep)
digest    a digest that failed                   ``sending`` (posts reserved:  as for crawl
          (``digests.status = 'failed'``)        ``hnpal.digests.send``) or
                                                 ``pending`` (``.prepare``)
summary   a post whose summary failed            ``pending`` with no attempts  ``skipped``; its error
          ``MAX_ATTEMPTS`` (5) times (or once,   counted, ``hnpal.summaries.  says it was dropped
          when retrying cannot cure it): the     summarize`` enqueued
          sweep stopped asking the model
summary   a post summarized offline while the    no attempts counted, the     ``done``: it keeps the
          model refused the key, whose re-       re-summary enqueued          offline summary
          summary with the model failed
          ``MAX_ATTEMPTS`` times
          (``summary_status = 'offline'``)
========  =====================================  ===========================  ========================

A reference is ``KIND:ID`` (``update:812``, ``crawl:45`` and ``summary:45`` — post ids —, ``digest:9``); a
bare number means an update. Functions take a session and return the task to enqueue, which the caller
sends after the commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from hnpal.db.session import rowcount
from hnpal.deliveries.models import Delivery, Digest
from hnpal.errors import HNPalError
from hnpal.posts.models import MAX_SUMMARY_ATTEMPTS as SUMMARY_ATTEMPTS
from hnpal.posts.models import Post
from hnpal.telegram.models import TelegramUpdate

KINDS = ("update", "crawl", "digest", "summary")
DROPPED = "dropped by operator: "


class QuarantineError(HNPalError, ValueError):
    """A reference that is malformed, or names nothing that failed for good (the message says which)."""


@dataclass(frozen=True)
class Failed:
    kind: str
    id: int
    when: datetime | None
    error: str
    detail: str

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class Enqueue:
    task: str
    args: tuple


def parse_ref(ref: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:(update|crawl|digest|summary):)?(\d{1,19})", ref.strip())
    if match is None:
        raise QuarantineError(f"{ref!r} is not a reference: use KIND:ID with KIND one of {', '.join(KINDS)}")
    return match.group(1) or "update", int(match.group(2))


def _not_dropped(column: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
    return or_(column.is_(None), ~column.startswith(DROPPED))


def list_failed(*, session: Session, kind: str | None = None, limit: int = 100) -> list[Failed]:
    """What failed for good, newest first within each kind."""
    if kind is not None and kind not in KINDS:
        raise QuarantineError(f"unknown kind {kind!r}: choose from {', '.join(KINDS)}")
    out: list[Failed] = []
    if kind in (None, "update"):
        updates = session.execute(
            select(TelegramUpdate)
            .where(TelegramUpdate.status == "quarantined")
            .order_by(TelegramUpdate.received_at.desc())
            .limit(limit)
        ).scalars()
        out += [
            Failed(
                "update",
                r.update_id,
                r.received_at,
                r.error or "",
                f"chat {r.chat_id}, attempts {r.attempts}, expires {r.expires_at:%Y-%m-%d %H:%M}",
            )
            for r in updates
        ]
    if kind in (None, "crawl"):
        crawls = session.execute(
            select(Post)
            .where(Post.crawl_status == "failed", _not_dropped(Post.crawl_error))
            .order_by(Post.crawled_at.desc().nulls_last(), Post.id.desc())
            .limit(limit)
        ).scalars()
        out += [
            Failed(
                "crawl",
                p.id,
                p.crawled_at,
                p.crawl_error or "",
                f"HN {p.hn_id}, attempts {p.crawl_retry_count}, {p.url or '(no url)'}",
            )
            for p in crawls
        ]
    if kind in (None, "digest"):
        digests = session.execute(
            select(Digest)
            .where(Digest.status == "failed", _not_dropped(Digest.error))
            .order_by(Digest.created_at.desc())
            .limit(limit)
        ).scalars()
        out += [
            Failed("digest", d.id, d.created_at, d.error or "", f"user {d.user_id}, batch {d.batch_id}")
            for d in digests
        ]
    if kind in (None, "summary"):
        summaries = session.execute(
            select(Post)
            .where(Post.summary_status.in_(("failed", "offline")), Post.summary_attempts >= SUMMARY_ATTEMPTS)
            .order_by(Post.id.desc())
            .limit(limit)
        ).scalars()
        out += [
            Failed(
                "summary",
                p.id,
                p.fetched_at,
                p.summary_error or "",
                f"HN {p.hn_id}, attempts {p.summary_attempts}, "
                + ("offline summary kept, " if p.summary_status == "offline" else "")
                + p.title[:80],
            )  # fmt: skip
            for p in summaries
        ]
    return out


def retry(*, session: Session, ref: str) -> Enqueue:
    """Reset the row so the pipeline takes it again; returns the task to enqueue after the commit."""
    kind, ident = parse_ref(ref)
    if kind == "update":
        done = session.execute(
            update(TelegramUpdate)
            .where(TelegramUpdate.update_id == ident, TelegramUpdate.status == "quarantined")
            .values(status="received", attempts=0, error=None, expires_at=None)
        )
        _found(rowcount(done), kind, ident)
        return Enqueue("hnpal.telegram.handle", (ident,))
    if kind == "crawl":
        url = session.scalar(select(Post.url).where(Post.id == ident, Post.crawl_status == "failed"))
        if url is None and session.scalar(select(Post.id).where(Post.id == ident, Post.crawl_status == "failed")):
            # A text post whose HN text could not be stored: the content sweep fetches it again now.
            session.execute(
                update(Post)
                .where(Post.id == ident)
                .values(crawl_status="fetched", crawl_retry_count=0, crawl_error=None, crawl_enqueued_at=None)
            )
            return Enqueue("hnpal.crawl.sweep", ())
        done = session.execute(
            update(Post)
            .where(Post.id == ident, Post.crawl_status == "failed")
            .values(crawl_status="queued", crawl_retry_count=0, crawl_error=None, crawl_enqueued_at=func.now())
        )
        _found(rowcount(done), kind, ident)
        return Enqueue("hnpal.crawl.post", (ident,))
    if kind == "summary":
        done = session.execute(
            update(Post).where(Post.id == ident, Post.summary_status == "offline").values(summary_attempts=0)
        )
        if rowcount(done):  # made again with the model; the offline summary stays until then
            return Enqueue("hnpal.summaries.summarize", (ident, None, None, True))
        done = session.execute(
            update(Post)
            .where(Post.id == ident, Post.summary_status == "failed")
            .values(summary_status="pending", summary_attempts=0, summary_error=None)
        )
        _found(rowcount(done), kind, ident)
        return Enqueue("hnpal.summaries.summarize", (ident,))
    digest = session.get(Digest, ident, with_for_update=True)
    if digest is None or digest.status != "failed":
        _found(0, kind, ident)
    assert digest is not None
    reserved = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(and_(Delivery.user_id == digest.user_id, Delivery.batch_id == digest.batch_id))
    )
    digest.error, digest.attempts = None, 0
    if reserved:
        digest.status = "sending"
        return Enqueue("hnpal.digests.send", (ident,))
    digest.status = "pending"
    return Enqueue("hnpal.digests.prepare", ([ident],))


def drop(*, session: Session, ref: str) -> str:
    """Set the item aside for good; returns what was done, in words."""
    kind, ident = parse_ref(ref)
    if kind == "update":
        done = session.execute(
            delete(TelegramUpdate).where(TelegramUpdate.update_id == ident, TelegramUpdate.status == "quarantined")
        )
        _found(rowcount(done), kind, ident)
        return f"update {ident} deleted"
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
    if kind == "crawl":
        done = session.execute(
            update(Post)
            .where(Post.id == ident, Post.crawl_status == "failed", _not_dropped(Post.crawl_error))
            .values(crawl_error=DROPPED + now + func.coalesce(Post.crawl_error, ""))
        )
        _found(rowcount(done), kind, ident)
        return f"crawl of post {ident} stays failed and leaves the list"
    if kind == "summary":
        reason = DROPPED + now + func.coalesce(Post.summary_error, "")
        kept = session.execute(
            update(Post)
            .where(Post.id == ident, Post.summary_status == "offline")
            .values(summary_status="done", summary_error=reason)
        )
        if rowcount(kept):
            return f"post {ident} keeps its offline summary and leaves the list"
        done = session.execute(
            update(Post)
            .where(Post.id == ident, Post.summary_status == "failed")
            .values(summary_status="skipped", summary_error=reason)
        )
        _found(rowcount(done), kind, ident)
        return f"summary of post {ident} is skipped for good and leaves the list"
    done = session.execute(
        update(Digest)
        .where(Digest.id == ident, Digest.status == "failed", _not_dropped(Digest.error))
        .values(error=DROPPED + now + func.coalesce(Digest.error, ""))
    )
    _found(rowcount(done), kind, ident)
    return f"digest {ident} stays failed and leaves the list"


def _found(rowcount: int, kind: str, ident: int) -> None:
    if not rowcount:
        what = {"update": "quarantined update", "crawl": "post with a failed crawl", "digest": "failed digest",
                "summary": "post with a failed summary"}[kind]  # fmt: skip
        raise QuarantineError(f"no {what} with id {ident} (see `hnpal quarantine list`)")
