"""An async client for the HN Firebase API: many items at once, never one request at a time.

Requests run concurrently (bounded by HNPAL_HN_CONCURRENCY) over one keep-alive connection pool, with
timeouts, and transient failures (connection errors, timeouts, 429 and 5xx) are retried with
exponential backoff and jitter by tenacity, honouring Retry-After. A permanent failure or a malformed
body is returned for that one item as an :class:`ItemError`; it never fails the batch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

LISTS = {
    "top": "topstories",
    "new": "newstories",
    "best": "beststories",
    "ask": "askstories",
    "show": "showstories",
    "job": "jobstories",
}


class HNAPIError(Exception):
    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class ItemError:
    """An item that could not be read (after retries)."""

    item_id: int
    reason: str  # http_error | malformed | unreachable


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, HNAPIError):
        return exc.transient
    return isinstance(exc, httpx.TransportError)


def _wait(base: float):
    exponential = wait_exponential_jitter(initial=base, max=10 * base + 5, jitter=base)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, HNAPIError) and exc.retry_after is not None:
            return min(exc.retry_after, 60.0)
        return exponential(state)

    return wait


class HNClient:
    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 32,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        user_agent: str = "HNPal",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.concurrency = concurrency
        self.attempts = attempts
        self.backoff = backoff
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            transport=transport,
        )

    async def __aenter__(self) -> HNClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get_once(self, path: str) -> Any:
        async with self._semaphore:
            response = await self._client.get(path)
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after")
            raise HNAPIError(
                f"HTTP {response.status_code} for {path}",
                transient=True,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise HNAPIError(f"HTTP {response.status_code} for {path}", transient=False)
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # A truncated body is usually a dropped connection: worth one more try.
            raise HNAPIError(f"malformed JSON for {path}: {exc}", transient=True) from None

    async def get_json(self, path: str) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=_wait(self.backoff),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(path)
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_ids(self, name: str) -> list[int]:
        endpoint = LISTS.get(name, name)
        data = await self.get_json(f"{endpoint}.json")
        if not isinstance(data, list):
            raise HNAPIError(f"{endpoint} is not a list", transient=False)
        return [int(x) for x in data if isinstance(x, int) and not isinstance(x, bool) and x > 0]

    async def max_item(self) -> int:
        return int(await self.get_json("maxitem.json"))

    async def updates(self) -> dict[str, list]:
        data = await self.get_json("updates.json")
        return data if isinstance(data, dict) else {"items": [], "profiles": []}

    async def item(self, item_id: int) -> dict[str, Any] | None | ItemError:
        try:
            data = await self.get_json(f"item/{int(item_id)}.json")
        except HNAPIError as exc:
            return ItemError(item_id, "malformed" if "malformed" in str(exc) else "http_error")
        except httpx.HTTPError:
            return ItemError(item_id, "unreachable")
        if data is None or isinstance(data, dict):
            return data
        return ItemError(item_id, "malformed")

    async def items(self, ids: Iterable[int]) -> dict[int, dict[str, Any] | None | ItemError]:
        """Fetch every id concurrently; the result maps each id to its item, None or an ItemError."""
        unique = list(dict.fromkeys(int(i) for i in ids))
        results = await asyncio.gather(*(self.item(i) for i in unique))
        return dict(zip(unique, results, strict=True))


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from synchronous code (Celery tasks, the CLI)."""
    return asyncio.run(coro)
