"""Sending digests to the sandbox Telegram server through the real outbox (Bot API client + shared rate
limiter) with ``sender.send_digests``, the path the send tasks use: reservation first, one message per post
or one brief, exactly once, resuming after a crash, blocked users, 429s, summary styles, manual and empty
digests; and a real worker killed mid-digest.

``send_digests`` works on connections of its own (committed data only), so these tests write their rows
with ``committed()`` and read the results back in fresh sessions."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import psutil
import pytest
from sqlalchemy import select, update

from hnpal.db.session import session_scope
from hnpal.deliveries.models import Delivery, Digest
from hnpal.deliveries.sender import EMPTY_NOTE, Outcome, send_digests
from hnpal.deliveries.service import SUMMARY_WAIT_ATTEMPTS, create_manual_digest, prepare
from hnpal.posts.models import Post
from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.summaries.service import interest_variant
from hnpal.telegram.client import close_clients
from hnpal.telegram.outbox import TelegramOutbox
from hnpal.telegram.render import MAX_MESSAGE, utf16_len
from hnpal.users.models import User

HOSTILE_TITLE = 'Tags <b>bold</b> & <i>"quotes"</i> <script>alert("x")</script> & a < b > c && "&amp;" \'single\''


@pytest.fixture
def tg() -> Iterator[TelegramServer]:
    with TelegramServer(enforce_limits=False) as server:
        yield server
    close_clients()


@pytest.fixture
def outbox(tg: TelegramServer, settings_env, key_prefix: str) -> TelegramOutbox:
    """The outbox a send task builds from its settings, pointed at the sandbox, with a limiter of its own."""
    from hnpal.telegram.ratelimit import clear_cache

    settings_env(
        telegram_token=tg.token,
        telegram_base_url=tg.base_url,
        redis_key_prefix=key_prefix,
        telegram_chat_rate="30",  # the sandbox does not enforce limits here: keep the tests quick
        telegram_global_rate="1000",
    )
    clear_cache()
    yield TelegramOutbox()
    clear_cache()


@pytest.fixture
def send(outbox: TelegramOutbox) -> Callable[..., dict]:
    """What the send tasks pass to ``send_digests``: one call per message, limits and errors its business."""
    return outbox.send


def send_now(digest_id: int, send: Callable[..., dict]) -> Outcome:
    """What ``hnpal.digests.send`` does for one digest."""
    return send_digests(digest_ids=[digest_id], send=send, threads=1)


def only_sent(outcome: Outcome, digest_id: int, count: int) -> bool:
    """The digest went out now (``count`` messages), with nothing left to wait for or retry."""
    clean = not (outcome.blocked or outcome.waiting or outcome.retry or outcome.busy or outcome.done)
    return clean and outcome.sent == {digest_id: count}


def sends(tg: TelegramServer) -> int:
    return sum(1 for method, _status in tg.request_log if method == "sendMessage")


def setup_digest(make, tg: TelegramServer, *, count: int = 6, prefs: dict | None = None, **user_kw):
    user = make.user(prefs={"max_posts": 30, **(prefs or {})}, **user_kw)
    tg.add_user(user.telegram_id, "Ada")
    posts = [make.post(f"Story number {n}", score=1000 - n) for n in range(count)]
    digest = make.digest(user, style=(prefs or {}).get("style"))
    return user, posts, digest


def deliveries(session, digest: Digest) -> list[Delivery]:
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.user_id == digest.user_id, Delivery.batch_id == digest.batch_id)
            .order_by(Delivery.id)
        )
    )


def committed_deliveries(digest: Digest) -> list[Delivery]:
    with session_scope() as session:
        return deliveries(session, digest)


def reload(row):  # type: ignore[no-untyped-def]
    """The row as committed now (a fresh session; attributes stay loaded after it closes)."""
    with session_scope() as session:
        return session.get(type(row), row.id)


def sent_flags(digest: Digest) -> list[bool]:
    return [r.message_id is not None for r in committed_deliveries(digest)]


def title_of(text: str) -> str:
    return text.split("\n", 1)[0]


# --- reserve, then send ------------------------------------------------------------------------------


def test_prepare_reserves_every_post_before_anything_is_sent(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=4)
    with session_scope() as session:
        assert prepare(session=session, digest_ids=[digest.id]) == {digest.id: 4}
    digest = reload(digest)
    assert (digest.status, digest.post_count) == ("sending", 4)
    rows = committed_deliveries(digest)
    assert sorted(r.post_id for r in rows) == sorted(p.id for p in posts)
    assert all(r.message_id is None for r in rows) and not tg.messages(user.telegram_id)

    assert only_sent(send_now(digest.id, send), digest.id, 4)
    sent = {m.message_id: m for m in tg.messages(user.telegram_id)}
    for row in committed_deliveries(digest):
        assert row.message_id in sent
        assert title_of(sent[row.message_id].text) == next(p.title for p in posts if p.id == row.post_id)


def test_flat_scroll_sends_one_escaped_message_per_post_within_the_limit(committed, tg, send) -> None:
    long_summary = ("A <long> summary & more “quoted” café text, " * 400)[:10_000]
    assert len(long_summary) == 10_000
    with committed() as make:
        user = make.user(prefs={"style": "flat_scroll"})
        hostile = make.post(
            HOSTILE_TITLE,
            score=900,
            summary=long_summary,
            url='https://example.com/a?x=1&y="2"<3>',
            domain="example.com",
        )
        plain = make.post("A plain post", score=800, summary="Short & sweet <3")
        text_post = make.post("Ask HN: no link at all?", score=700, domain=None, summary="A question.")
        digest = make.digest(user)
    tg.add_user(user.telegram_id, "Ada")

    assert only_sent(send_now(digest.id, send), digest.id, 3)
    assert not tg.errors  # the sandbox parses the HTML: anything unescaped or too long would be a 400
    messages = tg.messages(user.telegram_id)
    assert len(messages) == 3
    first, second, third = messages
    assert title_of(first.text) == HOSTILE_TITLE  # escaped on the way out, parsed back to the original
    assert first.entities[0]["type"] == "bold"
    assert utf16_len(first.text) <= MAX_MESSAGE and len(first.text) > 3000  # shortened, not dropped
    assert "…" in first.text and "A <long> summary & more “quoted” café text" in first.text
    assert "&lt;script&gt;" in first.raw_text and "<script>" not in first.raw_text
    link = next(e for e in first.entities if e["type"] == "text_link" and "example.com" in e["url"])
    assert link["url"] == hostile.url
    assert "Short & sweet <3" in second.text and title_of(second.text) == plain.title
    assert title_of(third.text) == text_post.title
    for n, message in enumerate(messages, start=1):
        assert utf16_len(message.text) <= MAX_MESSAGE
        assert f"{n}/3" in message.text
        assert [b["text"] for b in message.buttons()] == ["💬 Discuss", "👍", "👎", "💾 Save"]
    digest = reload(digest)
    assert digest.status == "sent" and digest.sent_at is not None
    assert [r.message_id for r in committed_deliveries(digest)] == [m.message_id for m in messages]


def test_a_long_summary_with_emoji_still_fills_the_message(committed, tg, send) -> None:
    with committed() as make:
        user = make.user()
        make.post("Emoji everywhere", summary=("Launch day 🚀 went well, " * 500)[:10_000])
        digest = make.digest(user)
    tg.add_user(user.telegram_id, "Ada")
    assert only_sent(send_now(digest.id, send), digest.id, 1)
    assert reload(digest).status == "sent"
    [message] = tg.messages(user.telegram_id)
    assert 3000 < utf16_len(message.text) <= MAX_MESSAGE


def test_brief_is_one_message_with_a_number_button_per_post(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=8, prefs={"style": "brief"})
        posts[0].title = HOSTILE_TITLE
        make.session.flush()
    assert only_sent(send_now(digest.id, send), digest.id, 1)
    [message] = tg.messages(user.telegram_id)
    assert not tg.errors
    assert [b["text"] for b in message.buttons()] == [str(n) for n in range(1, 9)]
    assert HOSTILE_TITLE in message.text and digest.batch_id in message.text
    assert all(p.title in message.text for p in posts[1:])
    digest = reload(digest)
    assert digest.message_id == message.message_id and digest.status == "sent"
    assert {r.message_id for r in committed_deliveries(digest)} == {message.message_id}
    # again: nothing more
    again = send_now(digest.id, send)
    assert again.sent == {} and again.done == [digest.id]
    assert len(tg.messages(user.telegram_id)) == 1


def test_brief_digests_of_a_batch_go_out_in_groups_each_recorded(committed, tg, outbox, monkeypatch) -> None:
    """The paid-broadcast batch path: brief digests take their slots GROUP at a time (one limiter round
    trip) and are recorded per group; one digest's failure leaves the others of its group sent."""
    from hnpal.deliveries import sender

    digests = sender.GROUP + 2  # a full group and a part of one
    with committed() as make:
        made = [setup_digest(make, tg, count=3, prefs={"style": "brief"}) for _ in range(digests)]
    runs: list[list[int]] = []
    real = outbox.limiter.reserve_many
    monkeypatch.setattr(
        outbox.limiter, "reserve_many", lambda chats, **kw: runs.append(list(chats)) or real(chats, **kw)
    )
    tg.set_fault("sendMessage", "error_500", count=1)  # the first send of the batch: a 5xx
    outcome = send_digests(digest_ids=[d.id for _, _, d in made], send=outbox.send, threads=2)
    assert sorted(len(chats) for chats in runs) == [2, sender.GROUP]
    [failed] = outcome.retry
    assert outcome.sent == {d.id: 1 for _, _, d in made if d.id != failed}
    assert not (outcome.blocked or outcome.waiting or outcome.busy or outcome.done)
    assert reload(next(d for _, _, d in made if d.id == failed)).status == "sending"
    assert only_sent(send_now(failed, outbox.send), failed, 1)  # the retry sends it; nothing else again
    for user, _posts, digest in made:
        [message] = tg.messages(user.telegram_id)
        digest = reload(digest)
        assert (digest.status, digest.message_id) == ("sent", message.message_id)
        assert {r.message_id for r in committed_deliveries(digest)} == {message.message_id}


