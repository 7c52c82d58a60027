"""Digests: schedule, select, reserve, send; and what users do with delivered posts.

The life of a digest:

1. ``create_due_digests`` (beat, every minute) inserts a ``digests`` row for every active user whose
   batch is due (UNIQUE user_id, batch_id: a batch is created once) and returns only the new ids.
2. ``prepare`` selects the posts of many digests in one statement and *reserves* them: one
   ``deliveries`` row per (user, post) with ``message_id`` NULL, written before anything is sent.
3. ``hnpal.deliveries.sender.send_digests`` (the ``hnpal.digests.send*`` tasks, ``telegram`` queue)
   sends what is reserved and not sent yet, storing each Telegram ``message_id`` as soon as Telegram
   answers. A crash between a send and that write can repeat the one message in flight, never the
   digest; a redelivered task resumes there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER, insert
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.deliveries.models import Delivery, Digest, Reaction
from hnpal.deliveries.schedule import batch_due_at, current_batch
from hnpal.deliveries.selection import reserve_posts
from hnpal.errors import NotYours
from hnpal.posts.models import Post
from hnpal.relevance.service import classify_posts, explain, map_interests
from hnpal.summaries.models import Summary
from hnpal.summaries.service import interest_variant
from hnpal.telegram import render
from hnpal.users.models import User
from hnpal.users.schemas import DigestPreferences

log = logging.getLogger(__name__)
SUMMARY_WAIT_ATTEMPTS = 6  # sender.send_digests waits this many rounds for missing summaries, then falls back


def preferences(raw: dict[str, Any] | None) -> DigestPreferences:
    """A user's preferences; a row that no longer validates falls back to defaults field by field."""
    try:
        return DigestPreferences.model_validate(raw or {})
    except ValidationError as exc:
        good = {k: v for k, v in (raw or {}).items() if k in DigestPreferences.model_fields}
        for error in exc.errors():
            if error.get("loc"):
                good.pop(str(error["loc"][0]), None)
        log.warning("digest preferences %r partly invalid (%s); defaults used for those fields", raw, exc)
        try:
            return DigestPreferences.model_validate(good)
        except ValidationError:
            return DigestPreferences()


# --- 1. schedule ------------------------------------------------------------------------------------


def create_due_digests(*, session: Session, now: datetime | None = None) -> list[int]:
    """Create the digest of every active user whose batch is due and has none yet; the new ids.

    A user's first scheduled digest is the first delivery time after they joined: a batch that fell
    due before the account existed is not sent (/digest gives one at once)."""
    now = now or datetime.now(UTC)
    due = []
    rows = session.execute(select(User.id, User.digest_preferences, User.created_at).where(User.status == "active"))
    for user_id, raw, created_at in rows:
        prefs = preferences(raw)
        batch = current_batch(prefs, now)
        if batch is None:
            continue
        due_at = batch_due_at(prefs, now)
        if due_at is not None and created_at is not None and due_at < created_at:
            continue
        due.append({"user_id": user_id, "batch_id": batch, "style": prefs.style})
    ids: list[int] = []
    for start in range(0, len(due), 5000):
        stmt = insert(Digest).values(due[start : start + 5000]).on_conflict_do_nothing().returning(Digest.id)
        ids.extend(session.scalars(stmt))
    return ids


def create_manual_digest(*, session: Session, user_id: int, now: datetime | None = None) -> int:
    """/digest: a digest right now, outside the schedule (its own batch id)."""
    now = now or datetime.now(UTC)
    style = preferences(session.scalar(select(User.digest_preferences).where(User.id == user_id))).style
    stmt = (
        insert(Digest)
        .values(user_id=user_id, batch_id=f"now-{now:%Y%m%dT%H%M%S.%f}", style=style, manual=True)
        .returning(Digest.id)
    )
    digest_id = session.scalar(stmt)
    assert digest_id is not None  # INSERT ... RETURNING returns the row
    return digest_id


# --- 2. select and reserve --------------------------------------------------------------------------


# Each digest by primary key. The status is compared as an expression that no index holds: while a batch's
# digests are new to the planner's statistics, "pending" looks rare, and it read every pending digest of the
# batch through the partial index of unfinished ones, once per digest of each chunk (hundreds of ms a chunk).
_PENDING = text(
    "SELECT g.id FROM unnest(:ids) r(id) CROSS JOIN LATERAL ("
    "SELECT id FROM digests WHERE id = r.id AND coalesce(status, '') = 'pending' OFFSET 0 FOR UPDATE SKIP LOCKED) g"
).bindparams(bindparam("ids", type_=ARRAY(INTEGER)))


def prepare(*, session: Session, digest_ids: list[int], settings: Settings | None = None) -> dict[int, int]:
    """Select and reserve the posts of pending digests (set-based). Returns digest id -> posts reserved.

    Digests already past ``pending`` are left alone (a re-run reserves nothing twice)."""
    settings = settings or get_settings()
    pending = list(session.scalars(_PENDING, {"ids": sorted(set(digest_ids))}))
    if not pending:
        return {}
    # what the posts are about and what the interests mean, where not known yet: once per post (posts of
    # the last week ingested before topics existed) and once per distinct interest phrase, never per user
    classify_posts(session=session, since=datetime.now(UTC) - timedelta(days=7), limit=5000)
    map_interests(session=session, digest_ids=pending)
    return reserve_posts(session=session, digest_ids=pending, lookback=timedelta(hours=settings.digest_lookback_hours))


# --- 3. render (sending is hnpal.deliveries.sender) ---------------------------------------------------


