"""Every command and button through the real bot process, a real worker and the sandbox Bot API.

Each test acts as a Telegram user of its own (``tg.new_user()``) and checks both what the sandbox
recorded (messages, edits, button answers) and what the database holds. One stack serves the module;
the tests that stop or reconfigure the bot process (resume, webhook) come last and restore it.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

import celeryconfig  # imported now, under the run's settings: not first under a stack's (its key prefix)
from hnpal.db.session import session_scope
from hnpal.sandbox.telegram_api import SentMessage
from hnpal.telegram import discuss, settings_menu, texts
from hnpal.telegram.callbacks import sign
from hnpal.users.schemas import DigestPreferences
from tests.conftest import execute, one, rows
from tests.telegram.conftest import Stack, find_button, free_port, labels

pytestmark = pytest.mark.slow

_hn_ids = itertools.count(910_000_001)
_score_bands = itertools.count(1)


@pytest.fixture
def tg(tg_stack: Stack) -> Stack:
    return tg_stack


# --- database helpers -------------------------------------------------------------------------------


def user_row(telegram_id: int) -> dict[str, Any] | None:
    return one("SELECT * FROM users WHERE telegram_id = :t", t=telegram_id)


def prefs(telegram_id: int) -> dict[str, Any]:
    row = user_row(telegram_id)
    assert row is not None, f"no user {telegram_id}"
    return row["digest_preferences"]


def deliveries(telegram_id: int) -> list[dict[str, Any]]:
    return rows(
        "SELECT d.*, p.title, p.hn_id FROM deliveries d JOIN users u ON u.id = d.user_id "
        "JOIN posts p ON p.id = d.post_id WHERE u.telegram_id = :t ORDER BY d.id",
        t=telegram_id,
    )


def update_row(update_id: int) -> dict[str, Any] | None:
    return one("SELECT * FROM telegram_updates WHERE update_id = :u", u=update_id)


def make_user(tg: Stack, **preferences: Any) -> int:
    """A sandbox user whose users row exists already, with these digest preferences."""
    uid = tg.new_user()
    execute(
        "INSERT INTO users (telegram_id, first_name, digest_preferences) VALUES (:t, 'Ada', CAST(:p AS jsonb))",
        t=uid,
        p=json.dumps({"style": "flat_scroll", "frequency": "daily", "time": "07:00", **preferences}),
    )
    return uid


def make_posts(count: int, *, summarized: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Posts of a score band above every earlier band (so a user with ``min_score`` = the band's floor gets
    exactly these in a digest, whatever else the database holds). Returns them, best first, and the floor."""
    floor = 50_000 + next(_score_bands) * 1_000
    made = []
    for n in range(count):
        hn_id = next(_hn_ids)
        made.append(
            {
                "hn_id": hn_id,
                "title": f"Story {hn_id} <about> Rust & friends",
                "url": f"https://example{hn_id}.com/a?x=1&y=2",
                "domain": f"example{hn_id}.com",
                "score": floor + count - n,
                "comments": n + 3,
                "summary": f"Summary of story {hn_id}: <b>not bold</b> & still escaped.",
            }
        )
    with session_scope() as session:
        for post in made:
            post["id"] = session.execute(
                text(
                    "INSERT INTO posts (hn_id, type, title, url, domain, score, comment_count, summary, "
                    "summary_status, summarized_at) VALUES (:hn_id, 'story', :title, :url, :domain, :score, "
                    ":comments, :summary, :status, :summarized_at) RETURNING id"
                ),
                {
                    **post,
                    "status": "done" if summarized else "pending",
                    "summarized_at": datetime.now(UTC) if summarized else None,
                    "summary": post["summary"] if summarized else None,
                },
            ).scalar_one()
    return made, floor


def private_message(tg: Stack, uid: int, **body: Any) -> dict[str, Any]:
    """A raw ``message`` update body from ``uid`` in their private chat (for inject_update)."""
    user = tg.server.user(uid)
    assert user is not None
    return {
        "message_id": 900_000 + next(_hn_ids) % 100_000,
        "from": user,
        "chat": {"id": uid, "type": "private", "first_name": user["first_name"]},
        "date": int(time.time()),
        **body,
    }


def membership(tg: Stack, uid: int, old: str, new: str) -> dict[str, Any]:
    user = tg.server.user(uid)
    bot = {"id": tg.server.bot_id, "is_bot": True, "first_name": tg.server.first_name, "username": tg.server.username}
    return {
        "my_chat_member": {
            "chat": {"id": uid, "type": "private", "first_name": user["first_name"]},
            "from": user,
            "date": int(time.time()),
            "old_chat_member": {"user": bot, "status": old},
            "new_chat_member": {"user": bot, "status": new, **({"until_date": 0} if new == "kicked" else {})},
        }
    }


def digest(tg: Stack, uid: int, posts: int) -> list[SentMessage]:
    """/digest for a user set up with :func:`make_user`; waits for the notice and ``posts`` post messages."""
    before = len(tg.server.messages(uid))
    notice = tg.send(uid, "/digest")
    assert notice[0].text == "Putting your digest together…"
    tg.wait_messages(uid, before + 1 + posts)
    tg.wait_until(
        lambda: (
            one(
                "SELECT g.status FROM digests g JOIN users u ON u.id = g.user_id WHERE u.telegram_id = :t "
                "ORDER BY g.id DESC LIMIT 1",
                t=uid,
            )["status"]
            == "sent"
        ),
        what="the digest to be sent",
    )
    return tg.server.messages(uid)[before + 1 :]


# --- /start -----------------------------------------------------------------------------------------


def test_start_welcomes_and_onboards_interests(tg: Stack) -> None:
    uid = tg.new_user("Ada <Lovelace>")
    welcome, topics = tg.send(uid, "/start", replies=2)
    assert welcome.text.startswith("Hi Ada <Lovelace>! I'm HN Pal")  # the name is escaped for HTML
    assert topics.text == "Which topics interest you? Pick any, then tap Done."
    assert labels(topics) == [*texts.TOPICS, "Done", "Skip"]
    user = user_row(uid)
    assert user is not None and user["first_name"] == "Ada <Lovelace>" and user["status"] == "active"

    assert tg.press(uid, topics, "AI") is None
    assert "✅ AI" in labels(tg.current(uid, topics))
    tg.press(uid, topics, "Rust")
    tg.press(uid, topics, "✅ AI")  # toggles AI off again
    shown = labels(tg.current(uid, topics))
    assert "AI" in shown and "✅ AI" not in shown and "✅ Rust" in shown
    tg.press(uid, topics, "Databases")
    assert user_row(uid)["interests"] == ["Rust", "Databases"]
    assert rows("SELECT * FROM memory m JOIN users u ON u.id = m.user_id WHERE u.telegram_id = :t", t=uid) == []

    assert tg.press(uid, topics, "Done") == "Saved"
    done = tg.current(uid, topics)
    assert done.text.startswith("Interests: Rust, Databases.")
    assert done.reply_markup is None
    memory = rows(
        "SELECT m.type, m.content, m.source_type, m.active FROM memory m JOIN users u ON u.id = m.user_id "
        "WHERE u.telegram_id = :t ORDER BY m.content",
        t=uid,
    )
    assert memory == [
        {"type": "interest", "content": "Databases", "source_type": "onboarding", "active": True},
        {"type": "interest", "content": "Rust", "source_type": "onboarding", "active": True},
    ]

    # /start again is harmless: the same user, the chosen topics ticked, no second set of memory rows
    _, again = tg.send(uid, "/start", replies=2)
    shown = labels(again)
    assert "✅ Rust" in shown and "✅ Databases" in shown and "AI" in shown
    assert tg.press(uid, again, "Done") == "Saved"
    assert len(rows("SELECT id FROM users WHERE telegram_id = :t", t=uid)) == 1
    assert len(rows("SELECT m.id FROM memory m JOIN users u ON u.id = m.user_id WHERE u.telegram_id = :t", t=uid)) == 2

    # unticking a topic on a later /start retires its memory row
    _, third = tg.send(uid, "/start", replies=2)
    tg.press(uid, third, "✅ Rust")
    assert tg.press(uid, third, "Done") == "Saved"
    active = rows(
        "SELECT m.content FROM memory m JOIN users u ON u.id = m.user_id WHERE u.telegram_id = :t AND m.active", t=uid
    )
    assert active == [{"content": "Databases"}]
    assert user_row(uid)["interests"] == ["Databases"]