def test_a_sent_digest_is_never_sent_again(committed, tg, send) -> None:
    with committed() as make:
        user, _posts, digest = setup_digest(make, tg, count=5)
    assert only_sent(send_now(digest.id, send), digest.id, 5)
    before = sends(tg)
    for _ in range(3):
        outcome = send_now(digest.id, send)
        assert outcome == Outcome(done=[digest.id])
    assert sends(tg) == before and len(tg.messages(user.telegram_id)) == 5


def test_a_crashed_send_resumes_with_the_rest_and_repeats_nothing(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=6)
    calls = []

    def crash_after_three(chat_id, text, reply_markup=None):
        if len(calls) == 3:
            raise RuntimeError("the process died")
        calls.append(chat_id)
        return send(chat_id, text, reply_markup=reply_markup)

    crashed = send_now(digest.id, crash_after_three)
    assert digest.id in crashed.retry and digest.id not in crashed.done  # the sweep or a retry finishes it
    assert len(tg.messages(user.telegram_id)) == 3
    assert sent_flags(digest) == [True] * 3 + [False] * 3
    assert reload(digest).status == "sending"

    assert only_sent(send_now(digest.id, send), digest.id, 3)
    titles = [title_of(m.text) for m in tg.messages(user.telegram_id)]
    assert titles == [p.title for p in posts]  # all six, in order, none twice
    assert reload(digest).status == "sent"


