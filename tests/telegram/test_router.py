"""The update router called directly (no bot process, no worker): the follow-up jobs an update asks for,
by task name, and the tables that name every handler."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, select

from hnpal import jobs
from hnpal.db.session import session_scope
from hnpal.deliveries.models import Digest
from hnpal.queues import WAITED_ON
from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.state.store import StateStore
from hnpal.telegram import bot, router
from hnpal.telegram.outbox import TelegramOutbox
from hnpal.users.models import User
from tests.conftest import REDIS_PREFIX

UID = 7_404_200


@pytest.fixture
def telegram(settings_env):
    server = TelegramServer()
    server.start()
    settings_env(
        telegram_token=server.token,
        telegram_base_url=server.base_url,
        redis_key_prefix=f"{REDIS_PREFIX}router-{uuid.uuid4().hex[:6]}:",
    )
    server.add_user(UID, first_name="Ada")
    yield server
    server.stop()
    with session_scope() as session:
        user_id = session.scalar(select(User.id).where(User.telegram_id == UID))
        session.execute(delete(Digest).where(Digest.user_id == user_id))
        session.execute(delete(User).where(User.telegram_id == UID))


def _handle(update: dict) -> jobs.Batch:
    with session_scope() as session:
        return router.handle_update(session=session, out=TelegramOutbox(reply=True), store=StateStore(), update=update)


def test_digest_asks_for_its_send_at_the_waited_on_priority(telegram: TelegramServer) -> None:
    assert _handle(telegram.send_user_message(UID, "/help")).names() == []
    batch = _handle(telegram.send_user_message(UID, "/digest"))
    assert batch.names() == ["hnpal.digests.send"]
    (job,) = batch
    assert job.priority == WAITED_ON
    with session_scope() as session:
        digest = session.get(Digest, job.args[0])
        assert digest is not None and digest.manual
    assert telegram.messages(UID)[-1].text == "Putting your digest together…"


def test_every_command_in_the_bot_menu_has_a_handler() -> None:
    assert {name for name, _ in bot.COMMANDS} <= set(router.COMMANDS)
    assert all(callable(handler) for handler in [*router.COMMANDS.values(), *router.BUTTONS.values()])
