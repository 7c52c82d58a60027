"""Redis state against the real Redis, and the PostgreSQL fallback when Redis is gone."""

from __future__ import annotations

import json

import redis as redis_lib
from sqlalchemy.orm import Session

from hnpal.posts.models import Post
from hnpal.state import CONTEXT_TTL, FSM_TTL, SESSION_TTL, BotState, FsmState, StateStore
from hnpal.state.service import current_state, set_state
from hnpal.users.models import User

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_keys_values_and_ttls(redis_client: redis_lib.Redis, key_prefix: str) -> None:
    store = StateStore(redis_client, prefix=key_prefix)
    assert store.set_fsm(7, FsmState(state=BotState.DISCUSSION, data={"active_post_id": 99}))
    assert store.set_session(7, {"id": 1, "interests": ["rust"]})
    assert store.set_context(7, 99, {"article_markdown": "# hi"})

    assert json.loads(redis_client.get(f"{key_prefix}fsm:7:state")) == {
        "state": "DISCUSSION",
        "data": {"active_post_id": 99},
    }
    assert 0 < redis_client.ttl(f"{key_prefix}fsm:7:state") <= FSM_TTL
    assert 0 < redis_client.ttl(f"{key_prefix}session:7") <= SESSION_TTL
    assert 0 < redis_client.ttl(f"{key_prefix}context:7:99") <= CONTEXT_TTL
    assert FSM_TTL == 3600 and SESSION_TTL == CONTEXT_TTL == 1800

    assert store.get_fsm(7) == FsmState(state=BotState.DISCUSSION, data={"active_post_id": 99})
    assert store.get_session(7) == {"id": 1, "interests": ["rust"]}
    assert store.get_context(7, 99) == {"article_markdown": "# hi"}
    assert store.get_context(7, 100) is None


def test_every_key_has_a_ttl(redis_client: redis_lib.Redis, key_prefix: str) -> None:
    store = StateStore(redis_client, prefix=key_prefix)
    store.set_fsm(1, FsmState())
    store.set_session(1, {})
    store.set_context(1, 2, {})
    keys = list(redis_client.scan_iter(match=f"{key_prefix}*"))
    assert len(keys) == 3
    assert all(redis_client.ttl(k) > 0 for k in keys)


def test_malformed_values_are_dropped(redis_client: redis_lib.Redis, key_prefix: str) -> None:
    store = StateStore(redis_client, prefix=key_prefix)
    redis_client.set(f"{key_prefix}fsm:5:state", "{not json", ex=60)
    assert store.get_fsm(5) is None
    assert redis_client.exists(f"{key_prefix}fsm:5:state") == 0
    redis_client.set(f"{key_prefix}fsm:6:state", json.dumps({"state": "FLYING"}), ex=60)
    assert store.get_fsm(6) is None


def test_delete_user_keys_uses_exact_id_parts(redis_client: redis_lib.Redis, key_prefix: str) -> None:
    store = StateStore(redis_client, prefix=key_prefix)
    for tid in (12, 123):
        store.set_fsm(tid, FsmState())
        store.set_session(tid, {"x": 1})
        store.set_context(tid, 5, {"y": 2})
    store.set_context(77, 12, {"post 12 of another user": True})
    assert store.delete_user_keys(12) == 3
    remaining = sorted(k[len(key_prefix) :] for k in redis_client.scan_iter(match=f"{key_prefix}*"))
    assert remaining == ["context:123:5", "context:77:12", "fsm:123:state", "session:123"]


def test_redis_down_degrades_without_raising(key_prefix: str, caplog) -> None:
    store = StateStore(redis_lib.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.2), prefix=key_prefix)
    assert store.get_fsm(1) is None
    assert store.set_fsm(1, FsmState()) is False
    assert store.get_session(1) is None
    assert store.set_context(1, 2, {}) is False
    assert "redis unavailable" in caplog.text


def _user_in_discussion(session: Session, telegram_id: int, hn_id: int) -> None:
    session.add(Post(hn_id=hn_id, type="story", title="PostgreSQL 18 Released"))
    session.flush()
    session.add(User(telegram_id=telegram_id, active_discussion_post_id=hn_id))
    session.flush()


def test_state_rebuilt_from_postgres_when_redis_is_down(db_session: Session, key_prefix: str, caplog) -> None:
    _user_in_discussion(db_session, 501, 4242)
    store = StateStore(redis_lib.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.2), prefix=key_prefix)
    state = current_state(session=db_session, store=store, telegram_id=501)
    assert state.state == BotState.DISCUSSION and state.data == {"active_post_id": 4242}
    assert "redis unavailable" in caplog.text


def test_state_rebuilt_after_key_loss_and_recached(
    db_session: Session, redis_client: redis_lib.Redis, key_prefix: str
) -> None:
    _user_in_discussion(db_session, 502, 4343)
    store = StateStore(redis_client, prefix=key_prefix)
    assert current_state(session=db_session, store=store, telegram_id=502).state == BotState.DISCUSSION
    assert store.get_fsm(502) is not None  # written back
    assert current_state(session=db_session, store=store, telegram_id=999).state == BotState.ONBOARDING


def test_set_state_writes_postgres_first(db_session: Session, redis_client: redis_lib.Redis, key_prefix: str) -> None:
    _user_in_discussion(db_session, 503, 4444)
    store = StateStore(redis_client, prefix=key_prefix)
    set_state(session=db_session, store=store, telegram_id=503, state=FsmState(state=BotState.IDLE))
    user = db_session.query(User).filter_by(telegram_id=503).one()
    db_session.refresh(user)
    assert user.active_discussion_post_id is None
    assert store.get_fsm(503).state == BotState.IDLE
    # Redis loses everything: PostgreSQL still says IDLE
    store.clear_fsm(503)
    assert current_state(session=db_session, store=store, telegram_id=503).state == BotState.IDLE