def test_a_crash_between_send_and_record_repeats_only_that_message(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=6)
    calls = []

    def lost_answer_on_fourth(chat_id, text, reply_markup=None):
        message = send(chat_id, text, reply_markup=reply_markup)
        calls.append(message)
        if len(calls) == 4:
            raise RuntimeError("died before the message id was stored")
        return message

    assert digest.id in send_now(digest.id, lost_answer_on_fourth).retry
    assert sent_flags(digest) == [True] * 3 + [False] * 3
    assert only_sent(send_now(digest.id, send), digest.id, 3)
    titles = Counter(title_of(m.text) for m in tg.messages(user.telegram_id))
    assert set(titles) == {p.title for p in posts}
    assert {t: n for t, n in titles.items() if n > 1} == {posts[3].title: 2}


def test_a_blocked_user_is_marked_and_the_digest_fails_without_retry(committed, tg, send) -> None:
    with committed() as make:
        user, _posts, digest = setup_digest(make, tg, count=3)
    tg.block(user.telegram_id)
    outcome = send_now(digest.id, send)
    assert outcome == Outcome(blocked=[digest.id])  # nothing sent, nothing to retry
    assert sends(tg) == 1 and not tg.messages(user.telegram_id)
    assert reload(user).status == "blocked"
    digest = reload(digest)
    assert digest.status == "failed" and "blocked" in digest.error
    assert send_now(digest.id, send) == Outcome(done=[digest.id])
    assert sends(tg) == 1
    # a later digest of the blocked user is not sent either
    with committed() as make:
        later = make.digest(reload(user), batch_id=f"later-{digest.id}")
    assert send_now(later.id, send) == Outcome(done=[later.id])
    assert reload(later).status in ("failed", "empty")
    assert sends(tg) == 1


