"""Calling an LLM the HN Pal way: pick the provider, retry what is transient, account for every call.

Every attempt writes an ``agent_calls`` row (tokens, cost from the settings' price table, latency,
success or error) in its own autocommitted statement, so spend is recorded even when the caller's work
rolls back. Calls attributed to a user also add to ``user_token_usage`` for the day in that same
statement (INSERT ... ON CONFLICT ... DO UPDATE with the call as a CTE), so concurrent calls never lose
an increment and the two rows never disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import Insert, insert

from config.settings import Settings, get_settings
from hnpal.db.session import get_engine, session_scope
from hnpal.llm import health, sanitize
from hnpal.llm.base import LLMError, LLMRequest, LLMResult, Provider
from hnpal.llm.offline import OfflineProvider
from hnpal.usage import allowance
from hnpal.usage.allowance import cost_usd
from hnpal.usage.models import AgentCall, UserTokenUsage

log = logging.getLogger(__name__)
AGENT_TYPES = ("summarization", "discussion", "memory_extraction")
MAX_INLINE_WAIT = 30.0  # seconds one retry may sleep in-process; longer waits end the call (a sweep retries)
_TOKEN_COLUMN = {
    "summarization": "summarization_tokens",
    "discussion": "discussion_tokens",
    "memory_extraction": "memory_extraction_tokens",
}
_providers: dict[tuple, Provider] = {}


def offline_provider() -> Provider:
    return _providers.setdefault(("offline",), OfflineProvider())


def paid_provider(settings: Settings | None = None) -> Provider | None:
    """The OpenAI-compatible provider, or None when no API key is configured."""
    settings = settings or get_settings()
    if settings.openai_api_key is None:
        return None
    key = ("openai", str(settings.openai_base_url), settings.openai_model, settings.openai_timeout)
    provider = _providers.get(key)
    if provider is None:
        from hnpal.llm.openai_provider import OpenAIProvider

        provider = OpenAIProvider(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=str(settings.openai_base_url),
            model=settings.openai_model,
            timeout=settings.openai_timeout,
        )
        _providers[key] = provider
    return provider


def warm_up(settings: Settings | None = None) -> None:
    """Load what the first call would otherwise load under a task's clock: the SDK (half a second of
    imports), the model's token table, and the offline summarizer. Workers of the ``llm`` queue call it
    at start; it opens no connection, so it is safe before a fork."""
    from hnpal.llm import tokens

    settings = settings or get_settings()
    offline_provider()
    tokens.count_tokens("warm up", settings.openai_model)
    if settings.openai_api_key is not None:
        import openai.resources.chat.completions.completions  # noqa: F401  (the SDK imports it on first use)

        import hnpal.llm.openai_provider  # noqa: F401


def spent_today() -> Decimal:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with session_scope() as session:
        return session.scalar(
            select(func.coalesce(func.sum(AgentCall.cost_usd), 0)).where(AgentCall.called_at >= midnight)
        )


_spent_cache: tuple[float, Decimal] | None = None
_spend_lock = threading.Lock()
SPENT_CACHE_SECONDS = 10.0  # the budget is checked per call; the day's sum is re-read at most this often


def forget_spend() -> None:
    """Drop the cached day's spend (tests, and after an operator changes the budget)."""
    global _spent_cache
    _spent_cache = None


def budget_left(settings: Settings | None = None) -> bool:
    global _spent_cache
    settings = settings or get_settings()
    now = time.monotonic()
    cached = _spent_cache
    if cached is None or now - cached[0] > SPENT_CACHE_SECONDS:
        # One thread re-reads the day's spend; the others go on with the value they have.
        if _spend_lock.acquire(blocking=cached is None):
            try:
                _spent_cache = cached = (time.monotonic(), spent_today())
            finally:
                _spend_lock.release()
        cached = _spent_cache or cached
    assert cached is not None
    spent = cached[1]
    if spent >= settings.llm_daily_budget_usd:
        log.warning(
            "daily LLM budget reached (%s of %s USD): the offline provider takes over until midnight UTC",
            spent,
            settings.llm_daily_budget_usd,
        )
        return False
    return True


def record(
    *,
    agent_type: str,
    model: str,
    result: LLMResult | None,
    error: LLMError | None,
    latency_ms: int,
    user_id: int | None = None,
    conversation_id: int | None = None,
    post_id: int | None = None,
    purpose: str | None = None,
    settings: Settings | None = None,
    connection: Connection | None = None,
) -> Decimal:
    """Write the agent_calls row (and the user's daily usage) for one attempt. Returns its cost."""
    input_tokens = result.input_tokens if result else 0
    output_tokens = result.output_tokens if result else 0
    cost = cost_usd(result.model if result else model, input_tokens, output_tokens, settings) if result else Decimal(0)
    stmt = insert(AgentCall).values(
        user_id=user_id,
        agent_type=agent_type,
        model=(result.model if result else model)[:50],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        latency_ms=latency_ms,
        conversation_id=conversation_id,
        post_id=post_id,
        purpose=purpose,
        success=error is None,
        error_message=None if error is None else f"{error.kind or 'error'}: {error}"[:2000],
    )
    if user_id is not None and result is not None:
        # One statement writes both rows (the call as a CTE), so they commit together with no
        # BEGIN/COMMIT round trips around them.
        stmt = user_usage_upsert(user_id=user_id, agent_type=agent_type, input_tokens=input_tokens,
                                 output_tokens=output_tokens, cost=cost).add_cte(stmt.cte("agent_call"))  # fmt: skip
    if connection is not None:  # the caller's autocommit connection: the statement commits by itself
        connection.execute(stmt)
        return cost
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(stmt)
    return cost


