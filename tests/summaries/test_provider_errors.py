"""A wrong key, through the real path: the sandbox model requires a key and is given another one.

The first refused call stops paid calls in every process (one alert: the log line, the metric and
``hnpal doctor``); the post gets the offline summary and reaches a reader's digest; once the key is
fixed the summary sweep re-summarizes it with the model in a real worker, and the post keeps its place
(no second delivery).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

import celeryconfig  # noqa: F401  (the broker's key prefix read before a fixture changes it)
from hnpal.content import ContentStore
from hnpal.db.session import session_scope
from hnpal.deliveries.sender import send_digests
from hnpal.llm import health
from hnpal.posts.models import Post
from hnpal.sandbox.llm_api import LLMServer
from hnpal.summaries.models import Summary
from hnpal.usage.models import AgentCall
from tests.conftest import REDIS_PREFIX, is_topic_request
from tests.deliveries.conftest import committed, unique_id  # noqa: F401  (fixture)
from tests.deliveries.test_digests import outbox, send, tg  # noqa: F401  (fixtures)
from tests.ops.test_metrics import samples, value

MADE: list[int] = []
RIGHT_KEY = "sk-right-key-0123456789"
WRONG_KEY = "sk-wrong-key-9876543210"
ARTICLE = " ".join(
    f"Paragraph {i} explains how the scheduler batches timer wake-ups to save power on idle laptops." for i in range(40)
)


@pytest.fixture
def model():  # type: ignore[no-untyped-def]
    with LLMServer(model="sandbox-model", api_key=RIGHT_KEY) as server:
        yield server
    health.forget()


@pytest.fixture
def content(tmp_path: Path, settings_env):  # type: ignore[no-untyped-def]
    from hnpal.content import host

    path = tmp_path / "content.rocksdb"
    settings_env(content_path=str(path))
    host.close_all()
    with ContentStore.open_writer(path) as store:
        yield store
    host.close_all()
    with session_scope() as session:  # the posts made here (their summaries and calls go with them)
        session.execute(Post.__table__.delete().where(Post.id.in_(MADE)))
    MADE.clear()


def configure(settings_env, server: LLMServer, key: str) -> None:  # type: ignore[no-untyped-def]
    settings_env(
        openai_api_key=key,
        openai_base_url=server.base_url,
        openai_model="sandbox-model",
        llm_prices=json.dumps({"sandbox-model": {"input": "1", "output": "2"}}),
        llm_retry_backoff="0.01",
        llm_paid_min_score="50",
    )
    health.forget()


def make_post(store: ContentStore, title: str) -> int:
    hn_id = unique_id()
    store.put(hn_id, text=ARTICLE, markdown=ARTICLE)
    with session_scope() as session:
        post = Post(
            hn_id=hn_id, type="story", title=title, url=f"https://example.com/{hn_id}", domain="example.com",
            score=900_000 + hn_id % 1000, has_text=True, has_markdown=True, is_crawl_success=True,
            crawl_status="success",
        )  # fmt: skip
        session.add(post)
        session.flush()
        MADE.append(post.id)
        return post.id


def post(post_id: int) -> Post:
    with session_scope() as session:
        return session.get(Post, post_id)


def chat_calls(server: LLMServer) -> int:
    return sum(1 for method, path, _ in server.request_log if path.endswith("/chat/completions"))


def run_task(post_id: int) -> dict:
    from tasks.summaries import summarize

    return summarize.apply(args=[post_id]).get()


def test_a_wrong_key_falls_back_alerts_once_and_is_resummarized_when_fixed(
    model,
    content,
    settings_env,
    committed,  # noqa: F811  (the imported fixture)
    tg,  # noqa: F811
    send,  # noqa: F811
    spawn_worker,
    caplog,
) -> None:
    from hnpal.doctor import run_checks
    from hnpal.ops.metrics import render
    from tasks.summaries import sweep

    configure(settings_env, model, WRONG_KEY)
    first, second = make_post(content, "Timer coalescing"), make_post(content, "Idle power")
    with caplog.at_level(logging.ERROR, logger="hnpal.llm.health"):
        assert run_task(first)["status"] == "generated"
        assert run_task(second)["status"] == "generated"
    # One refused call, then no more paid calls: the second post never reached the model.
    assert chat_calls(model) == 1
    assert [s for *_, s in model.request_log if s == 401] == [401]
    alerts = [r for r in caplog.records if "ALERT" in r.getMessage()]
    assert len(alerts) == 1 and "HNPAL_OPENAI_API_KEY" in alerts[0].getMessage()
    assert WRONG_KEY not in alerts[0].getMessage()[:-4]  # the SDK's message shows the key masked
    for post_id in (first, second):
        p = post(post_id)
        assert p.summary_status == "offline" and p.summary_model == "offline-extractive"
        assert p.summary and p.summarized_at is not None and "401" in (p.summary_error or "")
    state = health.read()
    assert not state.up and "401" in (state.error or "")

    # The operator sees it: the metric and `hnpal doctor`.
    figures = samples(render())
    assert value(figures, "hnpal_llm_provider_up", provider="openai") == 0
    assert value(figures, "hnpal_summaries_offline") >= 2
    model_check = next(c for c in run_checks() if c.name == "model")
    assert model_check.status == "fail" and "HNPAL_OPENAI_API_KEY" in model_check.fix

    # Readers still get the posts, with the offline summary.
    summarized = {first: post(first).summarized_at, second: post(second).summarized_at}
    with committed() as make:
        user = make.user(prefs={"max_posts": 30})
        tg.add_user(user.telegram_id, "Ada")
        digest = make.digest(user, created_at=datetime.now(UTC).replace(tzinfo=None))
    from hnpal.deliveries.service import prepare

    with session_scope() as session:
        prepare(session=session, digest_ids=[digest.id])
    send_digests(digest_ids=[digest.id], send=send, threads=1)
    delivered = "\n".join(m.text for m in tg.messages(user.telegram_id))
    for post_id in (first, second):
        assert post(post_id).title in delivered
        assert post(post_id).summary[:60] in delivered.replace("\n", " ") or "Paragraph" in delivered

    # The key is fixed: the sweep (beat's, here called directly) checks it and a real worker re-summarizes.
    configure(settings_env, model, RIGHT_KEY)
    worker = spawn_worker("llm", env={"HNPAL_REDIS_KEY_PREFIX": REDIS_PREFIX})  # the outbox fixture changed it
    worker.wait_ready()
    assert sweep.apply().get() >= 2
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and {post(i).summary_status for i in (first, second)} != {"done"}:
        time.sleep(0.3)
    for post_id in (first, second):
        p = post(post_id)
        assert (p.summary_status, p.summary_model, p.summary_error) == ("done", "sandbox-model", None), worker.log()
        assert p.summarized_at == summarized[post_id]  # the same place in digests: not delivered twice
        with session_scope() as session:
            [row] = session.scalars(select(Summary).where(Summary.post_id == post_id, Summary.style == "basic"))
            assert row.model == "sandbox-model" and row.text == p.summary
            calls = session.scalars(select(AgentCall).where(AgentCall.post_id == post_id, AgentCall.success)).all()
            assert any(c.model == "sandbox-model" for c in calls)
    assert health.read().up
    assert value(samples(render()), "hnpal_llm_provider_up", provider="openai") == 1
    with session_scope() as session:
        left = session.execute(text("SELECT count(*) FROM posts WHERE id IN (:a, :b) AND summary_status = 'offline'"),
                               {"a": first, "b": second}).scalar()  # fmt: skip
    assert left == 0


def test_the_same_key_accepted_again_is_found_by_the_sweeps_recheck(model, content, settings_env) -> None:
    """The key was right but had no access yet (the provider refused it, then granted it): the sweep
    re-checks it with one cheap request once the recheck interval has passed, not before."""
    configure(settings_env, model, "sk-not-yet-0000000000")
    post_id = make_post(content, "Access granted later")
    assert run_task(post_id)["status"] == "generated" and post(post_id).summary_status == "offline"
    assert not health.recheck()  # checked a moment ago: no request
    models_asked = sum(1 for _, path, _ in model.request_log if "/models" in path)
    assert models_asked == 0
    model.api_key = "sk-not-yet-0000000000"  # the provider now accepts it
    with session_scope() as session:
        session.execute(text("UPDATE provider_health SET checked_at = now() - interval '1 hour'"))
    assert health.recheck() and health.read().up
    assert sum(1 for _, path, _ in model.request_log if "/models" in path) == 1
    outcome = run_task_upgrade(post_id)
    assert outcome["status"] == "upgraded" and post(post_id).summary_status == "done"


def test_a_permanent_error_other_than_the_key_is_quarantined_not_lost(model, content, settings_env) -> None:
    """A 400 the model gives for this post: counted as every attempt at once, so `hnpal quarantine`
    lists it (it used to become 'skipped', seen by nobody)."""
    from hnpal.errors import WorkFailed
    from hnpal.ops.quarantine import list_failed
    from tasks.summaries import summarize

    configure(settings_env, model, RIGHT_KEY)
    post_id = make_post(content, "Refused request")
    model.set_fault("bad_request", count=1)
    result = summarize.apply(args=[post_id])
    assert result.state == "FAILURE" and isinstance(result.result, WorkFailed)
    assert post(post_id).summary_status == "failed"
    with session_scope() as session:
        assert f"summary:{post_id}" in {f.ref for f in list_failed(session=session, kind="summary")}


def run_task_upgrade(post_id: int) -> dict:
    from tasks.summaries import summarize

    return summarize.apply(args=[post_id, None, None, True]).get()


def test_a_post_that_rises_to_the_paid_tier_is_summarized_again_with_the_model(model, content, settings_env) -> None:
    """Summarized offline minutes after it appeared (its score below the paid tier), a post that reaches the
    tier later is made again with the model by the sweep: once, keeping its place in digests, and only while
    the day's budget lasts."""
    from hnpal import jobs
    from hnpal.summaries.runs import sweep

    def swept() -> list[tuple]:
        with jobs.recording() as sent:
            sweep()
        return [tuple(j.args) for j in sent if j.name == jobs.SUMMARIES_SUMMARIZE and j.args[0] == post_id]

    configure(settings_env, model, RIGHT_KEY)
    post_id = make_post(content, "Timer coalescing, a week later")
    with session_scope() as session:
        session.execute(text("UPDATE posts SET score = 3 WHERE id = :p"), {"p": post_id})
    assert run_task(post_id)["status"] == "generated"
    first = post(post_id)
    assert (first.summary_model, first.summary_status) == ("offline-extractive", "done")
    # below the tier the model makes no summary; it is only asked what the post is about (once)
    assert [is_topic_request(b) for b in model.requests] == [True]
    assert swept() == []  # below the tier: nothing to do

    with session_scope() as session:
        session.execute(text("UPDATE posts SET score = 120 WHERE id = :p"), {"p": post_id})
    settings_env(llm_daily_budget_usd="0")
    assert swept() == []  # no budget left today: not asked (it would only be made offline again)
    settings_env(llm_daily_budget_usd="5")
    assert swept() == [(post_id, None, None, True)]
    assert run_task_upgrade(post_id)["status"] == "upgraded"
    now = post(post_id)
    # the summary made by the model; what the post is about was asked once, before
    assert (now.summary_model, now.summary_status, chat_calls(model)) == ("sandbox-model", "done", 2)
    assert [is_topic_request(b) for b in model.requests] == [True, False]
    assert now.summarized_at == first.summarized_at  # its place in digests kept: no second delivery
    assert swept() == []  # made with the model: done