def test_a_user_blocked_mid_digest_keeps_what_was_delivered(committed, tg, send) -> None:
    with committed() as make:
        user, _posts, digest = setup_digest(make, tg, count=4)
    calls = []

    def block_before_third(chat_id, text, reply_markup=None):
        calls.append(chat_id)
        if len(calls) == 3:
            tg.block(chat_id)
        return send(chat_id, text, reply_markup=reply_markup)

    outcome = send_now(digest.id, block_before_third)
    assert outcome.blocked == [digest.id] and not outcome.retry
    assert sent_flags(digest) == [True, True, False, False]
    assert len(tg.messages(user.telegram_id)) == 2
    assert reload(digest).status == "failed" and reload(user).status == "blocked"


def test_a_429_surfaces_as_retry_after_and_records_nothing_for_that_message(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=5)
    calls = []

    def throttled_third(chat_id, text, reply_markup=None):
        calls.append(chat_id)
        if len(calls) == 3:
            # longer than the outbox waits out in place: the task must come back later
            tg.set_fault("sendMessage", "too_many_requests", count=1, retry_after=6)
        return send(chat_id, text, reply_markup=reply_markup)

    outcome = send_now(digest.id, throttled_third)
    assert set(outcome.retry) == {digest.id} and outcome.retry[digest.id] >= 6  # at least Telegram's retry_after
    assert not (outcome.done or outcome.blocked)
    assert ("sendMessage", 429) in tg.request_log
    assert len(tg.messages(user.telegram_id)) == 2
    assert sent_flags(digest) == [True, True, False, False, False]
    assert reload(digest).status == "sending"

    # the retry (after the limiter's hold-off, which this call waits out) sends the other three, the
    # throttled one included
    assert only_sent(send_now(digest.id, send), digest.id, 3)
    assert [title_of(m.text) for m in tg.messages(user.telegram_id)] == [p.title for p in posts]


def test_a_short_429_is_waited_out_in_place_without_repeating_anything(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=4)
    calls = []

    def throttled_second(chat_id, text, reply_markup=None):
        calls.append(chat_id)
        if len(calls) == 2:
            tg.set_fault("sendMessage", "too_many_requests", count=1, retry_after=1)
        return send(chat_id, text, reply_markup=reply_markup)

    assert only_sent(send_now(digest.id, throttled_second), digest.id, 4)
    assert ("sendMessage", 429) in tg.request_log
    assert [title_of(m.text) for m in tg.messages(user.telegram_id)] == [p.title for p in posts]  # no repeat
    # the 429 is counted for the metrics (hnpal_telegram_429_total)
    from config.settings import get_settings
    from hnpal.ops.metrics import TELEGRAM_429_KEY
    from hnpal.state.store import get_redis

    assert get_redis().get(f"{get_settings().redis_key_prefix}{TELEGRAM_429_KEY}") == "1"


# --- summary styles ------------------------------------------------------------------------------------


def test_what_hn_says_is_shown_under_posts_with_a_lively_thread(committed, tg, send) -> None:
    """A post whose thread has a comment summary carries a "What HN says" section under its summary, within
    Telegram's limit even with a summary that fills the message; a post without one has none; a brief
    (titles only) has none."""
    says = "- Most readers doubt the <benchmark>\n- A maintainer explains the regression\n" + "- More. " * 400
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=3)
        make.summary(posts[0], "comments", says)
        make.summary(posts[1], "comments", "- Short & sweet")
        make.session.execute(update(Post).where(Post.id == posts[0].id).values(summary="Long summary sentence. " * 400))
    assert only_sent(send_now(digest.id, send), digest.id, 3)
    by_title = {title_of(m.text): m for m in tg.messages(user.telegram_id)}
    first, second, third = (by_title[p.title] for p in posts)
    assert "🗣 What HN says" in first.text and "- Most readers doubt the <benchmark>" in first.text
    assert "Long summary sentence." in first.text  # the article's summary keeps its place
    assert utf16_len(first.text) <= MAX_MESSAGE
    assert "🗣 What HN says\n- Short & sweet" in second.text
    assert "What HN says" not in third.text

    with committed() as make:
        brief_user, brief_posts, brief = setup_digest(make, tg, count=2, prefs={"style": "brief"})
        make.summary(brief_posts[0], "comments", "- Lively")
    assert only_sent(send_now(brief.id, send), brief.id, 1)
    assert "What HN says" not in tg.messages(brief_user.telegram_id)[-1].text


