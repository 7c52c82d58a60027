"""The outbox of one reply finishes a reply it has started: a 429 in the middle of it is waited out in
place, so the task's retry does not send the reply again from its first message. Against the sandbox Bot
API and a limiter on the real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.telegram.client import RetryAfter, close_clients
from hnpal.telegram.outbox import TelegramOutbox

CHAT = 4242


@pytest.fixture
def tg() -> Iterator[TelegramServer]:
    with TelegramServer(enforce_limits=False) as server:
        server.add_user(CHAT, "Ada")
        yield server
    close_clients()


@pytest.fixture
def make_outbox(tg: TelegramServer, settings_env, key_prefix: str):  # type: ignore[no-untyped-def]
    from hnpal.telegram.ratelimit import clear_cache

    settings_env(telegram_token=tg.token, telegram_base_url=tg.base_url, redis_key_prefix=key_prefix,
                 telegram_chat_rate="30", telegram_global_rate="1000")  # fmt: skip
    clear_cache()

    def make(*, reply: bool) -> TelegramOutbox:
        outbox = TelegramOutbox(reply=reply)
        outbox.max_inline_retry = 1.0  # so the sandbox's shortest retry_after (2 s here) counts as long
        return outbox

    yield make
    clear_cache()


def texts(tg: TelegramServer) -> list[str]:
    return [m.text for m in tg.messages(CHAT)]


def test_a_started_reply_waits_out_a_long_429_and_sends_each_message_once(tg, make_outbox) -> None:  # type: ignore[no-untyped-def]
    outbox = make_outbox(reply=True)
    tg.set_fault("sendMessage", "too_many_requests", skip=1, retry_after=2)
    outbox.send(CHAT, "part one")
    outbox.send(CHAT, "part two")  # refused once with 429, then sent here
    assert texts(tg) == ["part one", "part two"]
    assert [status for method, status in tg.request_log if method == "sendMessage"] == [200, 429, 200]


def test_a_reply_not_started_goes_back_to_its_task(tg, make_outbox) -> None:  # type: ignore[no-untyped-def]
    """Nothing of it is out, so the task's retry repeats nothing: the worker's thread is not held."""
    outbox = make_outbox(reply=True)
    tg.set_fault("sendMessage", "too_many_requests", retry_after=2)
    with pytest.raises(RetryAfter):
        outbox.send(CHAT, "part one")
    assert texts(tg) == []


def test_an_edit_does_not_start_a_reply(tg, make_outbox) -> None:  # type: ignore[no-untyped-def]
    """Edits are safe to repeat: after one, a long 429 on the first new message still goes to the task."""
    message = make_outbox(reply=False).send(CHAT, "a button's message")
    outbox = make_outbox(reply=True)
    outbox.edit(CHAT, message["message_id"], "edited")
    tg.set_fault("sendMessage", "too_many_requests", retry_after=2)
    with pytest.raises(RetryAfter):
        outbox.send(CHAT, "the reply")
    assert texts(tg) == ["edited"]


@pytest.mark.parametrize("reply", [False, True], ids=["digest sender", "reply over its limit"])
def test_a_long_429_after_the_first_message_goes_back_to_the_task(tg, make_outbox, reply: bool) -> None:  # type: ignore[no-untyped-def]
    """A digest sender records each message before the next, so its task resumes where it stopped; a
    started reply waits out no more than ``max_started_wait``."""
    outbox = make_outbox(reply=reply)
    outbox.max_started_wait = 1.0
    tg.set_fault("sendMessage", "too_many_requests", skip=1, retry_after=2)
    outbox.send(CHAT, "one")
    with pytest.raises(RetryAfter):
        outbox.send(CHAT, "two")
    assert texts(tg) == ["one"]


def test_the_reply_tasks_use_reply_outboxes(settings_env, tg) -> None:  # type: ignore[no-untyped-def]
    from hnpal.telegram.updates import reply_outbox

    settings_env(telegram_token=tg.token, telegram_base_url=tg.base_url)
    assert reply_outbox().reply is True
    assert TelegramOutbox().reply is False  # digests and courtesy notices


def test_a_groups_429_holds_only_that_group(make_outbox, settings_env) -> None:  # type: ignore[no-untyped-def]
    """Telegram's 20-a-minute group limit answers 429 with a long wait: that group waits it out, every other
    chat's replies go on (the wait used to be applied to every sender)."""
    with TelegramServer(enforce_limits=True) as server:
        server.set_limits(global_rate=30, per_chat_rate=30, group_rate=3)
        group = -100_777
        server.add_group(group, chat_type="supergroup")
        server.add_user(CHAT, "Ada")
        settings_env(telegram_token=server.token, telegram_base_url=server.base_url)
        outbox = make_outbox(reply=False)
        for n in range(3):
            outbox.send(group, f"group {n}")
        with pytest.raises(RetryAfter) as refused:
            outbox.send(group, "one too many")  # the group's fourth in a minute
        assert refused.value.retry_after > 5
        assert [t.scope for t in server.throttled] == ["group"]
        assert outbox.limiter.blocked_for() == 0.0  # nobody else is held
        assert outbox.limiter.blocked_for(group) > 5
        assert outbox.send(CHAT, "a private reply goes out")["chat"]["id"] == CHAT
        assert server.throttled[-1].chat_id == group and len(server.throttled) == 1
    close_clients()


def test_429s_in_several_chats_at_once_hold_every_sender(make_outbox, tg: TelegramServer) -> None:  # type: ignore[no-untyped-def]
    """429s for two different chats within a moment: that is the bot's overall limit, and every sender waits."""
    other = CHAT + 1
    tg.add_user(other, "Bob")
    outbox = make_outbox(reply=False)
    tg.set_fault("sendMessage", "too_many_requests", count=2, retry_after=7)
    with pytest.raises(RetryAfter):
        outbox.send(CHAT, "one")
    assert outbox.limiter.blocked_for() == 0.0 and outbox.limiter.blocked_for(CHAT) > 5
    with pytest.raises(RetryAfter):
        outbox.send(other, "two")
    assert outbox.limiter.blocked_for() > 5
