"""Every view within Telegram's 4096 characters, rendered at its maximum and sent to the Telegram sandbox
(which counts like Telegram: UTF-16 code units of the text after entity parsing, and refuses more)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from hnpal.db.session import session_scope
from hnpal.deliveries.models import Delivery
from hnpal.memory.models import MAX_MEMORY_CHARS, MEMORY_TYPES, Memory
from hnpal.posts.models import Post
from hnpal.sandbox.telegram_api import MAX_TEXT_UTF16, TelegramServer, parse_html, utf16_len
from hnpal.state.store import StateStore
from hnpal.telegram import render
from hnpal.telegram.callbacks import sign
from hnpal.telegram.outbox import TelegramOutbox
from hnpal.telegram.router import handle_update
from hnpal.users.models import User
from tests.conftest import REDIS_PREFIX

UID = 7_404_096
HN_BASE = 7_404_100
WIDE = "😀"  # one character, two UTF-16 units: the widest input a 100-character field takes


def _word(n: int) -> str:
    return f"{n:02d}" + WIDE * 98  # 100 characters, 198 units


@pytest.fixture
def telegram(settings_env):
    server = TelegramServer()
    server.start()
    settings_env(
        telegram_token=server.token,
        telegram_base_url=server.base_url,
        redis_key_prefix=f"{REDIS_PREFIX}limits-{uuid.uuid4().hex[:6]}:",
    )
    server.add_user(UID, first_name=WIDE * 64)
    yield server
    server.stop()
    with session_scope() as session:
        user_id = session.scalar(select(User.id).where(User.telegram_id == UID))
        session.execute(Delivery.__table__.delete().where(Delivery.user_id == user_id))
        session.execute(User.__table__.delete().where(User.telegram_id == UID))
        session.execute(Post.__table__.delete().where(Post.hn_id.between(HN_BASE, HN_BASE + 99)))


def _handle(server: TelegramServer, update: dict) -> None:
    with session_scope() as session:
        handle_update(session=session, out=TelegramOutbox(reply=True), store=StateStore(), update=update)


def test_every_view_at_its_maximum_fits(telegram: TelegramServer) -> None:
    words = [_word(n) for n in range(50)]
    _handle(telegram, telegram.send_user_message(UID, "/start"))
    with session_scope() as session:
        user = session.scalar(select(User).where(User.telegram_id == UID))
        user.interests = words
        user.digest_preferences = {
            **user.digest_preferences,
            "muted_keywords": words,
            "muted_domains": [f"{n:02d}" + "x" * 88 + ".example" for n in range(50)],  # kept whole
        }
        # bookmarks and memories at their longest
        posts = [
            Post(hn_id=HN_BASE + n, type="story", title=WIDE * 500, url="https://example.com/" + "p" * 2000)
            for n in range(12)
        ]
        session.add_all(posts)
        session.flush()
        now = datetime.now(UTC)
        session.add_all(Delivery(user_id=user.id, post_id=p.id, is_saved=True, saved_at=now) for p in posts)
        session.add_all(
            Memory(user_id=user.id, type=MEMORY_TYPES[n % len(MEMORY_TYPES)], content=WIDE * MAX_MEMORY_CHARS)
            for n in range(60)
        )
    for command in (
        "/settings",
        "/help",
        "/token",
        "/saved",
        "/memory",
        "/memory forget",
        "/nosuchcommand " + WIDE * 2000,
    ):
        _handle(telegram, telegram.send_user_message(UID, command))
    # the interests view once onboarding is done (50 interests of 100 wide characters)
    start = next(m for m in telegram.messages(UID) if m.reply_markup)
    _handle(telegram, telegram.press_button(UID, start.message_id, sign(UID, "it", "done"), check=False))
    # a settings answer that is refused quotes it
    _handle(telegram, telegram.send_user_message(UID, "/settings"))
    menu = telegram.messages(UID)[-1]
    _handle(telegram, telegram.press_button(UID, menu.message_id, sign(UID, "st", "max_posts")))
    _handle(telegram, telegram.send_user_message(UID, WIDE * 4000))
    sent = telegram.messages(UID)
    assert len(sent) >= 10
    refused = [(m, s) for m, s in telegram.request_log if s >= 400]
    assert not refused, refused
    assert all(utf16_len(m.text) <= MAX_TEXT_UTF16 for m in sent)
    settings_text = next(m.text for m in sent if m.text.startswith("Settings"))
    assert "Muted keywords (50):" in settings_text and "Muted domains (50):" in settings_text


def test_digest_cards_at_their_maximum_fit() -> None:
    card = render.PostCard(
        delivery_id=1,
        hn_id=2**40,
        title=WIDE * 500,
        url="https://example.com/" + "a" * 8000,
        domain=None,
        score=2**31 - 1,
        comments=2**31 - 1,
        summary=(WIDE + " ") * 5000,
        position=30,
        total=30,
    )
    brief = render.brief_message([card] * 30, WIDE * 200)
    for markup in (render.post_message(card), brief):
        plain, _entities = parse_html(markup)
        assert utf16_len(plain) <= MAX_TEXT_UTF16