def test_the_users_summary_style_is_used(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=3, prefs={"summary_style": "technical"})
        for post in posts:
            make.summary(post, "technical", f"Technical take on {post.title}")
            make.summary(post, "business", f"Business take on {post.title}")
    assert only_sent(send_now(digest.id, send), digest.id, 3)
    for post, message in zip(posts, tg.messages(user.telegram_id), strict=True):
        assert f"Technical take on {post.title}" in message.text and "Business" not in message.text


def test_personalized_summaries_follow_the_interest_set(committed, tg, send) -> None:
    interests = ["Rust", "databases"]
    with committed() as make:
        user, posts, digest = setup_digest(
            make, tg, count=2, prefs={"summary_style": "personalized"}, interests=interests
        )
        for post in posts:
            make.summary(post, "personalized", f"For you: {post.title}", variant=interest_variant(interests))
            make.summary(post, "personalized", "For someone else", variant=interest_variant(["cooking"]))
    assert only_sent(send_now(digest.id, send), digest.id, 2)
    texts = [m.text for m in tg.messages(user.telegram_id)]
    assert len(texts) == 2 and all("For you:" in t and "someone else" not in t for t in texts)


def test_missing_summaries_wait_then_fall_back(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=3, prefs={"summary_style": "technical"})
        make.summary(posts[0], "technical", "Technical take zero")
    for attempt in range(1, SUMMARY_WAIT_ATTEMPTS + 1):
        outcome = send_now(digest.id, send)
        assert set(outcome.waiting) == {digest.id} and not (outcome.sent or outcome.done or outcome.retry)
        assert sorted(outcome.waiting[digest.id]) == sorted([posts[1].id, posts[2].id])
        row = reload(digest)
        assert row.attempts == attempt and row.status == "sending"
    assert sends(tg) == 0  # nothing goes out while waiting
    # one summary arrives meanwhile; the last one never does: the default summary stands in
    with committed() as make:
        make.summary(posts[1], "technical", "Technical take one")
    assert only_sent(send_now(digest.id, send), digest.id, 3)
    texts = [m.text for m in tg.messages(user.telegram_id)]
    assert "Technical take zero" in texts[0] and "Technical take one" in texts[1]
    assert posts[2].summary in texts[2]


def test_summaries_that_arrive_while_waiting_are_used(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=2, prefs={"summary_style": "business"})
    assert set(send_now(digest.id, send).waiting) == {digest.id}
    with committed() as make:
        for post in posts:
            make.summary(post, "business", f"Business take on {post.title}")
    assert only_sent(send_now(digest.id, send), digest.id, 2)
    assert all("Business take on" in m.text for m in tg.messages(user.telegram_id))


def test_the_default_style_never_waits(committed, tg, send) -> None:
    with committed() as make:
        user, posts, digest = setup_digest(make, tg, count=2, prefs={"summary_style": "basic"})
    assert only_sent(send_now(digest.id, send), digest.id, 2)
    assert [p.summary in m.text for p, m in zip(posts, tg.messages(user.telegram_id), strict=True)] == [True, True]


# --- manual, empty, gone ---------------------------------------------------------------------------------


