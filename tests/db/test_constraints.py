"""Every CHECK, UNIQUE and ON DELETE rule of the schema, exercised against PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hnpal.models import (
    AgentCall,
    AuditLog,
    Conversation,
    Delivery,
    Memory,
    Post,
    Summary,
    TelegramUpdate,
    User,
    UserTokenUsage,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def make_post(session: Session, hn_id: int = 1001, **kw) -> Post:
    post = Post(hn_id=hn_id, type=kw.pop("type", "story"), title=kw.pop("title", "A title"), **kw)
    session.add(post)
    session.flush()
    return post


def make_user(session: Session, telegram_id: int = 42, **kw) -> User:
    user = User(telegram_id=telegram_id, **kw)
    session.add(user)
    session.flush()
    return user


def violates(session: Session, obj: object, constraint: str) -> None:
    with pytest.raises(IntegrityError) as info:
        with session.begin_nested():
            session.add(obj)
            session.flush()
    assert constraint in str(info.value.orig), info.value.orig


@pytest.mark.parametrize(
    ("kwargs", "constraint"),
    [
        ({"hn_id": 0}, "ck_posts_hn_id_positive"),
        ({"type": "blog"}, "ck_posts_type_valid"),
        ({"title": "x" * 501}, "ck_posts_title_length"),
        ({"score": -1}, "ck_posts_score_nonnegative"),
        ({"comment_count": -5}, "ck_posts_comment_count_nonnegative"),
        ({"crawl_retry_count": -1}, "ck_posts_crawl_retry_count_nonnegative"),
    ],
)
def test_post_checks(db_session: Session, kwargs: dict, constraint: str) -> None:
    fields = {"hn_id": 7, "type": "story", "title": "t"} | kwargs
    violates(db_session, Post(**fields), constraint)


def test_post_hn_id_unique(db_session: Session) -> None:
    make_post(db_session, 5)
    violates(db_session, Post(hn_id=5, type="job", title="dup"), "uq_posts_hn_id")


def test_post_defaults(db_session: Session) -> None:
    post = make_post(db_session)
    db_session.refresh(post)
    assert (post.score, post.comment_count, post.crawl_retry_count) == (0, 0, 0)
    assert not post.is_crawl_success and not post.has_html
    assert post.fetched_at is not None


@pytest.mark.parametrize(
    ("kwargs", "constraint"),
    [
        ({"telegram_id": 0}, "ck_users_telegram_id_positive"),
        ({"status": "banned"}, "ck_users_status_valid"),
        ({"interests": {"a": 1}}, "ck_users_interests_array"),
        ({"interests": [f"t{i}" for i in range(51)]}, "ck_users_interests_max"),
        ({"digest_preferences": []}, "ck_users_digest_preferences_object"),
        ({"status": "deleted"}, "ck_users_deleted_at_matches_status"),
        ({"deleted_at": NOW}, "ck_users_deleted_at_matches_status"),
    ],
)
def test_user_checks(db_session: Session, kwargs: dict, constraint: str) -> None:
    violates(db_session, User(**({"telegram_id": 9} | kwargs)), constraint)


def test_user_defaults_and_unique(db_session: Session) -> None:
    user = make_user(db_session, 77)
    db_session.refresh(user)
    assert user.status == "active" and user.memory_enabled is True
    assert user.interests == []
    assert user.digest_preferences == {
        "style": "flat_scroll",
        "frequency": "daily",
        "time": "07:00",
        "max_posts": 10,
    }
    violates(db_session, User(telegram_id=77), "uq_users_telegram_id")


def test_active_discussion_must_reference_a_post_and_is_cleared_on_delete(db_session: Session) -> None:
    violates(db_session, User(telegram_id=3, active_discussion_post_id=999999), "fk_users_active_discussion")
    db_session.rollback()
    post = make_post(db_session, 31337)
    user = make_user(db_session, 4, active_discussion_post_id=31337)
    db_session.delete(post)
    db_session.flush()
    db_session.refresh(user)
    assert user.active_discussion_post_id is None


def test_delivery_rules(db_session: Session) -> None:
    user, post = make_user(db_session), make_post(db_session)
    db_session.add(Delivery(user_id=user.id, post_id=post.id, batch_id="2026-11-22-morning"))
    db_session.flush()
    violates(db_session, Delivery(user_id=user.id, post_id=post.id), "uq_deliveries_user_id_post_id")
    other = make_post(db_session, 2002)
    violates(
        db_session,
        Delivery(user_id=user.id, post_id=other.id, reaction="meh", reacted_at=NOW),
        "ck_deliveries_reaction_valid",
    )
    violates(db_session, Delivery(user_id=user.id, post_id=other.id, reaction="up"), "reacted_at_matches_reaction")
    violates(
        db_session,
        Delivery(user_id=user.id, post_id=other.id, is_saved=True),
        "ck_deliveries_saved_at_when_saved",
    )


def test_conversation_rules(db_session: Session) -> None:
    user, post = make_user(db_session), make_post(db_session)
    too_many = [{"role": "user", "content": "x", "timestamp": "2026-11-22T00:00:00Z"}] * 1001
    violates(db_session, Conversation(user_id=user.id, post_id=post.id, messages=too_many), "messages_max")
    violates(db_session, Conversation(user_id=user.id, post_id=post.id, messages={}), "messages_array")
    violates(
        db_session,
        Conversation(user_id=user.id, post_id=post.id, total_input_tokens=-1),
        "totals_nonnegative",
    )
    violates(
        db_session,
        Conversation(user_id=user.id, post_id=post.id, started_at=NOW, ended_at=datetime(2020, 1, 1, tzinfo=UTC)),
        "ended_after_started",
    )


@pytest.mark.parametrize(
    ("kwargs", "constraint"),
    [
        ({"type": "hunch"}, "ck_memory_type_valid"),
        ({"source_type": "gossip"}, "ck_memory_source_type_valid"),
        ({"content": "x" * 5001}, "ck_memory_content_length"),
        ({"content": ""}, "ck_memory_content_length"),
        ({"confidence": 1.5}, "ck_memory_confidence_range"),
        ({"confidence": -0.1}, "ck_memory_confidence_range"),
    ],
)
def test_memory_checks(db_session: Session, kwargs: dict, constraint: str) -> None:
    user = make_user(db_session)
    fields = {"user_id": user.id, "type": "fact", "content": "Uses PostgreSQL", "source_type": "discussion"}
    violates(db_session, Memory(**(fields | kwargs)), constraint)


def test_usage_unique_per_day_and_nonnegative(db_session: Session) -> None:
    user = make_user(db_session)
    db_session.add(UserTokenUsage(user_id=user.id, date=date(2026, 11, 22)))
    db_session.flush()
    violates(
        db_session,
        UserTokenUsage(user_id=user.id, date=date(2026, 11, 22)),
        "uq_user_token_usage_user_id_date",
    )
    violates(
        db_session,
        UserTokenUsage(user_id=user.id, date=date(2026, 11, 23), discussion_tokens=-1),
        "ck_user_token_usage_counts_nonnegative",
    )


def test_agent_call_checks(db_session: Session) -> None:
    violates(db_session, AgentCall(agent_type="summary", model="m", input_tokens=-1), "measures_nonnegative")
    violates(db_session, AgentCall(agent_type="summary", model="m", success=False), "error_when_failed")


def test_summary_rules(db_session: Session) -> None:
    post = make_post(db_session)
    db_session.add(Summary(post_id=post.id, style="basic", text="s", model="m"))
    db_session.flush()
    violates(db_session, Summary(post_id=post.id, style="basic", text="again", model="m"), "uq_summaries_post_id")
    violates(db_session, Summary(post_id=post.id, style="poetic", text="s", model="m"), "ck_summaries_style_valid")
    violates(
        db_session,
        Summary(post_id=post.id, style="personalized", text="s", model="m"),
        "variant_only_personalized",
    )
    violates(db_session, Summary(post_id=post.id, style="technical", text="", model="m"), "text_not_empty")
    # personalized summaries are one per interest set
    db_session.add(Summary(post_id=post.id, style="personalized", variant="abc", text="s", model="m"))
    db_session.add(Summary(post_id=post.id, style="personalized", variant="def", text="s", model="m"))
    db_session.flush()


def test_telegram_update_checks(db_session: Session) -> None:
    violates(db_session, TelegramUpdate(update_id=1, payload={}, status="lost"), "ck_telegram_updates_status_valid")
    violates(db_session, TelegramUpdate(update_id=2, payload={}, status="quarantined"), "quarantine_expires")
    db_session.add(TelegramUpdate(update_id=3, payload={"update_id": 3}))
    db_session.flush()
    violates(db_session, TelegramUpdate(update_id=3, payload={}), "pk_telegram_updates")


def test_audit_actor_type(db_session: Session) -> None:
    violates(db_session, AuditLog(actor_type="robot", action="x"), "ck_audit_log_actor_type_valid")


def test_deleting_a_user_cascades_and_keeps_the_audit_entry(db_session: Session) -> None:
    user, post = make_user(db_session), make_post(db_session)
    conv = Conversation(user_id=user.id, post_id=post.id)
    db_session.add(conv)
    db_session.flush()
    db_session.add_all(
        [
            Delivery(user_id=user.id, post_id=post.id),
            Memory(user_id=user.id, type="interest", content="rust", source_conversation_id=conv.id),
            UserTokenUsage(user_id=user.id, date=date(2026, 11, 22)),
            AgentCall(user_id=user.id, agent_type="discussion", model="m", conversation_id=conv.id),
            AuditLog(actor_type="user", action="delete_my_data", subject_user_id=user.id, subject_ref="h"),
        ]
    )
    db_session.flush()
    call_id = db_session.scalars(select(AgentCall.id).where(AgentCall.user_id == user.id)).one()
    audit_id = db_session.scalars(select(AuditLog.id).where(AuditLog.subject_user_id == user.id)).one()
    user_id = user.id
    db_session.execute(User.__table__.delete().where(User.id == user_id))
    db_session.expire_all()
    # (other tests' committed rows may be in these tables: only this user's count)
    for model in (Delivery, Conversation, Memory, UserTokenUsage):
        assert db_session.scalars(select(model).where(model.user_id == user_id)).all() == [], model
    call = db_session.get(AgentCall, call_id)
    assert call.user_id is None and call.conversation_id is None  # SET NULL: the cost history stays
    audit = db_session.get(AuditLog, audit_id)
    assert audit.subject_user_id is None and audit.subject_ref == "h"


def test_deleting_a_post_cascades_and_nulls_memory_sources(db_session: Session) -> None:
    user, post = make_user(db_session), make_post(db_session)
    db_session.add_all(
        [
            Delivery(user_id=user.id, post_id=post.id),
            Summary(post_id=post.id, style="basic", text="s", model="m"),
            Memory(user_id=user.id, type="discussion_note", content="Discussed X", source_post_id=post.id),
        ]
    )
    db_session.flush()
    user_id, post_id = user.id, post.id
    db_session.execute(Post.__table__.delete().where(Post.id == post_id))
    db_session.expire_all()
    assert db_session.scalars(select(Delivery).where(Delivery.post_id == post_id)).all() == []
    assert db_session.scalars(select(Summary).where(Summary.post_id == post_id)).all() == []
    memory = db_session.scalars(select(Memory).where(Memory.user_id == user_id)).one()
    assert memory.source_post_id is None
