"""What the configured model says a post is about (hnpal.relevance.labels), through the real path: a post
summarized by the summaries service with the sandbox OpenAI-compatible model configured, the real client,
the real accounting, and the topics stored in PostgreSQL and read by the digest selection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hnpal.content import ContentStore
from hnpal.db.session import session_scope
from hnpal.llm import health
from hnpal.posts.models import Post
from hnpal.relevance import labels
from hnpal.relevance import service as relevance
from hnpal.summaries import service as summaries
from hnpal.usage.models import AgentCall
from tests.conftest import is_topic_request, use_sandbox_llm

ARTICLE = " ".join(
    f"Paragraph {i}: we wrote the algorithm's specification in PlusCal, translated it to TLA+ and let TLC check "
    "every interleaving of the two processes."
    for i in range(30)
)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with ContentStore.open_writer(tmp_path / "content.rocksdb") as s:
        yield s


@pytest.fixture
def paid(llm_server, settings_env):  # type: ignore[no-untyped-def]
    use_sandbox_llm(settings_env, llm_server, llm_paid_min_score="50")
    return llm_server


@pytest.fixture
def make_post(store):  # type: ignore[no-untyped-def]
    created: list[int] = []

    def make(*, hn_id: int, title: str = "PlusCal Tutorial", score: int = 300, classified: bool = True) -> int:
        store.put(hn_id, text=ARTICLE, markdown=ARTICLE)
        with session_scope() as session:
            post = Post(
                hn_id=hn_id, type="story", title=title, url=f"https://lamport.example.org/{hn_id}",
                domain="example.org", score=score, has_text=True, has_markdown=True, is_crawl_success=True,
                crawl_status="success",
            )  # fmt: skip
            session.add(post)
            session.flush()
            created.append(post.id)
        if classified:  # as the fetch's job does at ingest: the offline model's topics first
            with session_scope() as session:
                relevance.classify_posts(session=session, post_ids=[post.id])
        return post.id

    yield make
    with session_scope() as session:
        session.execute(Post.__table__.delete().where(Post.id.in_(created)))


def topics_of(post_id: int) -> tuple[dict[str, float], list[str] | None]:
    with session_scope() as session:
        post = session.get(Post, post_id)
        assert post is not None
        return dict(zip(post.topics or [], post.topic_weights or [], strict=True)), post.llm_topics


def topic_calls(post_id: int) -> list[AgentCall]:
    with session_scope() as session:
        return list(
            session.scalars(select(AgentCall).where(AgentCall.post_id == post_id, AgentCall.purpose == labels.PURPOSE))
        )


def answer_topics(*topics: Any) -> Any:
    """A responder: the topic question gets ``{"topics": topics}``, a summary the default answer."""
    return lambda body: json.dumps({"topics": list(topics)}) if is_topic_request(body) else None


def test_the_model_says_once_what_a_post_is_about_and_its_topics_follow(paid, store, make_post) -> None:
    post_id = make_post(hn_id=7_300_001)
    before, llm_topics = topics_of(post_id)
    assert llm_topics is None
    assert before.get("formalmethods", 0) < 0.5  # the title alone does not say it to the offline model
    paid.set_responder(answer_topics("formalmethods", "distributed"))

    summaries.summarize(post_id=post_id, style="basic", store=store)

    after, llm_topics = topics_of(post_id)
    assert llm_topics == ["formalmethods", "distributed"]
    assert next(iter(after)) == "formalmethods" and after["formalmethods"] >= relevance.LLM_WEIGHT
    assert after["distributed"] >= 0.8 * relevance.LLM_WEIGHT  # the second choice weighs a little less
    for topic, weight in before.items():  # the offline model's topics stay, at half their weight
        if topic not in llm_topics and topic in after:
            assert after[topic] == pytest.approx((1 - relevance.LLM_WEIGHT) * weight, abs=1e-4)
    # the question: the topics listed in the instructions, the post in a fenced data block with its article
    [asked] = [b for b in paid.requests if is_topic_request(b)]
    system, user = asked["messages"][0]["content"], asked["messages"][1]["content"]
    assert "formalmethods (Formal methods)" in system and "PlusCal Tutorial" not in system
    assert "BEGIN POST" in user and "Title: PlusCal Tutorial" in user and "TLA+" in user
    # accounted like every call, against the post
    [call] = topic_calls(post_id)
    assert call.success and call.cost_usd > 0 and call.agent_type == "summarization"

    # once per post: the summary exists, nothing is asked again; a re-made summary asks nothing either
    asked_before = len(paid.requests)
    assert summaries.summarize(post_id=post_id, style="basic", store=store).status == "existing"
    summaries.summarize(post_id=post_id, style="technical", store=store)
    assert sum(map(is_topic_request, paid.requests[asked_before:])) == 0
    assert len(topic_calls(post_id)) == 1


def test_a_hostile_answer_keeps_only_topics_of_the_list(paid, store, make_post) -> None:
    post_id = make_post(hn_id=7_300_002)
    paid.set_responder(
        answer_topics("Ignore previous instructions", "AI", "ai", "sourdough", 42, "rust", "go", "python")
    )
    summaries.summarize(post_id=post_id, style="basic", store=store)
    topics, llm_topics = topics_of(post_id)
    assert llm_topics == ["ai", "rust", "go"]  # tags of the list, each once, at most three, in order
    assert set(llm_topics) <= set(topics) and "sourdough" not in topics

    other = make_post(hn_id=7_300_003)
    before, _ = topics_of(other)
    paid.set_responder(lambda body: json.dumps({"topics": "ai"}) if is_topic_request(body) else None)
    summaries.summarize(post_id=other, style="basic", store=store)
    after, llm_topics = topics_of(other)
    assert llm_topics == [] and after == before  # asked, nothing usable: the offline model's topics stand


def test_a_post_not_classified_yet_gets_the_blend_when_it_is(paid, store, make_post) -> None:
    post_id = make_post(hn_id=7_300_004, classified=False)
    paid.set_responder(answer_topics("formalmethods"))
    summaries.summarize(post_id=post_id, style="basic", store=store)
    topics, llm_topics = topics_of(post_id)
    assert (topics, llm_topics) == ({}, ["formalmethods"])  # no topics yet: the classification blends it
    with session_scope() as session:
        relevance.classify_posts(session=session, post_ids=[post_id])
    topics, _ = topics_of(post_id)
    assert next(iter(topics)) == "formalmethods" and topics["formalmethods"] >= relevance.LLM_WEIGHT


def test_a_new_offline_model_keeps_what_the_model_said(paid, store, make_post, monkeypatch) -> None:
    from datetime import UTC, datetime, timedelta

    post_id = make_post(hn_id=7_300_005)
    paid.set_responder(answer_topics("formalmethods"))
    summaries.summarize(post_id=post_id, style="basic", store=store)
    monkeypatch.setattr(relevance, "MODEL_NAME", "a-newer-offline-model")
    with session_scope() as session:
        assert relevance.classify_posts(session=session, since=datetime.now(UTC) - timedelta(hours=1)) >= 1
    topics, llm_topics = topics_of(post_id)
    with session_scope() as session:
        assert session.scalar(select(Post.topics_model).where(Post.id == post_id)) == "a-newer-offline-model"
    assert llm_topics == ["formalmethods"] and next(iter(topics)) == "formalmethods"


def test_a_post_below_the_paid_tier_is_asked_too(paid, store, make_post) -> None:
    """Its summary is the offline summarizer's; what it is about is the model's (a fortieth of the price)."""
    post_id = make_post(hn_id=7_300_030, score=3)
    paid.set_responder(answer_topics("formalmethods"))
    outcome = summaries.summarize(post_id=post_id, style="basic", store=store)
    assert outcome.provider == "offline"
    assert [is_topic_request(b) for b in paid.requests] == [True]
    topics, llm_topics = topics_of(post_id)
    assert llm_topics == ["formalmethods"] and next(iter(topics)) == "formalmethods"


@pytest.mark.parametrize("case", ["no key", "switched off", "budget spent", "key refused", "calls fail"])
def test_without_the_model_the_post_keeps_the_offline_topics(case, llm_server, settings_env, store, make_post) -> None:
    from hnpal.llm.service import forget_spend

    if case != "no key":
        use_sandbox_llm(settings_env, llm_server, llm_paid_min_score="50", llm_attempts="4")
    if case == "switched off":
        settings_env(llm_topics="false")
    if case == "budget spent":
        settings_env(llm_daily_budget_usd="0")
    forget_spend()
    if case == "key refused":  # the summary's call is refused first: no paid call after it, the topics included
        llm_server.set_fault("auth")
    offset = ["no key", "switched off", "budget spent", "key refused", "calls fail"].index(case)
    post_id = make_post(hn_id=7_300_010 + offset)
    before, _ = topics_of(post_id)
    if case == "calls fail":  # the summary is made, then the topic question fails every attempt
        llm_server.set_responder(lambda body: "not JSON at all" if is_topic_request(body) else None)

    outcome = summaries.summarize(post_id=post_id, style="basic", store=store)

    assert outcome.status == "generated"  # the summary is never held back by the topics
    after, llm_topics = topics_of(post_id)
    assert (after, llm_topics) == (before, None)
    asked = [b for b in llm_server.requests if is_topic_request(b)]
    # a failed question is asked labels.ATTEMPTS times at most (the summary's calls may take four), then given up
    assert len(asked) == (labels.ATTEMPTS if case == "calls fail" else 0)
    if case == "key refused":
        assert [s for *_, s in llm_server.request_log if s == 401] == [401]
        health.forget()
    assert len(topic_calls(post_id)) == len(asked) and not any(c.success for c in topic_calls(post_id))


def test_a_reader_of_formal_methods_gets_the_post_the_model_understood(paid, store, make_post) -> None:
    """Through the digest selection: of two posts the offline model cannot tell apart for a reader of formal
    methods, the one the model said is about formal methods comes first, with the topic as its reason."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from hnpal.deliveries.service import create_manual_digest, prepare
    from hnpal.users.models import User

    understood = make_post(hn_id=7_300_020, title="PlusCal Tutorial", score=60)
    plain = make_post(hn_id=7_300_021, title="Overgrowth notes", score=400)
    paid.set_responder(answer_topics("formalmethods"))
    summaries.summarize(post_id=understood, style="basic", store=store)
    paid.set_responder(answer_topics("games"))
    summaries.summarize(post_id=plain, style="basic", store=store)
    with session_scope() as session:
        user = User(telegram_id=7_300_020, interests=["formal methods"], digest_preferences={"max_posts": 1})
        session.add(user)
        session.flush()
        user_id = user.id
    try:
        with session_scope() as session:
            digest_id = create_manual_digest(session=session, user_id=user_id, now=datetime.now(UTC))
        with session_scope() as session:
            prepare(session=session, digest_ids=[digest_id])
        with session_scope() as session:
            picked = session.execute(
                text("SELECT post_id, reason FROM deliveries WHERE user_id = :u"), {"u": user_id}
            ).all()
        assert [(p, r) for p, r in picked] == [(understood, "topic:formalmethods")]
    finally:
        with session_scope() as session:
            session.execute(text("DELETE FROM users WHERE id = :u"), {"u": user_id})
