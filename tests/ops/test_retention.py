"""Retention: agent_calls pruned by age in batches, Redis keys with TTLs, quarantine expiring after 7 days."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from hnpal.state import CONTEXT_TTL, FSM_TTL, SESSION_TTL, FsmState, StateStore
from hnpal.telegram.models import TelegramUpdate
from hnpal.usage.models import AgentCall

_ids = itertools.count(int(uuid.uuid4().int % 10_000_000) * 100 + 700_000_000)


def test_prune_deletes_old_agent_calls_in_batches(engine, settings_env) -> None:
    from tasks.ops import prune

    settings_env(agent_calls_retention_days=30, prune_batch_size=100)
    marker = f"prune-test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    ages = [timedelta(days=400)] * 150 + [timedelta(days=31)] * 100 + [timedelta(days=29)] * 7 + [timedelta(0)] * 3
    with Session(engine) as session, session.begin():
        session.add_all(
            AgentCall(agent_type=marker, model="gpt-4o-mini", input_tokens=1, output_tokens=1, called_at=now - age)
            for age in ages
        )
    try:
        result = prune()  # the task's body, as the worker runs it
        with Session(engine) as session:
            left = session.scalars(select(AgentCall.called_at).where(AgentCall.agent_type == marker)).all()
        assert result["agent_calls"] >= 250  # every row older than 30 days (other tests' old rows too)
        assert len(left) == 10
        assert all(now - called_at < timedelta(days=30) for called_at in left)
        print(f"prune: {result['agent_calls']} rows deleted in batches of 100; {len(left)} younger rows kept")
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(AgentCall).where(AgentCall.agent_type == marker))


def test_prune_runs_daily_on_the_default_queue() -> None:
    from celery.schedules import crontab

    from hnpal.celery import app

    entries = [e for e in app.conf.beat_schedule.values() if e["task"] == "hnpal.ops.prune"]
    assert len(entries) == 1 and isinstance(entries[0]["schedule"], crontab)
    app.loader.import_default_modules()
    assert app.tasks["hnpal.ops.prune"].queue == "default"


def test_every_state_key_expires(redis_client, key_prefix: str) -> None:
    """Everything HN Pal keeps in Redis outside the broker has a TTL no longer than designed (the 429
    counter of the metrics is the one key meant to last)."""
    from hnpal.ops.metrics import TELEGRAM_429_KEY, count_telegram_429
    from hnpal.telegram.ratelimit import SendLimiter
    from tests.conftest import REDIS_URL

    store = StateStore(redis_client, prefix=key_prefix)
    assert store.set_fsm(41, FsmState()) and store.set_session(41, {"id": 1}) and store.set_context(41, 5, {})
    limiter = SendLimiter(overall_rate=30, chat_rate=1, redis_url=REDIS_URL, prefix=key_prefix)
    limiter.acquire(41, max_wait=5)
    limiter.penalize(3.0)
    limiter.penalize(2.0, chat_id=41)
    count_telegram_429(redis_client, prefix=key_prefix)

    designed = {"fsm:": FSM_TTL, "session:": SESSION_TTL, "context:": CONTEXT_TTL, "ratelimit:": 10}
    keys = sorted(redis_client.scan_iter(match=f"{key_prefix}*"))
    assert len(keys) >= 6, keys
    for key in keys:
        name = key[len(key_prefix) :]
        ttl = redis_client.ttl(key)
        if name == TELEGRAM_429_KEY:
            assert ttl == -1
            continue
        limit = next((v for k, v in designed.items() if name.startswith(k)), None)
        assert limit is not None, f"unexpected key {name}"
        assert 0 < ttl <= limit, (name, ttl)
    print(f"redis: {len(keys)} keys checked, each with its designed TTL")


def test_quarantined_updates_expire_after_seven_days(engine) -> None:
    from tasks.telegram import sweep

    old, fresh, done = next(_ids), next(_ids), next(_ids)
    with Session(engine) as session, session.begin():
        session.add_all(
            [
                TelegramUpdate(
                    update_id=old,
                    payload={},
                    status="quarantined",
                    error="x",
                    expires_at=text("now() - interval '1 minute'"),
                ),
                TelegramUpdate(
                    update_id=fresh,
                    payload={},
                    status="quarantined",
                    error="x",
                    expires_at=text("now() + interval '7 days'"),
                ),
                TelegramUpdate(
                    update_id=done, payload={}, status="processed", processed_at=text("now() - interval '8 days'")
                ),
            ]  # fmt: skip
        )
    try:
        sweep()
        with Session(engine) as session:
            left = set(session.scalars(select(TelegramUpdate.update_id).where(TelegramUpdate.update_id.in_(
                [old, fresh, done]))))  # fmt: skip
        assert left == {fresh}
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(TelegramUpdate).where(TelegramUpdate.update_id.in_([old, fresh, done])))


def test_quarantine_expiry_is_seven_days() -> None:
    from hnpal.telegram import updates

    expiry = updates.quarantine_expiry()
    assert timedelta(days=7) - timedelta(minutes=1) < expiry - datetime.now(UTC) <= timedelta(days=7)


def test_a_lost_workers_reservation_stops_counting_and_is_pruned(engine, settings_env) -> None:
    """A reservation left by a worker that died mid-call holds its part of the day's budget only until
    it expires; the daily prune deletes it."""
    from decimal import Decimal

    from hnpal.llm.service import spent_today
    from hnpal.usage import allowance
    from hnpal.usage.models import LLMReservation
    from tasks.ops import prune

    settings_env(llm_daily_budget_usd=str(spent_today() + Decimal("1")))
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        lost = LLMReservation(scope="global", usd=Decimal("0.9"), expires_at=now + timedelta(minutes=5))
        session.add(lost)
        session.flush()
        lost_id = lost.id
    try:
        assert allowance.reserve_budget(Decimal("0.2")) is None  # the lost call still holds its part
        with Session(engine) as session, session.begin():
            session.execute(
                text("UPDATE llm_reservations SET expires_at = now() - interval '1 second' WHERE id = :i"),
                {"i": lost_id},
            )
        held = allowance.reserve_budget(Decimal("0.2"))
        assert held is not None
        allowance.release(held)
        assert prune()["llm_reservations"] >= 1
        with Session(engine) as session:
            assert session.get(LLMReservation, lost_id) is None
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(LLMReservation).where(LLMReservation.id == lost_id))