def digest_cards(
    *, session: Session, digest: Digest, user: User, style: str, default_style: str
) -> tuple[list[render.PostCard], list[int]]:
    """The digest's posts as cards, in order, with the user's summary style when it exists.

    Also returns the post ids whose summary in that style is missing (the default summary stands in)."""
    variant = interest_variant(user.interests) if style == "personalized" else ""
    styled = (
        select(Summary.text)
        .where(Summary.post_id == Post.id, Summary.style == style, Summary.variant == variant)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Delivery, Post, styled, _hn_says())
        .join(Post, Post.id == Delivery.post_id)
        .where(Delivery.user_id == digest.user_id, Delivery.batch_id == digest.batch_id)
        .order_by(Delivery.id)
    ).all()
    cards, missing = [], []
    for n, (delivery, post, styled_text, says) in enumerate(rows, start=1):
        if styled_text is None and style != default_style:
            missing.append(post.id)
        cards.append(make_card(delivery, post, styled_text, position=n, total=len(rows), hn_says=says))
    return cards, missing


def _hn_says(post_id: Any = None):
    """The post's comment summary (only lively threads have one), as a scalar subquery."""
    return (
        select(Summary.text)
        .where(Summary.post_id == (Post.id if post_id is None else post_id), Summary.style == "comments",
               Summary.variant == "")
        .scalar_subquery()
    )  # fmt: skip


def make_card(
    delivery: Any, post: Any, styled: str | None, *, position: int, total: int, hn_says: str | None = None
) -> render.PostCard:
    """A delivered post as the message shows it: ``styled`` is its summary in the user's style, when
    there is one (the default summary stands in). Takes ORM rows or result rows alike."""
    return render.PostCard(
        delivery_id=delivery.id,
        hn_id=post.hn_id,
        title=post.title,
        url=post.url,
        domain=post.domain,
        score=post.score,
        comments=post.comment_count,
        summary=styled or post.summary,
        position=position,
        total=total,
        reaction=delivery.reaction,
        saved=delivery.is_saved,
        why=explain(getattr(delivery, "reason", None)),
        hn_says=hn_says,
    )


def digest_heading(digest: Digest, count: int) -> str:
    when = "Your HN digest" if not digest.manual else "Your HN digest (on request)"
    label = digest.batch_id if not digest.manual else datetime.now(UTC).strftime("%Y-%m-%d")
    return f"{when} · {label} · {count} post{'s' if count != 1 else ''}"


def unfinished_digests(*, session: Session, older_than: timedelta, limit: int = 500) -> list[int]:
    """Digests a lost task left pending or half-sent (the sweep sends them on)."""
    cutoff = datetime.now(UTC) - older_than
    return list(
        session.scalars(
            select(Digest.id)
            .where(Digest.status.in_(("pending", "sending")), Digest.created_at < cutoff)
            .order_by(Digest.id)
            .limit(limit)
        )
    )


# --- what users do with delivered posts -------------------------------------------------------------


def own_delivery(*, session: Session, telegram_id: int, delivery_id: int) -> tuple[Delivery, User]:
    row = session.execute(
        select(Delivery, User).join(User, User.id == Delivery.user_id).where(Delivery.id == delivery_id)
    ).one_or_none()
    if row is None or row[1].telegram_id != telegram_id:
        raise NotYours(f"delivery {delivery_id} is not this user's")
    return row[0], row[1]


def react(*, session: Session, telegram_id: int, delivery_id: int, reaction: str) -> Delivery:
    """👍/👎: mutually exclusive; pressing the current one again clears it."""
    chosen: Reaction
    if reaction == "up":
        chosen = "up"
    elif reaction == "down":
        chosen = "down"
    else:
        raise ValueError(f"unknown reaction {reaction!r}")
    delivery, _ = own_delivery(session=session, telegram_id=telegram_id, delivery_id=delivery_id)
    if delivery.reaction == chosen:
        delivery.reaction, delivery.reacted_at = None, None
    else:
        delivery.reaction, delivery.reacted_at = chosen, datetime.now(UTC)
    delivery.is_read = True
    session.flush()
    return delivery


def toggle_save(*, session: Session, telegram_id: int, delivery_id: int) -> Delivery:
    delivery, _ = own_delivery(session=session, telegram_id=telegram_id, delivery_id=delivery_id)
    delivery.is_saved = not delivery.is_saved
    delivery.saved_at = datetime.now(UTC) if delivery.is_saved else None
    session.flush()
    return delivery


def card_for(*, session: Session, delivery: Delivery, position: int = 1, total: int = 1) -> render.PostCard:
    post = session.get(Post, delivery.post_id)
    assert post is not None
    user = session.get(User, delivery.user_id)
    assert user is not None
    prefs = preferences(user.digest_preferences)
    variant = interest_variant(user.interests) if prefs.summary_style == "personalized" else ""
    text = session.scalar(
        select(Summary.text).where(
            Summary.post_id == post.id, Summary.style == prefs.summary_style, Summary.variant == variant
        )
    )
    says = session.scalar(select(_hn_says(post.id)))
    return make_card(delivery, post, text, position=position, total=total, hn_says=says)


def saved_page(
    *, session: Session, user_id: int, page: int, per_page: int = 5
) -> tuple[list[tuple[Delivery, Post]], int]:
    """Bookmarks, newest first: one page and the total count."""
    total = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.user_id == user_id, Delivery.is_saved)
    )
    rows = session.execute(
        select(Delivery, Post)
        .join(Post, Post.id == Delivery.post_id)
        .where(Delivery.user_id == user_id, Delivery.is_saved)
        .order_by(Delivery.saved_at.desc(), Delivery.id.desc())
        .offset(page * per_page)
        .limit(per_page)
    ).all()
    return [(d, p) for d, p in rows], int(total or 0)
