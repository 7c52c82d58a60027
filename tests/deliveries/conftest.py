"""Factories for the digest tests: users, posts, digests and deliveries written with the real models.

Rows are written through the session a test passes (``db_session``, rolled back, or a committing one).
Posts are summarized at instants around ``EPOCH`` (in the year 2100) and digests are created there, so a
digest's window never holds posts that other tests committed at the real time.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from hnpal.deliveries.models import Delivery, Digest
from hnpal.posts.models import Post
from hnpal.summaries.models import Summary
from hnpal.users.models import User

EPOCH = datetime(2100, 1, 1, 12, 0)  # naive UTC, like the timestamp columns
_ids = itertools.count(uuid.uuid4().int % 10**6 * 1000)


def unique_id() -> int:
    """An id no other test uses (telegram ids, hn ids): unique within the run and across runs."""
    return 1_000_000_000 + next(_ids)


class Factory:
    epoch = EPOCH

    def __init__(self, session: Session) -> None:
        self.session = session
        self.user_ids: list[int] = []
        self.post_ids: list[int] = []

    unique_id = staticmethod(unique_id)

    def user(self, *, prefs: dict[str, Any] | None = None, interests: list[str] | None = None, **kw: Any) -> User:
        user = User(
            telegram_id=unique_id(),
            first_name="Ada",
            digest_preferences=prefs if prefs is not None else {},
            interests=interests or [],
            **kw,
        )
        self.session.add(user)
        self.session.flush()
        self.user_ids.append(user.id)
        return user

    def post(
        self,
        title: str,
        *,
        score: int = 100,
        domain: str | None = "example.com",
        summarized_at: datetime | None = None,
        summary: str | None = None,
        url: str | None = None,
        repost_of: Post | None = None,
        comments: int = 5,
    ) -> Post:
        hn_id = unique_id()
        post = Post(
            hn_id=hn_id,
            type="story",
            title=title,
            url=url if url is not None else (f"https://{domain}/{hn_id}" if domain else None),
            domain=domain,
            score=score,
            comment_count=comments,
            summarized_at=summarized_at if summarized_at is not None else EPOCH - timedelta(hours=1),
            summary=summary if summary is not None else f"Summary of {title}.",
            summary_status="done",
            repost_of_post_id=repost_of.id if repost_of is not None else None,
        )
        self.session.add(post)
        self.session.flush()
        self.post_ids.append(post.id)
        return post

    def digest(
        self,
        user: User,
        *,
        created_at: datetime = EPOCH,
        status: str = "pending",
        batch_id: str | None = None,
        style: str | None = None,
    ) -> Digest:
        digest = Digest(
            user_id=user.id,
            batch_id=batch_id or f"test-{uuid.uuid4().hex[:12]}",
            status=status,
            style=style,
            created_at=created_at,
        )
        self.session.add(digest)
        self.session.flush()
        return digest

    def delivery(
        self,
        user: User,
        post: Post,
        *,
        batch_id: str = "earlier",
        reaction: str | None = None,
        message_id: int | None = 1,
    ) -> Delivery:
        delivery = Delivery(
            user_id=user.id,
            post_id=post.id,
            batch_id=batch_id,
            message_id=message_id,
            reaction=reaction,
            reacted_at=EPOCH - timedelta(days=20) if reaction else None,
        )
        self.session.add(delivery)
        self.session.flush()
        return delivery

    def summary(self, post: Post, style: str, text: str, variant: str = "") -> Summary:
        row = Summary(post_id=post.id, style=style, variant=variant, text=text, model="test-model")
        self.session.add(row)
        self.session.flush()
        return row


@pytest.fixture
def make(db_session: Session) -> Factory:
    """Rows in the test's rolled-back transaction."""
    return Factory(db_session)


@pytest.fixture
def committed() -> Iterator[Callable[[], AbstractContextManager[Factory]]]:
    """``with committed() as make:`` writes committed rows (for workers and tasks with sessions of their
    own); every user (with their digests and deliveries) and post made this way is deleted afterwards."""
    from sqlalchemy import delete

    from hnpal.db.session import session_scope

    made: list[Factory] = []

    @contextmanager
    def factory() -> Iterator[Factory]:
        with session_scope() as session:
            make = Factory(session)
            made.append(make)
            yield make

    yield factory
    with session_scope() as session:
        for make in made:
            if make.user_ids:
                session.execute(delete(User).where(User.id.in_(make.user_ids)))
            if make.post_ids:
                session.execute(delete(Post).where(Post.id.in_(make.post_ids)))
