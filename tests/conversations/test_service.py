"""The discussion service in-process with the offline provider (no key, no network): start, messages,
answers with the offline window folding, end. Real PostgreSQL and Redis; the Telegram side is a
recording outbox (the sandbox Telegram is exercised in test_discussions.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import text

from hnpal.conversations import service
from hnpal.conversations.models import Conversation
from hnpal.db.session import session_scope
from hnpal.posts.models import Post
from hnpal.state.store import StateStore
from hnpal.users.models import User


class RecordingOutbox:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, chat_id: int, text: str, reply_markup: dict | None = None) -> dict:
        self.sent.append((chat_id, text))
        return {"message_id": len(self.sent)}


@pytest.fixture
def store(key_prefix: str) -> StateStore:
    return StateStore(redis_lib.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True), prefix=key_prefix)


def _setup(telegram_id: int, hn_id: int) -> tuple[int, int]:
    with session_scope() as session:
        uid = session.execute(
            text("INSERT INTO users (telegram_id, first_name) VALUES (:t, 'Ada') RETURNING id"), {"t": telegram_id}
        ).scalar_one()
        pid = session.execute(
            text("INSERT INTO posts (hn_id, type, title, url) VALUES (:h, 'story', 'Offline talk', NULL) RETURNING id"),
            {"h": hn_id},
        ).scalar_one()
    return uid, pid


def test_offline_discussion_folds_and_ends(store: StateStore, settings_env) -> None:  # type: ignore[no-untyped-def]
    settings_env(discussion_window_messages=4)
    uid, pid = _setup(8_200_001, 953_000_001)
    with session_scope() as session:
        user, post = session.get(User, uid), session.get(Post, pid)
        started = service.start(session=session, store=store, user=user, post=post)
        assert "📖 Discussing: <b>Offline talk</b>" in started.header
        conversation_id = started.conversation_id
    assert store.get_fsm(8_200_001).data == {"active_post_id": 953_000_001}
    assert store.get_context(8_200_001, 953_000_001)["title"] == "Offline talk"

    outbox = RecordingOutbox()
    for n in range(6):
        with session_scope() as session:
            index = service.append_user_message(session=session, conversation_id=conversation_id, text=f"Question {n}?")
        assert index == 2 * n
        assert service.reply(conversation_id=conversation_id, message_index=index, outbox=outbox, store=store) == (
            "answered"
        )
        assert service.reply(conversation_id=conversation_id, message_index=index, outbox=outbox, store=store) == (
            "already-answered"
        )
    assert len(outbox.sent) == 6 and all(chat == 8_200_001 for chat, _ in outbox.sent)
    assert "neither the article nor its comments" in outbox.sent[0][1]
    with session_scope() as session:
        conversation = session.get(Conversation, conversation_id)
        messages: list[dict[str, Any]] = conversation.messages
        assert len(messages) == 12 and [m["role"] for m in messages] == ["user", "assistant"] * 6
        assert all(m["model"] == "offline-extractive" for m in messages[1::2])
        # window of 4: after each answer the turns the next message's window leaves out are folded ahead,
        # so after answering message 10, messages 0..7 are in the summary (offline: one line per turn)
        assert conversation.summarized_count == 8
        assert conversation.summary.splitlines()[0] == "User: Question 0?"
        assert conversation.total_input_tokens > 0 and conversation.total_cost_usd == 0
        purposes = session.execute(
            text("SELECT purpose, count(*) FROM agent_calls WHERE conversation_id = :c GROUP BY purpose"),
            {"c": conversation_id},
        ).all()
        assert dict(purposes) == {"reply": 6, "fold": 4}  # folded after answering messages 4, 6, 8 and 10
        order = session.scalars(
            text("SELECT purpose FROM agent_calls WHERE conversation_id = :c ORDER BY id"), {"c": conversation_id}
        ).all()
        assert order[:6] == ["reply", "reply", "reply", "fold", "reply", "fold"]  # never before an answer

        ended = service.end(session=session, store=store, user_id=uid, telegram_id=8_200_001, reason="done")
        assert [e.conversation_id for e in ended] == [conversation_id] and ended[0].memory_enabled
    assert store.get_fsm(8_200_001) is None
    with session_scope() as session:
        assert session.get(User, uid).active_discussion_post_id is None
        assert session.get(Conversation, conversation_id).end_reason == "done"
        with pytest.raises(service.Refused, match="just been closed"):
            service.append_user_message(session=session, conversation_id=conversation_id, text="late?")
    stats = _stats(8_200_001)
    assert stats["compression_applied"] and stats["messages"] == 12 and stats["status"] == "ended (done)"


def _stats(telegram_id: int) -> dict[str, Any]:
    with session_scope() as session:
        return json.loads(json.dumps(service.stats(session=session, telegram_id=telegram_id), default=str))["latest"]


def test_sweep_closes_only_silent_discussions(store: StateStore) -> None:
    quiet_uid, quiet_pid = _setup(8_200_002, 953_000_002)
    busy_uid, busy_pid = _setup(8_200_003, 953_000_003)
    with session_scope() as session:
        for uid, pid in ((quiet_uid, quiet_pid), (busy_uid, busy_pid)):
            service.start(session=session, store=store, user=session.get(User, uid), post=session.get(Post, pid))
        session.execute(
            text(
                "UPDATE conversations SET last_message_at = now() - interval '2 hours', "
                "started_at = now() - interval '3 hours' WHERE user_id = :u"
            ),
            {"u": quiet_uid},
        )
    with session_scope() as session:
        ended = service.close_idle(session=session, now=datetime.now(UTC))
    assert [e.user_id for e in ended if e.user_id in (quiet_uid, busy_uid)] == [quiet_uid]
    with session_scope() as session:
        assert session.get(User, quiet_uid).active_discussion_post_id is None
        assert session.get(User, busy_uid).active_discussion_post_id == 953_000_003
        assert service.active_conversation(session=session, user_id=busy_uid) is not None
    service.clear_fsm_if(store, 8_200_002, 953_000_002)
    assert store.get_fsm(8_200_002) is None