def test_a_manual_digest_is_sent_at_once_and_takes_only_new_posts(committed, tg, send) -> None:
    with committed() as make:
        user, posts, scheduled = setup_digest(make, tg, count=3, prefs={"style": "brief"})
    assert only_sent(send_now(scheduled.id, send), scheduled.id, 1)
    with committed() as make:
        fresh = make.post("Fresh after the scheduled digest", score=5, summarized_at=make.epoch + timedelta(minutes=30))
        manual_id = create_manual_digest(session=make.session, user_id=user.id)
        # keep its window in this test's time (the row was created at the real time)
        make.session.execute(
            update(Digest).where(Digest.id == manual_id).values(created_at=make.epoch + timedelta(hours=1))
        )
        make.session.execute(
            update(Digest).where(Digest.id == scheduled.id).values(created_at=make.epoch - timedelta(minutes=30))
        )
    with session_scope() as session:
        manual = session.get(Digest, manual_id)
    assert manual.manual and manual.status == "pending" and manual.batch_id.startswith("now-")
    assert only_sent(send_now(manual_id, send), manual_id, 1)
    message = tg.messages(user.telegram_id)[-1]
    assert "(on request)" in message.text and fresh.title in message.text
    assert not any(p.title in message.text for p in posts)
    assert [b["text"] for b in message.buttons()] == ["1"]

    # asked again with nothing new since: a short note instead of a digest, once
    with committed() as make:
        again_id = create_manual_digest(session=make.session, user_id=user.id)
        make.session.execute(
            update(Digest).where(Digest.id == again_id).values(created_at=make.epoch + timedelta(hours=2))
        )
    assert send_now(again_id, send) == Outcome(done=[again_id])
    assert tg.messages(user.telegram_id)[-1].text == EMPTY_NOTE
    with session_scope() as session:
        assert session.get(Digest, again_id).status == "empty"
    before = sends(tg)
    assert send_now(again_id, send) == Outcome(done=[again_id])
    assert sends(tg) == before


def test_an_empty_digest_sends_nothing(committed, tg, send) -> None:
    with committed() as make:
        user = make.user(prefs={"min_score": 10_000})
        make.post("Not good enough", score=10)
        digest = make.digest(user)
    tg.add_user(user.telegram_id)
    assert send_now(digest.id, send) == Outcome(done=[digest.id])
    digest = reload(digest)
    assert (digest.status, digest.post_count) == ("empty", 0)
    assert sends(tg) == 0  # a scheduled digest with nothing in it stays silent
    assert send_now(digest.id, send) == Outcome(done=[digest.id])
    assert sends(tg) == 0


def test_an_empty_manual_digest_says_there_is_nothing_new(committed, tg, send) -> None:
    with committed() as make:
        user = make.user(prefs={"min_score": 10_000})
        make.post("Not good enough", score=10)
        digest_id = create_manual_digest(session=make.session, user_id=user.id)
        make.session.execute(update(Digest).where(Digest.id == digest_id).values(created_at=make.epoch))
    tg.add_user(user.telegram_id)
    assert send_now(digest_id, send) == Outcome(done=[digest_id])
    assert [m.text for m in tg.messages(user.telegram_id)] == [EMPTY_NOTE]
    with session_scope() as session:
        assert session.get(Digest, digest_id).status == "empty"
    assert send_now(digest_id, send) == Outcome(done=[digest_id])
    assert sends(tg) == 1  # the note is not repeated


def test_digests_of_gone_users_are_failed_not_sent(committed, tg, send) -> None:
    with committed() as make:
        user, _posts, digest = setup_digest(make, tg, count=2)
        prepare(session=make.session, digest_ids=[digest.id])
        make.session.execute(update(User).where(User.id == user.id).values(status="blocked"))
    assert send_now(digest.id, send) == Outcome(done=[digest.id])
    digest = reload(digest)
    assert digest.status == "failed" and digest.error == "user blocked" and sends(tg) == 0
    assert send_now(10**9, send) == Outcome()  # no such digest: nothing to send, nothing to retry
    assert sends(tg) == 0


# --- a real worker, killed mid-digest --------------------------------------------------------------------


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message)