def test_start_skip_stores_nothing(tg: Stack) -> None:
    uid = tg.new_user()
    _, topics = tg.send(uid, "/start", replies=2)
    assert tg.press(uid, topics, "Skip") == "Skipped"
    skipped = tg.current(uid, topics)
    assert skipped.text.startswith("Interests: none yet")
    assert skipped.reply_markup is None
    assert user_row(uid)["interests"] == []
    assert rows("SELECT m.id FROM memory m JOIN users u ON u.id = m.user_id WHERE u.telegram_id = :t", t=uid) == []

    # topics tapped and then skipped are dropped: Skip keeps the interests as they were
    _, again = tg.send(uid, "/start", replies=2)
    tg.press(uid, again, "Rust")
    assert user_row(uid)["interests"] == ["Rust"]
    assert tg.press(uid, again, "Skip") == "Skipped"
    assert user_row(uid)["interests"] == []


# --- simple commands --------------------------------------------------------------------------------


def test_help(tg: Stack) -> None:
    uid = tg.new_user()
    (reply,) = tg.send(uid, "/help")
    assert reply.text.startswith("HN Pal brings you the best of Hacker News")
    menu = ["digest", "discuss", "done", "settings", "saved", "pause", "token", "memory", "export", "deletemydata",
            "start", "help"]  # fmt: skip
    for command in menu:
        assert f"/{command}" in reply.text
    assert user_row(uid) is not None
    # the command menu was registered by the bot process: every command the help lists
    assert [c["command"] for c in tg.server.commands()] == menu


class DigestRun:
    """Thousands of digest sends queued on the stack's `telegram` queue as a scheduled run fans them out
    (the queue and priority the task declares; no such digests, so each send finds nothing to do)."""

    def __init__(self, tg: Stack, redis_client, sends: int = 3000) -> None:  # type: ignore[no-untyped-def]
        from celery import Celery

        from hnpal.celery import app
        from hnpal.runtime import broker_url

        self.tg, self.redis, self.queue = tg, redis_client, f"{tg.env['HNPAL_REDIS_KEY_PREFIX']}telegram"
        client = Celery("hnpal-test-client", set_as_current=False)
        client.config_from_object(celeryconfig)  # the broker is set below
        client.conf.broker_url = broker_url()
        client.conf.broker_transport_options = {"global_keyprefix": tg.env["HNPAL_REDIS_KEY_PREFIX"]}
        app.loader.import_default_modules()
        send = app.tasks["hnpal.digests.send"]  # where the scheduled run's fan-out sends it, and at which priority
        try:
            with client.producer_or_acquire() as producer:
                for digest_id in range(900_000_001, 900_000_001 + sends):
                    client.send_task(
                        send.name, args=[digest_id], producer=producer, queue=send.queue, priority=send.priority
                    )
        finally:
            client.close()
        self.queued = self.left()

    def left(self) -> int:  # every priority level of the queue (kombu: "<queue>\x06\x16<level>")
        levels = ("", "\x06\x163", "\x06\x166", "\x06\x169")
        return sum(self.redis.llen(self.queue + level) for level in levels)

    def drain(self) -> None:
        self.tg.wait_until(lambda: self.left() == 0, what="the digest run to drain", timeout=120)


def test_a_command_during_a_digest_run_does_not_wait_for_the_run(tg: Stack, redis_client) -> None:
    """A user's /help while thousands of digest sends wait: handled while most of the run still waits."""
    run = DigestRun(tg, redis_client)
    try:
        uid = tg.new_user()
        (reply,) = tg.send(uid, "/help")
        left = run.left()
    finally:
        run.drain()
    assert reply.text.startswith("HN Pal brings you the best of Hacker News")
    print(f"digest sends queued: {run.queued}; still queued when /help was answered: {left}")
    assert run.queued > 1000 and left > 0.75 * run.queued  # without priorities: 0 left


def test_a_digest_asked_for_during_a_digest_run_does_not_wait_for_the_run(tg: Stack, redis_client) -> None:
    """/digest sends on the bulk route too, but the user waits for it: it goes ahead of the run."""
    _posts, floor = make_posts(2)
    uid = make_user(tg, min_score=floor)
    run = DigestRun(tg, redis_client)
    try:
        messages = digest(tg, uid, 2)
        left = run.left()
    finally:
        run.drain()
    print(f"digest sends queued: {run.queued}; still queued when /digest was delivered: {left}")
    assert len(messages) == 2 and run.queued > 1000 and left > 0.75 * run.queued


def test_pause_toggles_status(tg: Stack) -> None:
    uid = tg.new_user()
    (reply,) = tg.send(uid, "/pause")
    assert reply.text.startswith("Digests paused.")
    assert user_row(uid)["status"] == "paused"
    (reply,) = tg.send(uid, "/pause")
    assert reply.text.startswith("Digests resumed.")
    assert user_row(uid)["status"] == "active"
    tg.send(uid, "/pause")
    (reply,) = tg.send(uid, "/resume")
    assert reply.text.startswith("Digests resumed.")
    assert user_row(uid)["status"] == "active"


def test_pause_survives_a_block_and_unblock(tg: Stack) -> None:
    """Paused, then blocked and unblocked (Telegram's membership updates), or blocked and then writing to the
    bot again: still paused, no digests."""
    uid = tg.new_user()
    tg.send(uid, "/pause")
    assert tg.inject(membership(tg, uid, "member", "kicked"))["status"] == "processed"
    assert user_row(uid)["status"] == "blocked"
    assert tg.inject(membership(tg, uid, "kicked", "member"))["status"] == "processed"
    assert user_row(uid)["status"] == "paused"

    tg.inject(membership(tg, uid, "member", "kicked"))
    assert user_row(uid)["status"] == "blocked"
    (reply,) = tg.send(uid, "/help")  # writing after a block (no membership update seen)
    assert reply.text.startswith("HN Pal brings you")
    assert user_row(uid)["status"] == "paused"

    # a reply refused with 403 marks them blocked; writing again later still finds them paused
    tg.server.block(uid)
    command = [{"type": "bot_command", "offset": 0, "length": 5}]
    tg.inject({"message": private_message(tg, uid, text="/help", entities=command)})
    assert user_row(uid)["status"] == "blocked"
    tg.server.unblock(uid)
    (reply,) = tg.send(uid, "/pause")
    assert reply.text.startswith("Digests resumed.")  # the pause was still there to lift
    assert user_row(uid)["status"] == "active"
    tg.inject(membership(tg, uid, "member", "kicked"))
    tg.inject(membership(tg, uid, "kicked", "member"))
    assert user_row(uid)["status"] == "active" and user_row(uid)["paused_at"] is None


