"""``hnpal quarantine list|retry|drop`` through the command line, against the real database and Redis.

Each test commits its own rows (the command runs in its own transactions) and removes them at the end.
A retry must reset the row and put the task on its queue: the broker's list under the run's key prefix is
read back to see the message.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hnpal.cli.main import app
from hnpal.deliveries.models import Delivery, Digest
from hnpal.ops.quarantine import DROPPED
from hnpal.posts.models import Post
from hnpal.telegram.models import TelegramUpdate
from hnpal.users.models import User
from tests.conftest import REDIS_PREFIX

_ids = itertools.count(int(uuid.uuid4().int % 10_000_000) * 100 + 800_000_000)


def hnpal(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["quarantine", *args])


def queued(redis_client, queue: str, task: str) -> list[list]:  # type: ignore[no-untyped-def]
    """Arguments of the messages for ``task`` waiting in ``queue`` (the run's key prefix), at every
    priority level (kombu keeps each in a list "<queue>\x06\x16<level>"; bulk tasks go at 6)."""
    found = []
    levels = ("", "\x06\x163", "\x06\x166", "\x06\x169")
    raws = [raw for level in levels for raw in redis_client.lrange(f"{REDIS_PREFIX}{queue}{level}", 0, -1)]
    for raw in raws:
        message = json.loads(raw)
        if message["headers"]["task"] == task:
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append(args)
    return found


@pytest.fixture
def rows(engine) -> Iterator[dict]:
    """A quarantined update, a post whose crawl failed, a failed digest (with a user), all committed."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        update = TelegramUpdate(
            update_id=next(_ids),
            payload={"update_id": 1, "message": {"text": "poison \u202e"}},
            status="quarantined",
            chat_id=4242,
            attempts=4,
            error="ValueError: cannot parse the poison",
            expires_at=text("now() + interval '7 days'"),
        )
        post = Post(
            hn_id=next(_ids), type="story", title="gone", url="https://example.com/404", crawl_status="failed",
            crawl_retry_count=1, crawl_error="http 404", crawled_at=text("now()"),
        )  # fmt: skip
        user = User(telegram_id=next(_ids))
        session.add_all([update, post, user])
        session.flush()
        digest = Digest(user_id=user.id, batch_id="2026-02-01-morning", status="failed", error="refused: too long")
        session.add(digest)
    made = {"update": update, "post": post, "user": user, "digest": digest}
    yield made
    with Session(engine) as session, session.begin():
        session.execute(delete(TelegramUpdate).where(TelegramUpdate.update_id == update.update_id))
        session.execute(delete(Delivery).where(Delivery.user_id == user.id))
        session.execute(delete(Digest).where(Digest.user_id == user.id))
        session.execute(delete(User).where(User.id == user.id))
        session.execute(delete(Post).where(Post.id == post.id))


def test_list_shows_each_kind_with_its_error(rows: dict) -> None:
    result = hnpal("list")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"update:{rows['update'].update_id}" in out and "cannot parse the poison" in out
    assert f"crawl:{rows['post'].id}" in out and "http 404" in out
    assert f"digest:{rows['digest'].id}" in out and "refused: too long" in out
    only = hnpal("list", "--kind", "crawl").stdout
    assert f"crawl:{rows['post'].id}" in only and "update:" not in only
    bad = hnpal("list", "--kind", "nonsense")
    assert bad.exit_code == 2 and "unknown kind" in bad.output


def test_retry_an_update_resets_it_and_enqueues_its_task(rows: dict, engine, redis_client) -> None:
    update_id = rows["update"].update_id
    result = hnpal("retry", f"update:{update_id}")
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        row = session.get(TelegramUpdate, update_id)
        assert (row.status, row.attempts, row.error, row.expires_at) == ("received", 0, None, None)
    assert [update_id] in queued(redis_client, "telegram", "hnpal.telegram.handle")
    again = hnpal("retry", str(update_id))  # a bare id is an update; it is no longer quarantined
    assert again.exit_code == 2 and "no quarantined update" in again.output


def test_drop_an_update_deletes_it(rows: dict, engine) -> None:
    update_id = rows["update"].update_id
    result = hnpal("drop", f"update:{update_id}")
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        assert session.get(TelegramUpdate, update_id) is None
    assert f"update:{update_id}" not in hnpal("list").stdout


def test_retry_and_drop_a_failed_crawl(rows: dict, engine, redis_client) -> None:
    post_id = rows["post"].id
    assert hnpal("drop", f"crawl:{post_id}").exit_code == 0
    with Session(engine) as session:
        post = session.get(Post, post_id)
        assert post.crawl_status == "failed" and post.crawl_error.startswith(DROPPED) and "http 404" in post.crawl_error
    assert f"crawl:{post_id}" not in hnpal("list").stdout
    assert hnpal("drop", f"crawl:{post_id}").exit_code == 2  # dropped once only
    result = hnpal("retry", f"crawl:{post_id}")  # a dropped crawl can still be retried
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        post = session.get(Post, post_id)
        assert (post.crawl_status, post.crawl_retry_count, post.crawl_error) == ("queued", 0, None)
    assert [post_id] in queued(redis_client, "crawl", "hnpal.crawl.post")


def test_retry_a_failed_digest(rows: dict, engine, redis_client) -> None:
    digest_id = rows["digest"].id
    result = hnpal("retry", f"digest:{digest_id}")  # nothing reserved: selection again
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        assert session.scalar(select(Digest.status).where(Digest.id == digest_id)) == "pending"
    assert [[digest_id]] in queued(redis_client, "default", "hnpal.digests.prepare")

    with Session(engine) as session, session.begin():  # failed again, with a post reserved: resume sending
        session.execute(text("UPDATE digests SET status = 'failed', error = 'x' WHERE id = :id"), {"id": digest_id})
        session.add(Delivery(user_id=rows["user"].id, post_id=rows["post"].id, batch_id=rows["digest"].batch_id))
    assert hnpal("retry", f"digest:{digest_id}").exit_code == 0
    with Session(engine) as session:
        assert session.scalar(select(Digest.status).where(Digest.id == digest_id)) == "sending"
    assert [digest_id] in queued(redis_client, "telegram", "hnpal.digests.send")


@pytest.mark.parametrize("ref", ["nonsense", "update:", "post:3", "crawl:-1", "digest:abc"])
def test_bad_references_get_a_clear_message(ref: str) -> None:
    result = hnpal("retry", ref)
    assert result.exit_code == 2
    assert "is not a reference" in result.output


def test_unknown_ids_are_refused() -> None:
    for ref in ("update:1", "crawl:2147483000", "digest:2147483000"):
        result = hnpal("drop", ref)
        assert result.exit_code == 2 and "see `hnpal quarantine list`" in result.output, result.output