def user_usage_upsert(*, user_id: int, agent_type: str, input_tokens: int, output_tokens: int, cost: Decimal) -> Insert:
    """The statement that atomically adds one call to the user's row for today (created on first use)."""
    column = _TOKEN_COLUMN.get(agent_type, "summarization_tokens")
    tokens = input_tokens + output_tokens
    values = {
        "user_id": user_id,
        "date": datetime.now(UTC).date(),
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "total_cost_usd": cost,
        column: tokens,
    }
    stmt = insert(UserTokenUsage).values(values)
    table = UserTokenUsage.__table__
    return stmt.on_conflict_do_update(
        index_elements=[UserTokenUsage.user_id, UserTokenUsage.date],
        set_={
            "total_input_tokens": table.c.total_input_tokens + stmt.excluded.total_input_tokens,
            "total_output_tokens": table.c.total_output_tokens + stmt.excluded.total_output_tokens,
            "total_cost_usd": table.c.total_cost_usd + stmt.excluded.total_cost_usd,
            column: table.c[column] + stmt.excluded[column],
            "updated_at": func.now(),
        },
    )


def call(
    request: LLMRequest,
    *,
    provider: Provider,
    agent_type: str,
    user_id: int | None = None,
    conversation_id: int | None = None,
    post_id: int | None = None,
    purpose: str | None = None,
    settings: Settings | None = None,
    connection: Connection | None = None,
) -> LLMResult:
    """One LLM call with retries and accounting. Raises LLMError when it finally fails.

    ``connection``: an autocommit connection the caller already holds, to write the accounting rows on
    (saves a pool checkout per attempt); by default each row takes its own."""
    assert agent_type in AGENT_TYPES, agent_type
    settings = settings or get_settings()
    account = functools.partial(
        record, agent_type=agent_type, model=provider.model, user_id=user_id, conversation_id=conversation_id,
        post_id=post_id, purpose=purpose, settings=settings, connection=connection,
    )  # fmt: skip
    attempt = 0
    fallback = ""
    while True:
        attempt += 1
        reservation = None
        if provider.name != "offline" and not health.usable(settings):
            # The key was refused (here or in another process): no paid call until it works again.
            provider, fallback = offline_provider(), "auth"
            account = functools.partial(account, model=provider.model)
        if provider.name != "offline":
            # The day's budget is held before the call (atomically: a burst cannot pass it together)
            # and settled by the call's own row; past it, the offline provider takes over.
            estimate = allowance.estimate_usd(provider.model, request.messages, request.max_tokens, settings)
            reservation = allowance.reserve_budget(estimate, settings, connection)
            if reservation is None:
                log.warning("daily LLM budget reached (%s USD): the offline provider answers this call",
                            settings.llm_daily_budget_usd)  # fmt: skip
                provider, fallback = offline_provider(), "budget"
                account = functools.partial(account, model=provider.model)
        started = time.perf_counter()
        failure: LLMError | None
        try:
            try:
                result = provider.complete(request)
            except LLMError as exc:
                account(result=None, error=exc, latency_ms=int((time.perf_counter() - started) * 1000))
                failure = exc
            else:
                # The answer is untrusted: cleaned and checked here, after it is paid for (so a bad
                # answer's usage is recorded too, with the attempt marked failed).
                result = dataclasses.replace(result, text=sanitize.clean_text(result.text).strip())
                failure = checked(request, result)
                cost = account(result=result, error=failure, latency_ms=result.latency_ms)
                if failure is None:
                    return dataclasses.replace(result, cost_usd=cost, fallback=fallback)
        finally:
            allowance.release(reservation, connection)
        assert failure is not None  # a checked answer returned above
        if provider.name != "offline" and health.is_down_error(failure):
            health.mark_down(failure, settings)  # every process stops paying for refusals (one alert)
        if not failure.transient or attempt >= settings.llm_attempts:
            raise failure
        wait = settings.llm_retry_backoff * (2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        if failure.retry_after is not None:
            wait = max(wait, failure.retry_after)
        if wait > MAX_INLINE_WAIT:
            raise LLMError(
                f"{failure} (retry in {wait:.0f}s left to the sweep)", transient=True, kind=failure.kind,
                answer=failure.answer,
            ) from failure  # fmt: skip
        log.info("LLM call failed (%s), attempt %d, retrying in %.1fs", failure, attempt, wait)
        time.sleep(wait)


def checked(request: LLMRequest, result: LLMResult) -> LLMError | None:
    """What is wrong with a (cleaned) answer: empty, or a structured answer that is not JSON or nests
    too deep to be parsed safely. None when it is fine."""
    if not result.text:
        return LLMError("empty answer", transient=True, kind="malformed")
    if request.json_schema is not None:
        try:
            sanitize.check_json(result.text)
            json.loads(result.text)
        except (ValueError, RecursionError) as exc:
            return LLMError(f"structured answer is not usable JSON: {exc}"[:300], transient=True, kind="malformed",
                            answer=result.text[:2000])  # fmt: skip
    return None