@pytest.mark.slow
def test_a_sender_killed_mid_digest_is_redelivered_and_the_rest_arrives_without_repeats(
    committed, spawn_worker
) -> None:
    """Kill a sender mid-digest and prove the rest arrives without repeats (acks_late + reject_on_worker_lost)."""
    from hnpal.db.session import session_scope
    from tasks.digests import send

    with TelegramServer(per_chat_rate=1) as tg:  # Telegram's one message per second per chat, enforced
        with committed() as make:
            user = make.user(prefs={"style": "flat_scroll", "max_posts": 8})
            posts = [make.post(f"Killed digest story {n}", score=5000 - n) for n in range(8)]
            digest = make.digest(user)
            chat = user.telegram_id
            prepare(session=make.session, digest_ids=[digest.id])
        tg.add_user(chat, "Ada")
        with session_scope() as session:
            reserved = deliveries(session, digest)
        assert sorted(r.post_id for r in reserved) == sorted(p.id for p in posts)

        worker = spawn_worker(
            "telegram",
            env={"HNPAL_TELEGRAM_TOKEN": tg.token, "HNPAL_TELEGRAM_BASE_URL": tg.base_url},
            concurrency=1,
            pool="prefork",
        )
        worker.wait_ready()
        wait_until(lambda: len(psutil.Process(worker.proc.pid).children()) == 1, 30, "no task process")
        [child] = psutil.Process(worker.proc.pid).children()

        task_id = send.delay(digest.id).id
        tg.wait_for_messages(chat, 3, timeout=60)
        os.kill(child.pid, signal.SIGKILL)  # the task process, mid-digest (one message a second)
        at_kill = len(tg.messages(chat))
        assert at_kill < 8

        def done() -> bool:
            with session_scope() as session:
                status = session.scalar(select(Digest.status).where(Digest.id == digest.id))
                return status == "sent"

        wait_until(done, 120, f"the redelivered send did not finish:\n{worker.log()[-3000:]}")
        messages = tg.messages(chat)
        with session_scope() as session:
            rows = deliveries(session, digest)

    titles = Counter(title_of(m.text) for m in messages)
    assert set(titles) == {p.title for p in posts}, titles  # all eight arrived
    repeats = {t: n for t, n in titles.items() if n > 1}
    assert sum(n - 1 for n in repeats.values()) <= 1, repeats  # at most the one in flight, once
    by_id = {m.message_id: m for m in messages}
    title_by_post = {p.id: p.title for p in posts}
    for row in rows:  # every reservation points at a message that carries its post
        assert row.message_id in by_id, row
        assert title_of(by_id[row.message_id].text) == title_by_post[row.post_id]
    assert len({r.message_id for r in rows}) == 8
    log = worker.log()
    assert "WorkerLostError" in log or "SIGKILL" in log, log[-3000:]
    assert log.count(f"Task hnpal.digests.send[{task_id}] received") >= 2  # the same message, redelivered
    assert psutil.Process(worker.proc.pid).children()[0].pid != child.pid  # a new task process did the rest


def test_two_senders_on_one_digest_send_each_post_once(committed, tg, send) -> None:
    """A redelivered or swept task may start while the first one is still sending the same digest."""
    import threading

    with committed() as make:
        user = make.user(prefs={"style": "flat_scroll"})
        posts = [make.post(f"Concurrent lean story {n}", score=900 - n) for n in range(4)]
        digest = make.digest(user)
        prepare(session=make.session, digest_ids=[digest.id])
    tg.add_user(user.telegram_id, "Ada")
    first_sending, second_done = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def held_send(chat_id, text, reply_markup=None):
        first_sending.set()
        second_done.wait(10)  # the first task is slow: the second one runs meanwhile
        return send(chat_id, text, reply_markup=reply_markup)

    def run(name: str, send_fn, done: threading.Event | None = None) -> None:
        try:
            results[name] = send_now(digest.id, send_fn)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            results[name] = exc
        finally:
            if done is not None:
                done.set()

    first = threading.Thread(target=run, args=("first", held_send))
    first.start()
    assert first_sending.wait(10)
    second = threading.Thread(target=run, args=("second", send, second_done))
    second.start()
    second.join(30)
    first.join(30)
    titles = Counter(title_of(m.text) for m in tg.messages(user.telegram_id))
    assert titles == Counter(p.title for p in posts), (titles, results)
    assert results["second"] == Outcome(busy=[digest.id]), results
    assert only_sent(results["first"], digest.id, 4), results
    assert reload(digest).status == "sent"


def test_a_digest_telegram_refuses_for_good_is_a_failed_task(committed, tg, outbox) -> None:
    """A 400 for the digest's message: the digest is recorded failed with the reason, and the task ends in
    FAILURE (what Flower counts), not retried, rather than a green success."""
    from hnpal.errors import WorkFailed
    from tasks.digests import send as send_task

    with committed() as make:
        user, _posts, digest = setup_digest(make, tg, count=2, prefs={"style": "brief"})
    tg.set_fault("sendMessage", "bad_request", count=None, description="Bad Request: message is too long")
    result = send_task.apply(args=[digest.id])
    assert result.state == "FAILURE" and isinstance(result.result, WorkFailed)
    digest = reload(digest)
    assert digest.status == "failed" and "message is too long" in digest.error
    assert not tg.messages(user.telegram_id)
    tg.clear_faults()
    again = send_task.apply(args=[digest.id])  # a redelivery finds it done: nothing sent, nothing failed
    assert again.state == "SUCCESS" and sends(tg) == 1
