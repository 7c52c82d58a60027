"""The data-model document's validation rules, enforced by the pydantic models with clear errors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from hnpal.conversations.schemas import ConversationRead, Message
from hnpal.memory.schemas import MemoryCreate
from hnpal.posts.schemas import PostCreate
from hnpal.usage.schemas import AgentCallCreate
from hnpal.users.schemas import DigestPreferences, UserCreate

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"telegram_id": 0}, "telegram_id"),
        ({"telegram_id": -5}, "telegram_id"),
        ({"telegram_id": 1, "interests": [f"t{i}" for i in range(51)]}, "interests"),
        ({"telegram_id": 1, "interests": ["  "]}, "interests.0"),
        ({"telegram_id": 1, "username": "u" * 256}, "username"),
    ],
)
def test_user_rules(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        UserCreate(**kwargs)
    assert field in error_fields(info.value)


def test_user_interests_are_trimmed_and_deduplicated() -> None:
    user = UserCreate(telegram_id=1, interests=[" Rust ", "rust", "Databases"])
    assert user.interests == ["Rust", "Databases"]


@pytest.mark.parametrize("value", ["24:00", "07:60", "noon", "7", "07:5"])
def test_digest_time_must_be_hhmm(value: str) -> None:
    with pytest.raises(ValidationError, match="HH:MM"):
        DigestPreferences(time=value)


def test_digest_time_takes_a_single_digit_hour() -> None:
    assert DigestPreferences(time=" 7:05 ").time == "07:05"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hn_id": 0}, "hn_id"),
        ({"title": "x" * 501}, "title"),
        ({"title": ""}, "title"),
        ({"type": "blog"}, "type"),
        ({"score": -1}, "score"),
        ({"comment_count": -1}, "comment_count"),
        ({"url": "not a url"}, "url"),
    ],
)
def test_post_rules(kwargs: dict, field: str) -> None:
    base = {"hn_id": 1, "type": "story", "title": "t"}
    with pytest.raises(ValidationError) as info:
        PostCreate(**(base | kwargs))
    assert field in error_fields(info.value)


def test_message_rules() -> None:
    Message(role="user", content="x" * 10_000, timestamp=NOW)
    with pytest.raises(ValidationError, match="at most 10000 characters"):
        Message(role="user", content="x" * 10_001, timestamp=NOW)
    with pytest.raises(ValidationError) as info:
        Message(role="moderator", content="hi", timestamp=NOW)
    assert error_fields(info.value) == {"role"}


def test_conversation_message_cap() -> None:
    msg = {"role": "user", "content": "x", "timestamp": NOW}
    common = {"id": 1, "user_id": 1, "post_id": 1, "started_at": NOW, "last_message_at": NOW}
    ConversationRead(messages=[msg] * 1000, **common)
    with pytest.raises(ValidationError, match="at most 1000 items"):
        ConversationRead(messages=[msg] * 1001, **common)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": "hunch"}, "type"),
        ({"content": "x" * 5001}, "content"),
        ({"content": ""}, "content"),
        ({"confidence": 1.01}, "confidence"),
        ({"confidence": -0.5}, "confidence"),
        ({"source_type": "rumour"}, "source_type"),
    ],
)
def test_memory_rules(kwargs: dict, field: str) -> None:
    base = {"user_id": 1, "type": "fact", "content": "Uses PostgreSQL", "source_type": "discussion"}
    with pytest.raises(ValidationError) as info:
        MemoryCreate(**(base | kwargs))
    assert field in error_fields(info.value)


def test_memory_confidence_bounds_inclusive() -> None:
    assert MemoryCreate(user_id=1, type="fact", content="c", source_type="explicit", confidence=0).confidence == 0
    assert MemoryCreate(user_id=1, type="fact", content="c", source_type="explicit", confidence=1).confidence == 1


def test_agent_call_rules() -> None:
    ok = AgentCallCreate(agent_type="summary", model="m", input_tokens=1, output_tokens=2, cost_usd=0, latency_ms=3)
    assert ok.cost_usd == Decimal(0)
    with pytest.raises(ValidationError, match="error_message"):
        AgentCallCreate(
            agent_type="summary",
            model="m",
            input_tokens=1,
            output_tokens=2,
            cost_usd=0,
            latency_ms=3,
            success=False,
        )
    with pytest.raises(ValidationError):
        AgentCallCreate(agent_type="summary", model="m", input_tokens=-1, output_tokens=2, cost_usd=0, latency_ms=3)
