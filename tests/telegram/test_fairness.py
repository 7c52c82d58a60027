"""One user cannot make everyone else wait: each user's (and group's) updates are charged to a budget in
the bot process, and a flood waits in its sender's own line ('deferred'), in order, with nothing lost.

Through the real bot process, a real worker and the sandbox Bot API, with a small budget (2 updates a
second after a burst of 3) so that a flood of a few dozen updates is enough."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hnpal.telegram.fairness import Budget
from hnpal.telegram.texts import OVER_BUDGET
from tests.conftest import execute, one, rows
from tests.telegram.conftest import Stack, running_stack

pytestmark = pytest.mark.slow

RATE, BURST = 2, 3


@pytest.fixture(scope="module")
def tg() -> Iterator[Stack]:
    with running_stack(
        HNPAL_TELEGRAM_USER_UPDATE_RATE=str(RATE),
        HNPAL_TELEGRAM_USER_UPDATE_BURST=str(BURST),
        HNPAL_TELEGRAM_GROUP_UPDATE_RATE=str(RATE),
        HNPAL_TELEGRAM_GROUP_UPDATE_BURST=str(BURST),
    ) as stack:
        yield stack


def statuses(telegram_id: int) -> list[str]:
    return [
        r["status"]
        for r in rows(
            "SELECT status FROM telegram_updates WHERE telegram_user_id = :t ORDER BY update_id", t=telegram_id
        )
    ]


def test_budget_lets_a_burst_through_then_spaces_the_rest(redis_client, key_prefix: str) -> None:
    """The charge itself: a burst goes at once, the rest is spaced ``1 / rate`` apart; a group's members share
    the group's budget; another user's budget is untouched."""
    budget = Budget(user_rate=1.0, user_burst=2, group_rate=1.0, group_burst=1, prefix=key_prefix)
    waits = budget.charge(redis_client, [(11, 11)] * 6)
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == [pytest.approx(1.0, abs=0.1), pytest.approx(2.0, abs=0.1), pytest.approx(3.0, abs=0.1)]
    assert budget.charge(redis_client, [(12, 12)]) == [0.0]
    group = budget.charge(redis_client, [(21, -500), (22, -500), (23, -500), (24, 24)])
    assert group[:2] == [0.0, 0.0] and group[2] == pytest.approx(1.0, abs=0.1) and group[3] == 0.0


def test_a_flood_from_one_user_waits_in_its_own_line(tg: Stack) -> None:
    """40 commands at once from one user: a burst is handled, the rest is deferred (stored, with the reason)
    and handled later in order, while other users' commands are answered at once. The flooder hears once
    why; every one of their updates is answered in the end."""
    flooder = tg.new_user("Flood")
    others = [tg.new_user(f"User{n}") for n in range(3)]
    sent = [tg.server.send_user_message(flooder, "/help") for _ in range(40)]
    ids = [u["update_id"] for u in sent]
    tg.wait_until(lambda: len(statuses(flooder)) == 40, what="the flood to be stored")
    for uid in others:  # answered while the flood still waits
        (reply,) = tg.send(uid, "/help")
        assert reply.text.startswith("HN Pal brings you")
    waiting = statuses(flooder).count("deferred")
    assert waiting > 20, statuses(flooder)
    deferred = one(
        "SELECT error, deferred_until > received_at AS later FROM telegram_updates "
        "WHERE telegram_user_id = :t AND status = 'deferred' ORDER BY update_id LIMIT 1",
        t=flooder,
    )
    assert deferred == {"error": "deferred: over the sender's update budget", "later": True}

    for update_id in ids:  # nothing lost: every one handled, in the order sent
        assert tg.wait_handled(update_id, timeout=60)["status"] == "processed"
    handled = rows(
        "SELECT update_id FROM telegram_updates WHERE telegram_user_id = :t ORDER BY processed_at, update_id",
        t=flooder,
    )
    assert [r["update_id"] for r in handled] == ids
    texts = [m.text for m in tg.server.messages(flooder)]
    notices = [t for t in texts if t.startswith("You're sending messages faster")]
    assert len(notices) == 1 and "in order" in notices[0]
    assert OVER_BUDGET.split("{")[0] in notices[0]
    assert sum(t.startswith("HN Pal brings you") for t in texts) == 40


def test_a_deferred_update_whose_task_was_lost_is_swept(tg: Stack) -> None:
    """A deferred update still waiting a minute after its time (its task lost with a worker, or deferred
    beyond the longest countdown) is enqueued by the sweep."""
    uid = tg.new_user()
    update = tg.server.send_user_message(uid, "/help")
    tg.wait_handled(update["update_id"])
    lost = update["update_id"] + 10**6  # an id of its own, never fetched by the bot
    execute(
        "INSERT INTO telegram_updates (update_id, payload, status, telegram_user_id, chat_id, deferred_until) "
        "VALUES (:u, CAST(:p AS jsonb), 'deferred', :t, :t, now() - interval '5 minutes')",
        u=lost,
        p=json.dumps({**update, "update_id": lost}),
        t=uid,
    )
    _send(tg, "hnpal.telegram.sweep", queue="default")
    assert tg.wait_handled(lost)["status"] == "processed"
    assert len(tg.server.messages(uid)) == 2


def _send(tg: Stack, name: str, *, queue: str) -> None:
    from celery import Celery

    from hnpal.runtime import broker_url

    client = Celery("hnpal-test-client", broker=broker_url(), set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": tg.env["HNPAL_REDIS_KEY_PREFIX"]}
    try:
        client.send_task(name, queue=queue)
    finally:
        client.close()
