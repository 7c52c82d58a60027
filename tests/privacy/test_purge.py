"""Deletion, the grace period and the purge, on the real PostgreSQL and Redis: after the purge nothing of
the user is left but an anonymized audit entry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from hnpal.db.session import session_scope
from hnpal.privacy import service
from hnpal.state.store import FsmState, StateStore
from hnpal.users.models import User
from tasks.privacy import purge as purge_task
from tests.memory.conftest import Factory, execute, one, rows

USER_TABLES = ("deliveries", "digests", "conversations", "memory", "user_token_usage")


def populate(make: Factory, user: dict) -> None:
    """A user with a row in every table that refers to them."""
    post = make.post("Everything about me")
    make.delivery(user, post, reaction="up", saved=True)
    make.conversation(user, post, [("user", "I like Rust."), ("assistant", "Noted.")])
    make.memory(user, "Rust")
    execute(
        "INSERT INTO digests (user_id, batch_id, status) VALUES (:u, '2026-01-01-morning', 'pending')", u=user["id"]
    )
    execute(
        "INSERT INTO user_token_usage (user_id, date, total_input_tokens) VALUES (:u, current_date, 5)", u=user["id"]
    )
    execute(
        "INSERT INTO agent_calls (user_id, agent_type, model, input_tokens) VALUES (:u, 'memory_extraction', 'm', 5)",
        u=user["id"],
    )
    execute(
        "INSERT INTO telegram_updates (update_id, payload, status, telegram_user_id, chat_id) "
        "VALUES (:id, CAST(:p AS jsonb), 'processed', :t, :t)",
        id=user["telegram_id"] * 10,
        p=json.dumps({"message": {"text": "hello", "from": {"first_name": user["first_name"]}}}),
        t=user["telegram_id"],
    )


def counts(user_id: int) -> dict[str, int]:
    sql = "SELECT count(*) AS n FROM {} WHERE user_id = :u"  # the tables are the constants above
    return {t: one(sql.format(t), u=user_id)["n"] for t in USER_TABLES}


def delete(user: dict, store: StateStore) -> datetime:
    with session_scope() as session:
        return service.delete_account(session=session, store=store, user=session.get(User, user["id"]))


@pytest.fixture
def store(key_prefix: str) -> StateStore:
    return StateStore(prefix=key_prefix)


def test_delete_stops_deliveries_and_forgets_redis_keys(make: Factory, store: StateStore, redis_client) -> None:
    user, other = make.user(), make.user()
    populate(make, user)
    post = make.post()
    cid = make.conversation(user, post, [("user", "hi")], ended=False)
    execute("UPDATE users SET active_discussion_post_id = :h WHERE id = :u", h=post["hn_id"], u=user["id"])
    # the pending digest's batch: one post already sent, one reserved and not sent yet
    sent, unsent = make.delivery(user, make.post()), make.delivery(user, make.post(), message_id=None)
    execute("UPDATE deliveries SET batch_id = '2026-01-01-morning' WHERE id IN (:a, :b)", a=sent, b=unsent)
    for who in (user, other):
        tid = who["telegram_id"]
        store.set_fsm(tid, FsmState())
        store.set_session(tid, {"x": 1})
        store.set_context(tid, post["hn_id"], {"article": "..."})
    purge_on = delete(user, store)
    row = one("SELECT * FROM users WHERE id = :u", u=user["id"])
    assert row["status"] == "deleted" and row["deleted_at"] is not None and row["active_discussion_post_id"] is None
    assert purge_on.date() == (row["deleted_at"] + timedelta(days=30)).date()
    digest = one("SELECT status, error FROM digests WHERE user_id = :u", u=user["id"])
    assert digest == {"status": "failed", "error": service.DELETED_DIGEST_ERROR}
    # the unsent reservation is released (a restored account gets that post later); the sent one stays
    left = {r["id"] for r in rows("SELECT id FROM deliveries WHERE id IN (:a, :b)", a=sent, b=unsent)}
    assert left == {sent}
    conversation = one("SELECT ended_at, end_reason FROM conversations WHERE id = :c", c=cid)
    assert conversation["ended_at"] is not None and conversation["end_reason"] == "deleted"
    assert list(redis_client.scan_iter(match=f"{store.prefix}*:{user['telegram_id']}*")) == []
    assert len(list(redis_client.scan_iter(match=f"{store.prefix}*:{other['telegram_id']}*"))) == 3
    audit = one("SELECT * FROM audit_log WHERE subject_user_id = :u AND action = 'account.delete'", u=user["id"])
    assert audit["actor_type"] == "user" and audit["actor_id"] == user["id"]
    assert audit["subject_ref"] == service.subject_ref(user["telegram_id"]) and len(audit["subject_ref"]) == 64
    assert audit["details"]["digests_stopped"] == 1 and audit["details"]["redis_keys_deleted"] == 3


def test_restore_within_grace(make: Factory, store: StateStore) -> None:
    user = make.user()
    populate(make, user)
    delete(user, store)
    with session_scope() as session:
        service.restore_account(session=session, user=session.get(User, user["id"]))
    row = one("SELECT status, deleted_at FROM users WHERE id = :u", u=user["id"])
    assert row == {"status": "active", "deleted_at": None}
    assert counts(user["id"])["memory"] == 1
    actions = [
        r["action"] for r in rows("SELECT action FROM audit_log WHERE subject_user_id = :u ORDER BY id", u=user["id"])
    ]
    assert actions == ["account.delete", "account.restore"]


def test_purge_after_grace_leaves_only_an_anonymous_audit_entry(make: Factory, store: StateStore) -> None:
    expired, recent, active = make.user(first_name="Zelda"), make.user(), make.user()
    for user in (expired, recent, active):
        populate(make, user)
    delete(expired, store)
    delete(recent, store)
    execute("UPDATE users SET deleted_at = now() - interval '31 days' WHERE id = :u", u=expired["id"])
    execute("UPDATE users SET deleted_at = now() - interval '29 days' WHERE id = :u", u=recent["id"])
    before = rows("SELECT id FROM audit_log WHERE subject_user_id = :u", u=expired["id"])

    result = purge_task()  # the beat task, run in-process
    assert result["users"] >= 1

    assert one("SELECT id FROM users WHERE id = :u", u=expired["id"]) is None
    assert counts(expired["id"]) == dict.fromkeys(USER_TABLES, 0)
    assert (
        one("SELECT count(*) AS n FROM telegram_updates WHERE telegram_user_id = :t", t=expired["telegram_id"])["n"]
        == 0
    )
    assert one("SELECT count(*) AS n FROM agent_calls WHERE user_id = :u", u=expired["id"])["n"] == 0
    # Earlier audit rows stay, no longer pointing at anyone; the purge adds one, anonymous.
    kept = rows("SELECT * FROM audit_log WHERE id = ANY(:ids)", ids=[r["id"] for r in before])
    assert kept and all(r["subject_user_id"] is None for r in kept)
    purge_row = one(
        "SELECT * FROM audit_log WHERE action = 'account.purge' AND subject_ref = :r",
        r=service.subject_ref(expired["telegram_id"]),
    )
    assert (
        purge_row["actor_type"] == "system" and purge_row["actor_id"] is None and purge_row["subject_user_id"] is None
    )
    assert purge_row["details"]["rows"]["memory"] == 1 and purge_row["details"]["rows"]["deliveries"] == 1
    for row in [*kept, purge_row]:
        flat = json.dumps(row, default=str)
        assert (
            str(expired["telegram_id"]) not in flat
            and "Zelda" not in flat
            and f"user{expired['telegram_id']}" not in flat
        )

    # Within the grace period, and not deleted at all: untouched.
    assert one("SELECT status FROM users WHERE id = :u", u=recent["id"])["status"] == "deleted"
    assert counts(recent["id"])["memory"] == 1
    assert one("SELECT status FROM users WHERE id = :u", u=active["id"])["status"] == "active"
    assert counts(active["id"])["deliveries"] == 1

    again = purge_task()  # idempotent: nothing more to do for these users
    assert one("SELECT count(*) AS n FROM audit_log WHERE subject_ref = :r AND action = 'account.purge'",
               r=service.subject_ref(expired["telegram_id"]))["n"] == 1  # fmt: skip
    assert again["users"] == 0


def test_subject_ref_is_keyed(settings_env) -> None:
    settings_env(privacy_audit_salt="one")
    first = service.subject_ref(42)
    settings_env(privacy_audit_salt="two")
    assert service.subject_ref(42) != first
    assert service.subject_ref(42) != service.subject_ref(43)
    assert "42" not in first


def test_purge_is_scheduled_on_the_default_queue() -> None:
    import celeryconfig

    entry = next(e for e in celeryconfig.beat_schedule.values() if e["task"] == "hnpal.privacy.purge")
    assert entry["schedule"] == 3600.0
    from hnpal.celery import app

    app.loader.import_default_modules()
    assert app.tasks["hnpal.privacy.purge"].queue == "default"
    assert app.tasks["hnpal.memory.extract"].queue == "llm"