def test_unknown_command_and_plain_text(tg: Stack) -> None:
    uid = tg.new_user()
    (reply,) = tg.send(uid, "/frobnicate")
    assert reply.text.startswith("I don't know /frobnicate. Here is what I can do:")
    assert "/digest" in reply.text and len(reply.text) < 1000
    (reply,) = tg.send(uid, "/Help@hnpal_sandbox_bot")  # a command addressed to the bot, any case
    assert reply.text.startswith("HN Pal brings you")
    (reply,) = tg.send(uid, "hello there")
    assert reply.text == discuss.IDLE_HINT


def test_token_shows_usage(tg: Stack) -> None:
    uid = make_user(tg)
    today = datetime.now(UTC).date()
    execute(
        "INSERT INTO user_token_usage (user_id, date, total_input_tokens, total_output_tokens, total_cost_usd, "
        "summarization_tokens, discussion_tokens, memory_extraction_tokens) "
        "SELECT id, :d, 1200, 345, 0.012345, 1000, 500, 45 FROM users WHERE telegram_id = :t",
        d=today,
        t=uid,
    )
    execute(
        "INSERT INTO user_token_usage (user_id, date, total_input_tokens, total_output_tokens, total_cost_usd, "
        "summarization_tokens, discussion_tokens, memory_extraction_tokens) "
        "SELECT id, :d, 100, 0, 0.001, 100, 0, 0 FROM users WHERE telegram_id = :t",
        d=today - timedelta(days=3),
        t=uid,
    )
    (reply,) = tg.send(uid, "/token")
    assert reply.text.startswith("Your LLM usage")
    assert "Today: 1,545 tokens ($0.0123)" in reply.text
    assert "Last 30 days: 1,645 tokens ($0.0133)" in reply.text
    assert "summaries 1,100 · discussions 500 · memory 45" in reply.text

    other = tg.new_user()
    (reply,) = tg.send(other, "/token")  # no usage at all
    assert "Last 30 days: 0 tokens ($0.0000)" in reply.text and "Today" not in reply.text


# --- /saved -----------------------------------------------------------------------------------------


def test_saved_empty_and_paged(tg: Stack) -> None:
    uid = make_user(tg)
    (reply,) = tg.send(uid, "/saved")
    assert reply.text == "No bookmarks yet: tap 💾 under a post to save it."
    assert reply.reply_markup is None

    posts, _ = make_posts(7, summarized=False)  # not summarized: no digest of another test picks them
    now = datetime.now(UTC)
    for n, post in enumerate(posts):  # posts[0] saved most recently
        execute(
            "INSERT INTO deliveries (user_id, post_id, batch_id, message_id, is_saved, saved_at) "
            "SELECT id, :p, 'test-saved', :m, true, :s FROM users WHERE telegram_id = :t",
            p=post["id"],
            m=100 + n,
            s=now - timedelta(minutes=n),
            t=uid,
        )
    # one delivery that is not saved does not show
    extra, _ = make_posts(1, summarized=False)
    execute(
        "INSERT INTO deliveries (user_id, post_id, batch_id) "
        "SELECT id, :p, 'test-saved' FROM users WHERE telegram_id = :t",
        p=extra[0]["id"],
        t=uid,
    )

    (page,) = tg.send(uid, "/saved")
    lines = page.text.splitlines()
    assert lines[0] == "Saved posts · 7 · page 1/2"
    assert [line.split(". ", 1)[0] for line in lines[2:]] == ["1", "2", "3", "4", "5"]
    assert posts[0]["title"] in lines[2] and posts[4]["title"] in lines[6]
    assert labels(page) == ["Older ▶"]
    links = [e["url"] for e in page.entities if e["type"] == "text_link"]
    assert posts[0]["url"] in links and f"https://news.ycombinator.com/item?id={posts[0]['hn_id']}" in links

    assert tg.press(uid, page, "Older ▶") is None
    older = tg.current(uid, page)
    lines = older.text.splitlines()
    assert lines[0] == "Saved posts · 7 · page 2/2"
    assert lines[2].startswith(f"6. {posts[5]['title']}") and lines[3].startswith(f"7. {posts[6]['title']}")
    assert len(lines) == 4
    assert labels(older) == ["◀ Newer"]

    tg.press(uid, page, "◀ Newer")
    newer = tg.current(uid, page)
    assert newer.text.splitlines()[0] == "Saved posts · 7 · page 1/2"
    assert labels(newer) == ["Older ▶"]


# --- /settings --------------------------------------------------------------------------------------

CHOICE_MENUS = {
    "style": ("Digest style", ["flat_scroll", "brief"]),
    "summary_style": ("Summary style", list(settings_menu.SUMMARY_STYLES)),
    "frequency": ("Frequency", ["daily", "twice_daily", "weekly"]),
    "weekday": ("Weekday", [str(n) for n in range(7)]),
}


def option_label(field: str, value: str) -> str:
    return settings_menu.WEEKDAYS[int(value)] if field == "weekday" else value.replace("_", " ")


