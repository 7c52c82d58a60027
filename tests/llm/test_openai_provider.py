"""The OpenAI provider through the real openai SDK against the sandbox LLM server, with accounting."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from hnpal.db.session import session_scope
from hnpal.llm import service as llm
from hnpal.llm.base import LLMError, LLMRequest
from hnpal.llm.openai_provider import OpenAIProvider
from hnpal.sandbox.llm_api import LLMServer
from hnpal.usage.models import AgentCall, UserTokenUsage
from hnpal.users.models import User

PRICES = {"sandbox-model": {"input": "0.15", "output": "0.60"}}


@pytest.fixture(scope="module")
def server():
    with LLMServer(model="sandbox-model") as srv:
        yield srv


@pytest.fixture
def provider(server):
    server.reset()
    return OpenAIProvider(api_key="k", base_url=server.base_url, model="sandbox-model", timeout=2)


@pytest.fixture
def settings():
    return load_settings(llm_prices=PRICES, llm_attempts=3, llm_retry_backoff=0.01)


def request(text: str = "Postgres 18 adds asynchronous I/O. Scans got faster.") -> LLMRequest:
    return LLMRequest(messages=[{"role": "system", "content": "Summarize."}, {"role": "user", "content": text}])


def calls_for(purpose: str) -> list[AgentCall]:
    with session_scope() as session:
        return list(session.scalars(select(AgentCall).where(AgentCall.purpose == purpose).order_by(AgentCall.id)))


def test_a_call_is_answered_and_accounted(provider, settings) -> None:
    result = llm.call(request(), provider=provider, agent_type="summarization", purpose="t-ok", settings=settings)
    assert result.provider == "openai" and result.text and result.input_tokens > 0 and result.output_tokens > 0
    expected = (
        Decimal(result.input_tokens) * Decimal("0.15") + Decimal(result.output_tokens) * Decimal("0.60")
    ) / Decimal(1_000_000)
    assert result.cost_usd == expected.quantize(Decimal("0.000001"))
    [row] = calls_for("t-ok")
    assert row.success and row.model == "sandbox-model" and row.input_tokens == result.input_tokens
    assert row.cost_usd == result.cost_usd and row.latency_ms >= 0


@pytest.mark.parametrize(
    ("fault", "params", "kind"),
    [
        ("rate_limit", {"seconds": 0}, "429"),
        ("error", {"status": 500}, "500"),
        ("error", {"status": 503}, "503"),
        ("timeout", {"seconds": 5}, "timeout"),
        ("malformed", {}, "malformed"),
        ("malformed", {"mode": "html"}, "malformed"),
        ("empty_choices", {}, "malformed"),
        ("drop", {}, "connection"),
    ],
)
def test_transient_errors_are_retried(server, provider, settings, fault: str, params: dict, kind: str) -> None:
    server.set_fault(fault, count=2, **params)
    purpose = f"t-{fault}-{params.get('status', params.get('mode', ''))}"
    result = llm.call(request(), provider=provider, agent_type="summarization", purpose=purpose, settings=settings)
    assert result.text
    rows = calls_for(purpose)
    assert [r.success for r in rows] == [False, False, True]
    assert all(r.error_message.startswith(kind) for r in rows[:2]), [r.error_message for r in rows]


def test_retry_after_is_honoured(server, provider, settings) -> None:
    server.set_fault("rate_limit", count=1, seconds=1)
    llm.call(request(), provider=provider, agent_type="summarization", purpose="t-retry-after", settings=settings)
    arrivals = [r["received_at"] for r in server.requests[-2:]]
    assert arrivals[1] - arrivals[0] >= 0.9  # waited for Retry-After, not the 10 ms backoff


@pytest.mark.parametrize(
    ("fault", "kind"), [("bad_request", "400"), ("auth", "auth"), ("context_length", "context_length")]
)
def test_permanent_errors_are_recorded_and_not_retried(server, provider, settings, fault: str, kind: str) -> None:
    server.set_fault(fault)
    try:
        with pytest.raises(LLMError) as info:
            llm.call(request(), provider=provider, agent_type="summarization", purpose=f"t-{fault}", settings=settings)
    finally:
        server.clear_faults()
    assert not info.value.transient and info.value.kind == kind
    [row] = calls_for(f"t-{fault}")
    assert not row.success and row.error_message.startswith(kind)


def test_exhausted_retries_raise_a_transient_error(server, provider, settings) -> None:
    server.set_fault("error", status=502)
    try:
        with pytest.raises(LLMError) as info:
            llm.call(request(), provider=provider, agent_type="summarization", purpose="t-exhaust", settings=settings)
    finally:
        server.clear_faults()
    assert info.value.transient
    assert len(calls_for("t-exhaust")) == settings.llm_attempts


def test_concurrent_user_usage_never_loses_an_increment(provider, settings) -> None:
    with session_scope() as session:
        user = User(telegram_id=777_001)
        session.add(user)
        session.flush()
        user_id = user.id
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                llm.call(request(), provider=provider, agent_type="discussion", user_id=user_id,
                         purpose="t-usage", settings=settings)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with session_scope() as session:
        usage = session.scalar(select(UserTokenUsage).where(UserTokenUsage.user_id == user_id))
        calls = session.execute(
            select(
                func.count(),
                func.sum(AgentCall.input_tokens),
                func.sum(AgentCall.output_tokens),
                func.sum(AgentCall.cost_usd),
            ).where(AgentCall.user_id == user_id)
        ).one()
        session.execute(User.__table__.delete().where(User.id == user_id))
    assert calls[0] == 80
    assert usage.total_input_tokens == calls[1] and usage.total_output_tokens == calls[2]
    assert usage.discussion_tokens == calls[1] + calls[2] and usage.summarization_tokens == 0
    assert usage.total_cost_usd == calls[3]
