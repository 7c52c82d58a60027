"""A client for the HN Firebase API that reads many items at once, never one request at a time.

Items are fetched by a bounded pool of HNPAL_HN_CONCURRENCY threads sharing one keep-alive urllib3
connection pool (cheap per request; httpx's async pool was measured here to cost more per request as
concurrency grows, see docs/performance.md). Every request has a timeout, and transient
failures (connection errors, timeouts, 429 and 5xx, a truncated body) are retried with exponential
backoff and jitter by tenacity, honouring Retry-After. A permanent failure or a malformed body is
returned for that one item as an :class:`ItemError`; it never fails the batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from hnpal.errors import HNPalError

LISTS = {
    "top": "topstories",
    "new": "newstories",
    "best": "beststories",
    "ask": "askstories",
    "show": "showstories",
    "job": "jobstories",
}


class HNAPIError(HNPalError):
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
    return isinstance(exc, urllib3.exceptions.HTTPError)


def _wait(base: float) -> Callable[[RetryCallState], float]:
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
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.concurrency = concurrency
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.user_agent = user_agent
        self._http = urllib3.PoolManager(
            num_pools=4,
            maxsize=concurrency,
            block=True,
            timeout=urllib3.Timeout(total=timeout),
            retries=False,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
        )
        self._pool: ThreadPoolExecutor | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> HNClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._http.clear()

    # --- requests ------------------------------------------------------------------------------------
    def _get_once(self, path: str) -> Any:
        response = self._http.request("GET", self.base_url + path)
        if response.status == 429 or response.status >= 500:
            retry_after = response.headers.get("retry-after")
            raise HNAPIError(
                f"HTTP {response.status} for {path}",
                transient=True,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if response.status >= 400:
            raise HNAPIError(f"HTTP {response.status} for {path}", transient=False)
        try:
            return json.loads(response.data)
        except ValueError as exc:
            # A truncated body is usually a dropped connection: worth another try.
            raise HNAPIError(f"malformed JSON for {path}: {exc}", transient=True) from None

    def get_json(self, path: str) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=_wait(self.backoff),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        return retrying(self._get_once, path)

    def list_ids(self, name: str) -> list[int]:
        endpoint = LISTS.get(name, name)
        data = self.get_json(f"{endpoint}.json")
        if not isinstance(data, list):
            raise HNAPIError(f"{endpoint} is not a list", transient=False)
        return [int(x) for x in data if isinstance(x, int) and not isinstance(x, bool) and x > 0]

    def max_item(self) -> int:
        return int(self.get_json("maxitem.json"))

    def updates(self) -> dict[str, list]:
        data = self.get_json("updates.json")
        return data if isinstance(data, dict) else {"items": [], "profiles": []}

    def item(self, item_id: int) -> dict[str, Any] | None | ItemError:
        try:
            data = self.get_json(f"item/{int(item_id)}.json")
        except HNAPIError as exc:
            return ItemError(item_id, "malformed" if "malformed" in str(exc) else "http_error")
        except urllib3.exceptions.HTTPError:
            return ItemError(item_id, "unreachable")
        if data is None or isinstance(data, dict):
            return data
        return ItemError(item_id, "malformed")

    def items(self, ids: Iterable[int]) -> dict[int, dict[str, Any] | None | ItemError]:
        """Fetch every id concurrently; the result maps each id to its item, None or an ItemError."""
        unique = list(dict.fromkeys(int(i) for i in ids))
        if not unique:
            return {}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="hn-api")
        return dict(zip(unique, self._pool.map(self.item, unique), strict=True))