def test_settings_shows_the_menu(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    assert menu.text.splitlines()[:8] == [
        "Settings",
        "",
        "Digest style: flat_scroll",
        "Summary style: basic",
        "Frequency: daily at 07:00 (UTC)",
        "Posts per digest: 10 · minimum score: 0",
        "Interests: — (👍/👎 teach me)",
        "Muted keywords: —",
    ]
    assert "Status: active · next digest" in menu.text
    assert labels(menu) == [
        "Digest style", "Summary style", "Frequency", "Time", "Time zone", "Weekday", "Posts per digest",
        "Min score", "Interests", "Muted keywords", "Muted domains",
    ]  # fmt: skip


def test_settings_choice_buttons(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    for field, (button, values) in CHOICE_MENUS.items():
        for value in values:
            assert tg.press(uid, menu, button) is None
            options = tg.current(uid, menu)
            assert options.text == f"Choose the {field.replace('_', ' ')}:"
            current = str(prefs(uid).get(field, DigestPreferences().model_dump()[field]))
            shown = labels(options)
            assert shown[-1] == "⬅ Back"
            assert [label.removeprefix("✅ ") for label in shown[:-1]] == [option_label(field, v) for v in values]
            assert [label for label in shown if label.startswith("✅")] == [f"✅ {option_label(field, current)}"]

            label = option_label(field, value)
            assert tg.press(uid, menu, f"✅ {label}" if value == current else label) == "Saved"
            expected = int(value) if field == "weekday" else value
            assert prefs(uid)[field] == expected
            view = tg.current(uid, menu)
            assert view.text.startswith("Settings")
            assert labels(view)[0] == "Digest style"
    stored = prefs(uid)
    assert stored["style"] == "brief" and stored["summary_style"] == "personalized"
    assert stored["frequency"] == "weekly" and stored["weekday"] == 6
    assert "Frequency: weekly at Sundays 07:00 (UTC)" in tg.current(uid, menu).text

    # ⬅ Back leaves the value alone
    tg.press(uid, menu, "Digest style")
    assert tg.press(uid, menu, "⬅ Back") is None
    assert tg.current(uid, menu).text.startswith("Settings") and prefs(uid)["style"] == "brief"


def ask(tg: Stack, uid: int, menu: SentMessage, button: str, field: str) -> None:
    """Press a typed-answer setting: the bot asks with a new message."""
    before = len(tg.server.messages(uid))
    assert tg.press(uid, menu, button, replies=1) is None
    asked = tg.server.messages(uid)[before:]
    assert [m.text for m in asked] == [texts.PROMPTS[field]]


def answer(tg: Stack, uid: int, text_: str) -> str:
    (reply,) = tg.send(uid, text_)
    return reply.text


def test_settings_time(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Time", "time")
    reply = answer(tg, uid, "7:30")
    assert reply.startswith("Settings") and "daily at 07:30 (UTC)" in reply
    assert prefs(uid)["time"] == "07:30"

    # the prompt is answered: plain text is not a time any more
    assert answer(tg, uid, "08:00") == discuss.IDLE_HINT
    assert prefs(uid)["time"] == "07:30"

    ask(tg, uid, menu, "Time", "time")
    for bad in ("25:99", "7.30", "noon"):  # each refused with the reason, and asked again
        reply = answer(tg, uid, bad)
        assert reply.startswith("⚠️ time must be HH:MM (24-hour)"), reply
        assert reply.endswith(texts.PROMPTS["time"])
        assert prefs(uid)["time"] == "07:30"
    reply = answer(tg, uid, "1:00, 2:00, 3:00")
    assert reply.startswith("⚠️ send one time (HH:MM) or two for twice-daily digests")
    reply = answer(tg, uid, "06:05")  # still asked: a good answer now works
    assert reply.startswith("Settings") and prefs(uid)["time"] == "06:05"

    # twice daily: two times
    tg.press(uid, menu, "Frequency")
    tg.press(uid, tg.current(uid, menu), "twice daily")
    ask(tg, uid, menu, "Time", "time")
    reply = answer(tg, uid, "07:30, 19:15")
    assert "twice daily at 07:30, 19:15 (UTC)" in reply
    stored = prefs(uid)
    assert (stored["frequency"], stored["time"], stored["evening_time"]) == ("twice_daily", "07:30", "19:15")

    ask(tg, uid, menu, "Time", "time")
    reply = answer(tg, uid, "07:30, 24:00")
    assert reply.startswith("⚠️ time must be HH:MM (24-hour)")
    assert prefs(uid)["evening_time"] == "19:15"

    # a command cancels the question
    (help_,) = tg.send(uid, "/help")
    assert help_.text.startswith("HN Pal brings you")
    assert answer(tg, uid, "09:00, 21:00") == discuss.IDLE_HINT
    assert prefs(uid)["time"] == "07:30"


def test_settings_timezone(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Time zone", "timezone")
    reply = answer(tg, uid, "Mars/Base")
    assert reply.startswith("⚠️ unknown time zone 'Mars/Base'; use an IANA name such as Europe/Berlin")
    assert "IANA" in reply
    assert prefs(uid).get("timezone", "UTC") == "UTC"
    reply = answer(tg, uid, "Europe/Berlin")
    assert "daily at 07:00 (Europe/Berlin)" in reply
    assert prefs(uid)["timezone"] == "Europe/Berlin"


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory", "posix/Europe/Berlin", "right/UTC"])
def test_settings_timezone_refuses_files_that_are_not_zones(tg: Stack, name: str) -> None:
    """The zone database holds files that load as zones but are none a person lives in: the server's own
    zone (``localtime``: whatever the host is set to), the POSIX template, the "Factory" placeholder."""
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Time zone", "timezone")
    reply = answer(tg, uid, name)
    assert reply.startswith(f"⚠️ unknown time zone {name!r}; use an IANA name")
    assert prefs(uid).get("timezone", "UTC") == "UTC"


def test_settings_timezone_posix_offsets_are_shown_as_they_are(tg: Stack) -> None:
    """``Etc/GMT+3`` is three hours behind UTC (POSIX signs): the settings say so; a name in another case
    is stored as the database spells it."""
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Time zone", "timezone")
    reply = answer(tg, uid, "etc/gmt+3")
    assert "daily at 07:00 (Etc/GMT+3, UTC\u221203:00)" in reply
    assert prefs(uid)["timezone"] == "Etc/GMT+3"
    ask(tg, uid, tg.send(uid, "/settings")[0], "Time zone", "timezone")
    assert "(Etc/GMT-14, UTC+14:00)" in answer(tg, uid, "Etc/GMT-14")


def test_settings_numbers(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Posts per digest", "max_posts")
    for bad, why in (("0", "a digest holds from 1 to 30 posts"), ("31", "a digest holds from 1 to 30 posts"),
                     ("ten", "that is not a whole number")):  # fmt: skip
        reply = answer(tg, uid, bad)
        assert reply.startswith("⚠️ ") and why in reply, reply
        assert reply.endswith(texts.PROMPTS["max_posts"])  # says again: a number from 1 to 30
        assert prefs(uid).get("max_posts", 10) == 10
    reply = answer(tg, uid, "30")
    assert "Posts per digest: 30" in reply
    assert prefs(uid)["max_posts"] == 30

    ask(tg, uid, menu, "Min score", "min_score")
    reply = answer(tg, uid, "-5")
    assert reply.startswith("⚠️ ") and "a score cannot be negative" in reply
    assert prefs(uid).get("min_score", 0) == 0
    reply = answer(tg, uid, " 150 ")
    assert "minimum score: 150" in reply
    assert prefs(uid)["min_score"] == 150


def test_settings_muted_lists(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Muted keywords", "muted_keywords")
    reply = answer(tg, uid, "Crypto, NFT ,crypto, <script>")
    assert "Muted keywords (3): crypto, nft, <script>" in reply  # lower-cased, deduplicated, escaped for HTML
    assert prefs(uid)["muted_keywords"] == ["crypto", "nft", "<script>"]
    assert "Muted topics" not in reply  # none of them names a topic
    ask(tg, uid, menu, "Muted keywords", "muted_keywords")
    reply = answer(tg, uid, "Rust, llm, nft")
    assert "Muted keywords (3): rust, llm, nft" in reply
    assert "Muted topics (by meaning): Rust, AI" in reply

    ask(tg, uid, menu, "Muted domains", "muted_domains")
    reply = answer(tg, uid, "www.Example.com, foo.org, https://en.wikipedia.org/wiki/X")
    assert "Muted domains (3): example.com, foo.org, wikipedia.org" in reply  # as posts store them
    assert prefs(uid)["muted_domains"] == ["example.com", "foo.org", "wikipedia.org"]

    ask(tg, uid, menu, "Muted keywords", "muted_keywords")
    assert "Muted keywords: —" in answer(tg, uid, "-")
    ask(tg, uid, menu, "Muted domains", "muted_domains")
    assert "Muted domains: —" in answer(tg, uid, " - ")
    stored = prefs(uid)
    assert stored["muted_keywords"] == [] and stored["muted_domains"] == []


def test_settings_typed_interests_are_shown_with_what_they_mean(tg: Stack) -> None:
    uid = tg.new_user()
    (menu,) = tg.send(uid, "/settings")
    ask(tg, uid, menu, "Interests", "interests")
    reply = answer(tg, uid, "computer networking, Compilers ,compilers, sourdough, <b>x</b>")
    # what an interest means is shown when it says more than the interest itself
    assert "Interests: computer networking → Networking, Compilers, sourdough, <b>x</b>" in reply
    (user,) = rows("SELECT interests FROM users WHERE telegram_id = :t", t=uid)
    assert user["interests"] == ["computer networking", "Compilers", "sourdough", "<b>x</b>"]
    with session_scope() as session:
        meant = dict(session.execute(text("SELECT phrase, topics FROM interest_topics")).all())
    assert meant["computer networking"] == ["networking"] and meant["sourdough"] == []
    ask(tg, uid, menu, "Interests", "interests")
    assert "Interests: — (👍/👎 teach me)" in answer(tg, uid, "-")


# --- digests and post buttons -----------------------------------------------------------------------


def test_digest_flat_scroll_and_post_buttons(tg: Stack) -> None:
    posts, floor = make_posts(3)
    uid = make_user(tg, min_score=floor)
    messages = digest(tg, uid, 3)
    assert len(messages) == 3
    rows_ = deliveries(uid)
    assert [r["post_id"] for r in rows_] == [p["id"] for p in posts]  # best first
    assert [r["message_id"] for r in rows_] == [m.message_id for m in messages]
    for n, (message, post) in enumerate(zip(messages, posts, strict=True), start=1):
        assert message.text.startswith(post["title"] + "\nHN discussion\n\n" + post["summary"])
        assert message.text.endswith(f"⬆️ {post['score']} · 💬 {post['comments']} · {n}/3")
        assert labels(message) == ["💬 Discuss", "👍", "👎", "💾 Save"]
        assert {"type": "bold", "offset": 0, "length": len(post["title"])} in message.entities
    stored = one("SELECT g.* FROM digests g JOIN users u ON u.id = g.user_id WHERE u.telegram_id = :t", t=uid)
    assert stored["manual"] and stored["status"] == "sent" and stored["post_count"] == 3

    first, second = messages[0], messages[1]

    def row(message: SentMessage) -> dict[str, Any]:
        return next(r for r in deliveries(uid) if r["message_id"] == message.message_id)

    assert tg.press(uid, first, "👍") == "Noted: more like this 👍"
    assert labels(tg.current(uid, first)) == ["💬 Discuss", "👍✓", "👎", "💾 Save"]
    assert row(first)["reaction"] == "up" and row(first)["reacted_at"] is not None and row(first)["is_read"]

    assert tg.press(uid, first, "👎") == "Noted: less like this 👎"  # replaces 👍
    assert labels(tg.current(uid, first)) == ["💬 Discuss", "👍", "👎✓", "💾 Save"]
    assert row(first)["reaction"] == "down"

    assert tg.press(uid, first, "👎✓") == "Reaction removed"
    assert row(first)["reaction"] is None and row(first)["reacted_at"] is None
    assert labels(tg.current(uid, first)) == ["💬 Discuss", "👍", "👎", "💾 Save"]

    tg.press(uid, first, "👍")
    assert tg.press(uid, first, "👍✓") == "Reaction removed"  # 👍 twice clears
    assert row(first)["reaction"] is None

    assert tg.press(uid, second, "💾 Save") == "Saved 💾 (see /saved)"
    assert row(second)["is_saved"] and row(second)["saved_at"] is not None
    assert labels(tg.current(uid, second)) == ["💬 Discuss", "👍", "👎", "💾✓"]
    (saved,) = tg.send(uid, "/saved")
    assert saved.text.startswith("Saved posts · 1 · page 1/1") and posts[1]["title"] in saved.text
    assert tg.press(uid, second, "💾✓") == "Removed from saved"
    assert not row(second)["is_saved"] and row(second)["saved_at"] is None
    assert labels(tg.current(uid, second)) == ["💬 Discuss", "👍", "👎", "💾 Save"]

    before = len(tg.server.messages(uid))
    snapshot = row(second)
    assert tg.press(uid, second, "💬 Discuss", replies=1) == "Let's discuss it 💬"  # tests/conversations: the rest
    assert tg.server.messages(uid)[before].text.startswith(f"📖 Discussing: {posts[1]['title']}")
    assert row(second) == snapshot
    assert deliveries(uid)[2]["reaction"] is None and not deliveries(uid)[2]["is_saved"]  # the third untouched


def test_brief_digest_expands_in_place(tg: Stack) -> None:
    posts, floor = make_posts(3)
    uid = make_user(tg, min_score=floor)
    (menu,) = tg.send(uid, "/settings")
    tg.press(uid, menu, "Digest style")
    assert tg.press(uid, tg.current(uid, menu), "brief") == "Saved"
    assert prefs(uid)["style"] == "brief"

    (listing,) = digest(tg, uid, 1)
    lines = listing.text.splitlines()
    assert lines[0].startswith("Your HN digest (on request) · ") and lines[0].endswith(" · 3 posts")
    assert lines[2] == f"1. {posts[0]['title']}" and lines[4] == f"2. {posts[1]['title']}"
    assert f"⬆️ {posts[2]['score']} · 💬 {posts[2]['comments']} · {posts[2]['domain']}" in listing.text
    assert labels(listing) == ["1", "2", "3"]
    assert [r["message_id"] for r in deliveries(uid)] == [listing.message_id] * 3
    list_text = listing.text

    count = len(tg.server.messages(uid))
    assert tg.press(uid, listing, "2") is None
    expanded = tg.current(uid, listing)
    assert expanded.text.startswith(posts[1]["title"] + "\nHN discussion\n\n" + posts[1]["summary"])
    assert labels(expanded) == ["💬 Discuss", "👍", "👎", "💾 Save", "1", "·2·", "3", "⬅ Back to the list"]
    assert len(tg.server.messages(uid)) == count  # edited in place: no new message
    assert [r["is_read"] for r in deliveries(uid)] == [False, True, False]

    # a reaction on the expanded post keeps the number buttons
    assert tg.press(uid, listing, "👍") == "Noted: more like this 👍"
    assert labels(tg.current(uid, listing)) == ["💬 Discuss", "👍✓", "👎", "💾 Save", "1", "·2·", "3",
                                                "⬅ Back to the list"]  # fmt: skip
    assert [r["reaction"] for r in deliveries(uid)] == [None, "up", None]

    tg.press(uid, listing, "3")
    assert tg.current(uid, listing).text.startswith(posts[2]["title"])
    assert tg.press(uid, listing, "⬅ Back to the list") is None
    back = tg.current(uid, listing)
    assert back.text == list_text
    assert labels(back) == ["1", "2", "3"]
    assert len(tg.server.messages(uid)) == count  # still the one message


# --- odd updates ------------------------------------------------------------------------------------


def test_non_text_messages_get_a_short_reply(tg: Stack) -> None:
    uid = tg.new_user()
    photo = private_message(tg, uid, photo=[{"file_id": "AgADphoto", "file_unique_id": "AQADp", "width": 90,
                                             "height": 90, "file_size": 1000}], caption="/help")  # fmt: skip
    row = tg.inject({"message": photo}, chat_id=uid, replies=1)
    assert row["status"] == "processed"
    assert tg.server.messages(uid)[-1].text == "I can read text messages and commands only. Try /help."
    sticker = private_message(tg, uid, sticker={"file_id": "CAAC", "file_unique_id": "AgAD", "type": "regular",
                                                "width": 512, "height": 512, "is_animated": False,
                                                "is_video": False})  # fmt: skip
    row = tg.inject({"message": sticker}, chat_id=uid, replies=1)
    assert row["status"] == "processed"
    assert len(tg.server.messages(uid)) == 2
    assert tg.server.messages(uid)[-1].text == "I can read text messages and commands only. Try /help."


def test_edited_message_is_ignored(tg: Stack) -> None:
    uid = tg.new_user()
    sent = tg.server.send_user_message(uid, "hello")
    tg.wait_handled(sent["update_id"])
    tg.wait_messages(uid, 1)
    edited = tg.server.edit_user_message(uid, sent["message"]["message_id"], "/help")
    row = tg.wait_handled(edited["update_id"])
    assert row["status"] == "processed" and row["error"] is None
    assert row["payload"]["edited_message"]["text"] == "/help"
    tg.send(uid, "/pause")  # a later update: nothing was sent for the edit in between
    assert [m.text[:15] for m in tg.server.messages(uid)] == ["Send a command,", "Digests paused."]


def test_unknown_update_kinds_are_processed_silently(tg: Stack) -> None:
    from hnpal.telegram.bot import store_updates

    # The bot asks Telegram only for the update kinds it handles: a poll never reaches it...
    pending = tg.server.pending_updates()
    poll = tg.server.inject_update({"poll": {"id": "1", "question": "?", "options": [], "total_voter_count": 0,
                                             "is_closed": False, "is_anonymous": True, "type": "regular",
                                             "allows_multiple_answers": False}})  # fmt: skip
    assert tg.server.pending_updates() == pending
    assert update_row(poll["update_id"]) is None
    # ...and when one is stored anyway (an older allowed_updates, a manual replay), handling it does nothing.
    update_id = tg.server.first_update_id - 10
    messages_before = len(tg.server.all_messages())
    assert store_updates([{**poll, "update_id": update_id}]).new == [update_id]
    tg.enqueue_handle(update_id)
    row = tg.wait_handled(update_id)
    assert row["status"] == "processed" and row["error"] is None and row["attempts"] == 1
    assert len(tg.server.all_messages()) == messages_before


def test_long_text_is_handled_and_stored_intact(tg: Stack) -> None:
    uid = tg.new_user()
    long_text = "x" * 19_991 + " end. ünï"
    assert len(long_text) == 20_000
    sent = tg.server.send_user_message(uid, long_text)
    row = tg.wait_handled(sent["update_id"])
    assert row["status"] == "processed"
    assert row["payload"]["message"]["text"] == long_text
    assert row["telegram_user_id"] == uid and row["chat_id"] == uid
    (reply,) = tg.wait_messages(uid, 1)
    assert reply.text == discuss.IDLE_HINT

    (reply,) = tg.send(uid, "/" + "a" * 20_000)
    assert reply.text.startswith("I don't know /" + "a" * 40 + ". Here is what I can do:")


def test_group_chats_are_refused(tg: Stack) -> None:
    uid = tg.new_user()
    group = -1_000_000_000_000 - uid
    (reply,) = tg.send(uid, "/digest", chat_type="supergroup", chat_id=group)
    assert reply.chat_id == group
    assert reply.text == "HN Pal works in private chats only: open a chat with me and send /start."
    assert tg.send(uid, "just chatting", chat_type="supergroup", chat_id=group, replies=0) == []
    assert user_row(uid) is None
    assert rows("SELECT id FROM users WHERE telegram_id IN (:a, :b)", a=abs(group), b=uid) == []
    assert (
        rows("SELECT id FROM digests g WHERE g.user_id IN (SELECT id FROM users WHERE telegram_id = :t)", t=uid) == []
    )
    assert tg.server.messages(uid) == []


def test_a_group_hears_the_notice_once_and_commands_for_other_bots_are_ignored(tg: Stack) -> None:
    """A flood of commands in a group: HN Pal's own get the "private chats only" notice once per chat per
    interval (the 21st answer would meet Telegram's 20-a-minute group limit); commands addressed to another
    bot are recorded as ignored, never handled or answered."""
    uid = tg.new_user()
    group = -1_000_000_000_000 - uid
    updates = []
    for n in range(12):
        text_ = ("/help@OtherBot", "/start@hnpal_sandbox_bot", "/x@Other_Bot now", "/digest")[n % 4]
        updates.append(tg.server.send_user_message(uid, text_, chat_type="supergroup", chat_id=group))
    handled = [tg.wait_handled(u["update_id"]) for u in updates]
    assert all(row["status"] == "processed" for row in handled)
    for update, row in zip(updates, handled, strict=True):
        other = "@Other" in update["message"]["text"]
        assert (row["error"] == "ignored: a command for another bot") == other, update["message"]["text"]
        assert (row["attempts"] == 0) == other  # never handed to a worker
    notices = tg.server.messages(group)  # every reply is sent before its update's row is processed
    assert [m.text for m in notices] == [texts.GROUP_NOTICE]
    # another group gets its own notice
    other_group = group - 1
    (reply,) = tg.send(uid, "/help", chat_type="group", chat_id=other_group)
    assert reply.text == texts.GROUP_NOTICE
    assert user_row(uid) is None


# --- hostile and unlucky button presses -------------------------------------------------------------


def test_forged_callbacks_are_rejected(tg: Stack) -> None:
    posts, floor = make_posts(1)
    owner = make_user(tg, min_score=floor)
    (post,) = digest(tg, owner, 1)
    mallory = tg.new_user("Mallory")
    (own,) = tg.send(mallory, "/help")  # a message of Mallory's own to press buttons on
    up = find_button(post, "👍")
    delivery_id = deliveries(owner)[0]["id"]
    before = deliveries(owner)[0]

    # the owner's button data, pressed by someone else (in the owner's chat, or in their own)
    assert tg.press(mallory, post, up, chat_id=owner, check=False) == "This button is not valid for you."
    assert tg.press(mallory, own, up, check=False) == "This button is not valid for you."
    # data validly signed for Mallory, naming the owner's delivery
    for action in ("up", "dn", "sv", "ds"):
        forged = sign(mallory, action, delivery_id)
        assert tg.press(mallory, own, forged, check=False) == "This button is not valid for you."
    # an altered MAC, an altered payload, garbage
    altered = up[:-1] + ("A" if up[-1] != "A" else "B")
    assert tg.press(owner, post, altered, check=False) == "This button is not valid for you."
    other_id = up.replace(f"up:{delivery_id}~", f"up:{delivery_id + 1}~")
    assert tg.press(owner, post, other_id, check=False) == "This button is not valid for you."
    assert tg.press(owner, post, "nonsense", check=False) == "This button is not valid for you."
    # a well-signed button of the owner for an action that does not exist, or with bad arguments
    assert tg.press(owner, post, sign(owner, "zz", 1), check=False) == "This button is no longer supported."
    assert tg.press(owner, post, sign(owner, "up", "x"), check=False) == "This button is not valid."
    assert tg.press(owner, post, sign(owner, "in", 99), check=False) == "This button is not valid."
    assert tg.press(owner, post, sign(owner, "ex", 10**9, 1), check=False) == "This button is not valid for you."

    assert deliveries(owner)[0] == before
    assert labels(tg.current(owner, post)) == ["💬 Discuss", "👍", "👎", "💾 Save"]
    assert user_row(mallory)["status"] == "active"

    # replayed by the owner: every press toggles, none fails
    answers = [tg.press(owner, post, up, check=False) for _ in range(3)]
    assert answers == ["Noted: more like this 👍", "Reaction removed", "Noted: more like this 👍"]
    assert deliveries(owner)[0]["reaction"] == "up"


def test_buttons_on_a_message_that_can_no_longer_be_edited(tg: Stack) -> None:
    """Telegram refuses to edit a message (older than 48 hours, say) with a 400: the button's action is kept
    and the button answered all the same, and what the edit would have shown comes as a fresh message."""
    posts, floor = make_posts(1)
    uid = make_user(tg, min_score=floor)
    (post,) = digest(tg, uid, 1)
    tg.server.set_fault("editMessageReplyMarkup", "bad_request", count=None, description="message can't be edited")
    tg.server.set_fault("editMessageText", "bad_request", count=None, description="message can't be edited")
    try:
        assert tg.press(uid, post, "👍", replies=1) == "Noted: more like this 👍"
        assert deliveries(uid)[0]["reaction"] == "up"
        fresh = tg.server.messages(uid)[-1]
        assert fresh.text.startswith(posts[0]["title"]) and labels(fresh) == ["💬 Discuss", "👍✓", "👎", "💾 Save"]
        assert tg.press(uid, post, "💾 Save", replies=1) == "Saved 💾 (see /saved)"
        assert deliveries(uid)[0]["is_saved"]
        assert labels(tg.server.messages(uid)[-1]) == ["💬 Discuss", "👍✓", "👎", "💾✓"]

        (question,) = tg.send(uid, "/deletemydata")
        assert tg.press(uid, question, "Yes, delete my data", replies=1) == "Account deleted"
        assert tg.server.messages(uid)[-1].text.startswith("🗑 Your account is scheduled for deletion on")
        assert user_row(uid)["status"] == "deleted"
        audit = rows(
            "SELECT a.action FROM audit_log a JOIN users u ON u.id = a.subject_user_id WHERE u.telegram_id = :t",
            t=uid,
        )
        assert [a["action"] for a in audit] == ["account.delete"]
    finally:
        tg.server.clear_faults()
    quarantined = rows(
        "SELECT update_id FROM telegram_updates WHERE telegram_user_id = :t AND status <> 'processed'", t=uid
    )
    assert quarantined == []


def test_blocked_user(tg: Stack) -> None:
    uid = tg.new_user()
    tg.send(uid, "/help")
    tg.server.block(uid)
    refusals = sum(1 for _method, status, _ in tg.server.errors if status == 403)
    # the user writes and blocks the bot before the reply: the reply gets 403
    command = [{"type": "bot_command", "offset": 0, "length": 7}]
    row = tg.inject({"message": private_message(tg, uid, text="/digest", entities=command)})
    # not a poison update: finished (no retry, no quarantine, no apology into a blocked chat), user blocked
    assert (row["status"], row["attempts"]) == ("processed", 1)
    assert row["error"] == "Forbidden: sendMessage: Forbidden: bot was blocked by the user (HTTP 403)"
    assert user_row(uid)["status"] == "blocked"
    assert sum(1 for _method, status, _ in tg.server.errors if status == 403) == refusals + 1
    assert rows("SELECT g.id FROM digests g JOIN users u ON u.id = g.user_id WHERE u.telegram_id = :t", t=uid) == []
    assert len(tg.server.messages(uid)) == 1

    # Telegram's own notice of the block
    other = tg.new_user()
    tg.send(other, "/help")
    row = tg.inject(membership(tg, other, "member", "kicked"))
    assert row["status"] == "processed"
    assert user_row(other)["status"] == "blocked"
    row = tg.inject(membership(tg, other, "kicked", "member"))
    assert row["status"] == "processed"
    assert user_row(other)["status"] == "active"

    # writing again unblocks
    tg.server.unblock(uid)
    (reply,) = tg.send(uid, "/help")
    assert reply.text.startswith("HN Pal brings you")
    assert user_row(uid)["status"] == "active"


def test_poison_updates_are_quarantined(tg: Stack) -> None:
    uid = tg.new_user()
    tg.send(uid, "/help")
    started = datetime.now(UTC)
    sorry = "Sorry, something went wrong with that request. It has been set aside; please try again."
    poisons = [  # (update, an apology can reach the sender)
        ({"message": {**private_message(tg, uid, text="/help"), "chat": [uid, "private"]}}, False),
        ({"message": {**private_message(tg, uid, text="/help"), "from": "mallory"}}, True),
        ({"message": {**private_message(tg, uid, text="/help"), "from": {"id": 10**30, "first_name": "Big"}}}, True),
        ({"callback_query": {"id": "77", "from": ["not", "a", "user"], "data": "up:1~AAAAAAAA"}}, False),
        ({"message": "just a string"}, False),
    ]
    for poison, apology in poisons:
        before = len(tg.server.messages(uid))
        sent = tg.server.inject_update(poison)
        row = tg.wait_handled(sent["update_id"])
        assert row["status"] == "quarantined", row
        assert row["error"] and row["attempts"] == 1
        assert timedelta(days=7) - timedelta(minutes=5) < row["expires_at"] - started < timedelta(days=7, minutes=5)
        assert row["payload"] == sent  # stored as it came, for a look later
        if apology:  # sent after the quarantine is committed
            tg.wait_messages(uid, before + 1)

    # a NUL character (PostgreSQL's JSONB cannot hold one) is stored replaced, and handled normally
    sent = tg.server.send_user_message(uid, "nul\x00byte")
    row = tg.wait_handled(sent["update_id"])
    assert row["status"] == "processed" and row["payload"]["message"]["text"] == "nul\ufffdbyte"

    # and the bot goes on with later updates
    (reply,) = tg.send(uid, "/pause")
    assert reply.text.startswith("Digests paused.")
    assert user_row(uid)["status"] == "paused"
    assert [m.text[:20] for m in tg.server.messages(uid)] == [
        "HN Pal brings you th", sorry[:20], sorry[:20], "Send a command, for ", "Digests paused. /pau",
    ]  # fmt: skip
    assert " raised unexpected" not in tg.worker.log()  # quarantined cleanly: no task crashed on the way


# --- the bot process: write-ahead, resume, webhook ----------------------------------------------------


def test_same_update_stored_twice_is_ignored(tg: Stack) -> None:
    from hnpal.telegram.bot import store_updates

    update_id = tg.server.first_update_id - 20
    first = {"update_id": update_id, "message": {"message_id": 1, "text": "first", "chat": {"id": 5, "type": "private"},
                                                 "from": {"id": 5, "is_bot": False, "first_name": "A"}}}  # fmt: skip
    assert store_updates([first]).new == [update_id]
    assert store_updates([{**first, "message": {**first["message"], "text": "second"}}]).new == []
    assert store_updates([first, first]).new == []
    row = update_row(update_id)
    assert row["payload"]["message"]["text"] == "first" and row["status"] == "received"
    assert row["telegram_user_id"] == 5 and row["chat_id"] == 5
    assert store_updates([{"update_id": -1}, {"update_id": "x"}, {"update_id": 2**63}, {"message": {}}]).new == []
    execute("DELETE FROM telegram_updates WHERE update_id = :u", u=update_id)


def test_updates_wait_for_a_stopped_bot_and_are_handled_once(tg: Stack) -> None:
    uid = tg.new_user()
    tg.stop_bot()
    try:
        sent = [tg.server.send_user_message(uid, text_) for text_ in ("/help", "/pause", "hello")]
        ids = [u["update_id"] for u in sent]
        assert tg.server.pending_updates() >= 3
        assert [update_row(i) for i in ids] == [None, None, None]
    finally:
        tg.start_bot()
    handled = [tg.wait_handled(i) for i in ids]
    assert [(r["status"], r["attempts"]) for r in handled] == [("processed", 1)] * 3
    tg.wait_messages(uid, 3)
    tg.server.wait_until(lambda: tg.server.pending_updates() == 0, 20, "the updates to be confirmed")
    # one more update through the restarted bot: the three were not delivered again in between
    tg.send(uid, "/pause")
    texts = sorted(m.text[:15] for m in tg.server.messages(uid))
    assert texts == sorted(["HN Pal brings y", "Digests paused.", "Send a command,", "Digests resumed"])
    assert len(rows("SELECT update_id FROM telegram_updates WHERE telegram_user_id = :t", t=uid)) == 4

    # a restart resumes after the last stored update: nothing is fetched or handled twice
    tg.stop_bot()
    tg.start_bot()
    tg.send(uid, "/help")
    assert len(tg.server.messages(uid)) == 5
    assert all(r["attempts"] == 1 for r in rows("SELECT attempts FROM telegram_updates WHERE telegram_user_id = :t",
                                                t=uid))  # fmt: skip


def test_webhook_mode(tg: Stack) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/tg/hook"
    secret = f"s3cret_{uuid.uuid4().hex}"
    tg.stop_bot()
    try:
        tg.start_bot(
            HNPAL_TELEGRAM_MODE="webhook",
            HNPAL_TELEGRAM_WEBHOOK_URL=url,
            HNPAL_TELEGRAM_WEBHOOK_LISTEN="127.0.0.1",
            HNPAL_TELEGRAM_WEBHOOK_PORT=str(port),
            HNPAL_TELEGRAM_WEBHOOK_SECRET=secret,
        )
        uid = tg.new_user()
        (reply,) = tg.send(uid, "/help")
        assert reply.text.startswith("HN Pal brings you")
        # The sandbox records a delivery when the bot's answer reaches it, which can be after the worker
        # has already replied (the bot stores and enqueues before answering).
        tg.server.wait_until(lambda: tg.server.webhook_deliveries, timeout=10, what="the webhook delivery")
        deliveries_ = tg.server.webhook_deliveries
        assert deliveries_ and all(d.delivered and d.status == 200 and d.attempts == 1 for d in deliveries_)

        update_id = tg.server.first_update_id - 30
        update = {"update_id": update_id, "message": private_message(tg, uid, text="/pause")}
        with httpx.Client(timeout=10) as client:
            assert client.post(url, json=update).status_code == 403
            assert (
                client.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status_code == 403
            )
            assert update_row(update_id) is None
            good = {"X-Telegram-Bot-Api-Secret-Token": secret}
            assert client.post(url, content=b"{not json", headers=good).status_code == 400
            assert client.post(url, json=[1, 2], headers=good).status_code == 400
            assert client.post(url, json=update, headers=good).status_code == 200
            assert client.post(url, json=update, headers=good).status_code == 200  # a repeat is stored once
        assert tg.wait_handled(update_id)["status"] == "processed"
        tg.wait_messages(uid, 2)
        assert tg.server.messages(uid)[-1].text.startswith("Digests paused.")
        assert user_row(uid)["status"] == "paused"
    finally:
        tg.stop_bot()
        tg.start_bot()  # polling again (deletes the webhook)
    uid = tg.new_user()
    (reply,) = tg.send(uid, "/help")
    assert reply.text.startswith("HN Pal brings you")


def test_webhook_mode_without_a_secret_makes_one_and_refuses_forged_updates(tg: Stack) -> None:
    """Without HNPAL_TELEGRAM_WEBHOOK_SECRET the bot generates a secret and registers it with setWebhook:
    Telegram's own calls carry it and are handled; a forged one (a "kicked" that would stop someone's
    digests, a /pause, an update id ahead of the real ones) is refused and stores nothing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/tg/hook"
    victim = tg.new_user()
    tg.send(victim, "/help")
    tg.stop_bot()
    try:
        tg.start_bot(
            HNPAL_TELEGRAM_MODE="webhook",
            HNPAL_TELEGRAM_WEBHOOK_URL=url,
            HNPAL_TELEGRAM_WEBHOOK_LISTEN="127.0.0.1",
            HNPAL_TELEGRAM_WEBHOOK_PORT=str(port),
            HNPAL_TELEGRAM_WEBHOOK_SECRET="",
        )
        secret = tg.server._webhook["secret_token"]
        assert secret and len(secret) >= 32
        future = tg.server.first_update_id + 10**7
        forged = [
            {"update_id": future, **membership(tg, victim, "member", "kicked")},
            {"update_id": future + 1, "message": private_message(tg, victim, text="/pause")},
        ]
        with httpx.Client(timeout=10) as client:
            for update in forged:
                assert client.post(url, json=update).status_code == 403
                guessed = {"X-Telegram-Bot-Api-Secret-Token": secret[:-1] + ("A" if secret[-1] != "A" else "B")}
                assert client.post(url, json=update, headers=guessed).status_code == 403
                long_guess = {"X-Telegram-Bot-Api-Secret-Token": secret * 3}
                assert client.post(url, json=update, headers=long_guess).status_code == 403
                assert update_row(update["update_id"]) is None
        assert user_row(victim)["status"] == "active"
        (reply,) = tg.send(victim, "/help")  # Telegram's real delivery, with the registered secret
        assert reply.text.startswith("HN Pal brings you")
        assert "HNPAL_TELEGRAM_WEBHOOK_SECRET is not set" in tg.bot.log()
    finally:
        tg.stop_bot()
        tg.start_bot()
    assert user_row(victim)["status"] == "active"


def test_update_ids_restarting_below_the_largest_are_handled(tg: Stack) -> None:
    """After a week without updates Telegram may restart update ids at a random value: updates below the
    largest ever stored are handled (they used to be confirmed away by the stored maximum used as the
    offset), and a finished row of the old sequence older than the dedup window is replaced, not taken for
    a duplicate. The restart is logged."""
    uid = tg.new_user()
    tg.send(uid, "/help")
    low = tg.server.first_update_id - 50_000
    command = [{"type": "bot_command", "offset": 0, "length": 6}]
    tg.server.inject_update({"update_id": low, "message": private_message(tg, uid, text="/pause", entities=command)})
    row = tg.wait_handled(low)
    assert (row["status"], row["attempts"]) == ("processed", 1)
    assert user_row(uid)["status"] == "paused"
    assert tg.server.messages(uid)[-1].text.startswith("Digests paused.")

    # an id the old sequence used nine days ago
    old_id = low + 1
    execute(
        "INSERT INTO telegram_updates (update_id, payload, status, received_at, processed_at) "
        "VALUES (:u, '{}'::jsonb, 'processed', now() - interval '9 days', now() - interval '9 days')",
        u=old_id,
    )
    tg.server.inject_update({"update_id": old_id, "message": private_message(tg, uid, text="/pause", entities=command)})
    tg.wait_until(lambda: update_row(old_id)["payload"] != {}, what="the new update to replace the old row")
    assert tg.wait_handled(old_id)["status"] == "processed"
    assert user_row(uid)["status"] == "active"
    assert "update ids restarted below the largest seen" in tg.bot.log()
    # the sequence goes on from there, and so does the bot
    (reply,) = tg.send(uid, "/help")
    assert reply.text.startswith("HN Pal brings you")


def test_no_flood_control_errors_and_no_crashed_task(tg: Stack) -> None:
    """The bot's limiter (4.5/s per chat against the server's 5, 29/s overall) kept every send within the
    sandbox's limits, and no handle task of the module ended in an unexpected exception (every outcome was a
    recorded status)."""
    assert tg.server.too_many_requests == 0, tg.server.throttled
    assert " raised unexpected" not in tg.worker.log()
