"""Telegram's sending limits, shared by every sender process through Redis.

Telegram answers 429 when a bot sends more than about 30 messages a second overall (1000 with paid
broadcasts) or more than one a second to one chat. Every Celery worker thread that sends asks a
:class:`SendLimiter` first::

    limiter = SendLimiter.from_settings()
    limiter.acquire(chat_id)          # blocks until this send fits both limits
    api.send_message(chat_id, text)
    # on RetryAfter: limiter.penalize(exc.retry_after, chat_id or None), then retry later

How it counts (the ``limits`` library's *moving window*, kept in Redis under the configured key prefix,
so all processes share it):

* a limit is a :class:`limits.RateLimitItemPerSecond` ``(amount, multiples)``: overall
  ``floor(overall_rate * safety)`` per second (29 of 30, 970 of 1000), per chat ``floor(chat_rate)`` per
  second, or one per ``ceil(1 / rate)`` seconds for a fractional rate (0.5/s: one per 2 s);
* each window is a Redis list of acceptance times, newest first, trimmed to ``amount``, exactly the
  layout of :meth:`limits.storage.RedisStorage.acquire_entry`, so
  :meth:`~limits.storage.RedisStorage.get_moving_window` reads it (:meth:`SendLimiter.window_stats`);
* windows are ``gap`` (0.05 s) longer than the limit's period: requests reach Telegram a little
  reordered and delayed, and Telegram counts arrivals, so a send is allowed only when the send it
  replaces in the window is 1.05 s old. With ``safety`` this keeps the real service (and the sandbox
  server, which refuses when the sends of the last 1.0 s already reach the rate) from seeing an overrun
  while arrival jitter stays under the gap (without gap and safety the sandbox answered a few 429s in
  every run of 120 sends from 16 threads; with them, none); at 1000/s about 924 sends a second pass.

Both limits are checked and taken in ONE Lua script, with Redis's clock (one clock for every host): if
either window is full, or a :meth:`~SendLimiter.penalize` block is active, nothing is taken and the
script answers how long until the earliest moment a retry can succeed (the oldest entry's reset time,
or the block's end). ``limits``'s own ``MovingWindowRateLimiter.hit`` takes one limit per call; taking
two in sequence would need a rollback when the second fails, and would cost two round trips, so the
script does what two ``acquire_entry`` calls would do, atomically. No window is ever overrun, nothing is
over-counted, and an acquire is one Redis round trip (measured: about 7,000 a second for one thread
against a local Redis; 16 threads keep a 1000/s limit at its 970-per-1.05-s ceiling).

Redis errors are not swallowed: if Redis is down the send fails (and its task retries); Celery's broker
is the same Redis, so nothing else would work anyway.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import TYPE_CHECKING

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.util import WindowStats

if TYPE_CHECKING:
    from config.settings import Settings

DEFAULT_SAFETY = 0.97
DEFAULT_GAP = 0.05  # seconds added to every window: arrival jitter at Telegram
MAX_JITTER = 0.01  # at most this much random delay is added to a computed wait

OVERALL_KEY = "send/overall"
CHAT_KEY = "send/chat/{chat_id}"
BLOCK_KEY = "send/blocked"
CHAT_BLOCK_KEY = "send/blocked/chat/{chat_id}"

# KEYS: overall window, chat window, overall block, chat block
# ARGV: overall amount, overall window (s), chat amount, chat window (s)
# Returns "0" when a token of both windows was taken, else the seconds to wait (nothing taken).
_ACQUIRE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
for i = 3, 4 do
    local blocked_until = tonumber(redis.call('GET', KEYS[i]))
    if blocked_until and blocked_until - now > wait then
        wait = blocked_until - now
    end
end
for i = 1, 2 do
    local amount = tonumber(ARGV[2 * i - 1])
    local window = tonumber(ARGV[2 * i])
    local oldest = tonumber(redis.call('LINDEX', KEYS[i], amount - 1))
    if oldest and oldest + window - now > wait then
        wait = oldest + window - now
    end
end
if wait > 0 then
    return string.format('%.6f', wait)
end
local stamp = string.format('%.6f', now)
for i = 1, 2 do
    local amount = tonumber(ARGV[2 * i - 1])
    local window = tonumber(ARGV[2 * i])
    redis.call('LPUSH', KEYS[i], stamp)
    redis.call('LTRIM', KEYS[i], 0, amount - 1)
    redis.call('PEXPIRE', KEYS[i], math.ceil(window * 1000) + 1000)
end
return '0'
"""

# KEYS: block key; ARGV: seconds. The block only ever gets longer.
_PENALIZE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local seconds = tonumber(ARGV[1])
local blocked_until = now + seconds
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= blocked_until then
    return 0
end
redis.call('SET', KEYS[1], string.format('%.6f', blocked_until), 'PX', math.ceil(seconds * 1000) + 1000)
return 1
"""


class LimiterTimeout(Exception):  # noqa: N818 - the name the callers use
    """The send could not be allowed within ``max_wait``; retry it in ``retry_in`` seconds (also
    ``retry_after``, the name :class:`~hnpal.telegram.client.RetryAfter` uses)."""

    def __init__(self, chat_id: int, waited: float, retry_in: float) -> None:
        super().__init__(
            f"send to chat {chat_id} not allowed after waiting {waited:.2f}s; next chance in {retry_in:.2f}s"
        )
        self.chat_id = chat_id
        self.waited = waited
        self.retry_in = retry_in
        self.retry_after = retry_in


def rate_item(rate: float, safety: float = 1.0) -> RateLimitItem:
    """The moving-window limit for ``rate`` sends per second, ``safety`` applied to rates of 1/s and up:
    ``floor(rate * safety)`` per second (at least one), or one per ``ceil(1 / rate)`` seconds."""
    if rate <= 0:
        raise ValueError("rates are positive")
    if rate >= 1:
        return RateLimitItemPerSecond(max(1, math.floor(rate * safety + 1e-9)), 1, namespace="send")
    return RateLimitItemPerSecond(1, math.ceil(1 / rate - 1e-9), namespace="send")


_cache: dict[tuple[str, str, float, float], SendLimiter] = {}
_cache_lock = threading.Lock()


class SendLimiter:
    """Allows a send when it fits the overall and the per-chat limit (see the module docstring)."""

    def __init__(
        self,
        *,
        overall_rate: float,
        chat_rate: float,
        redis_url: str | None = None,
        prefix: str = "",
        safety: float = DEFAULT_SAFETY,
        gap: float = DEFAULT_GAP,
    ) -> None:
        if not 0 < safety <= 1:
            raise ValueError("safety is in (0, 1]")
        if gap < 0:
            raise ValueError("gap is >= 0")
        from hnpal.state.store import get_redis

        if redis_url is None:
            from hnpal.runtime import redis_url as configured_redis_url

            redis_url = configured_redis_url()
        self.overall = rate_item(overall_rate, safety)
        self.chat = rate_item(chat_rate)
        self.overall_window = self.overall.get_expiry() + gap
        self.chat_window = self.chat.get_expiry() + gap
        self.prefix = prefix
        # limits' storage on the app's shared connection pool; every key is "<prefix>ratelimit:send/..."
        self.storage = RedisStorage(
            redis_url, connection_pool=get_redis(redis_url).connection_pool, key_prefix=f"{prefix}ratelimit"
        )
        client = self.storage.get_connection()
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._penalize_script = client.register_script(_PENALIZE_LUA)
        self._overall_key = self.storage.prefixed_key(OVERALL_KEY)
        self._block_key = self.storage.prefixed_key(BLOCK_KEY)
        self._argv = (self.overall.amount, self.overall_window, self.chat.amount, self.chat_window)

    def __repr__(self) -> str:
        return (
            f"SendLimiter(overall={self.overall.amount}/{self.overall_window:g}s, "
            f"chat={self.chat.amount}/{self.chat_window:g}s, prefix={self.prefix!r})"
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SendLimiter:
        """The process's limiter for the configured rates (HNPAL_TELEGRAM_GLOBAL_RATE, _PAID_BROADCAST,
        _CHAT_RATE), Redis and key prefix."""
        from hnpal.runtime import redis_url

        if settings is None:
            from config.settings import get_settings

            settings = get_settings()
        url = redis_url(settings)
        key = (url, settings.redis_key_prefix, settings.telegram_overall_rate, settings.telegram_chat_rate)
        with _cache_lock:
            limiter = _cache.get(key)
            if limiter is None:
                limiter = cls(
                    overall_rate=settings.telegram_overall_rate,
                    chat_rate=settings.telegram_chat_rate,
                    redis_url=url,
                    prefix=settings.redis_key_prefix,
                )
                _cache[key] = limiter
        return limiter

    # --- keys ------------------------------------------------------------------------------------

    def _chat_key(self, chat_id: int) -> str:
        return self.storage.prefixed_key(CHAT_KEY.format(chat_id=int(chat_id)))

    def _chat_block_key(self, chat_id: int) -> str:
        return self.storage.prefixed_key(CHAT_BLOCK_KEY.format(chat_id=int(chat_id)))

    # --- limiting --------------------------------------------------------------------------------

    def try_acquire(self, chat_id: int) -> float:
        """0.0 when a send to ``chat_id`` may go now (a token of both limits taken), else the seconds to
        wait before trying again (nothing taken). One Redis round trip; raises redis errors."""
        keys = (self._overall_key, self._chat_key(chat_id), self._block_key, self._chat_block_key(chat_id))
        return max(float(self._acquire_script(keys=keys, args=self._argv)), 0.0)

    def acquire(self, chat_id: int, *, max_wait: float = 30.0) -> float:
        """Block (sleeping, not polling) until a send to ``chat_id`` is allowed; returns the seconds
        waited. Raises :class:`LimiterTimeout` (nothing taken) when that would take over ``max_wait``."""
        start = time.monotonic()
        while True:
            wait = self.try_acquire(chat_id)
            elapsed = time.monotonic() - start
            if wait <= 0:
                return elapsed
            if elapsed + wait > max_wait:
                raise LimiterTimeout(chat_id, elapsed, wait)
            # a little jitter, so the threads waiting for the same reset do not all wake at once
            time.sleep(wait + random.uniform(0, min(MAX_JITTER, 0.05 * wait + 0.001)))

    def penalize(self, seconds: float, chat_id: int | None = None) -> None:
        """After a 429 with ``retry_after``: no send at all (or, with ``chat_id``, none to that chat) is
        allowed for ``seconds``. A longer block already in place is kept."""
        if seconds <= 0:
            return
        key = self._block_key if chat_id is None else self._chat_block_key(chat_id)
        self._penalize_script(keys=(key,), args=(float(seconds),))

    def blocked_for(self, chat_id: int | None = None) -> float:
        """Seconds left of a :meth:`penalize` block (overall, plus the chat's with ``chat_id``)."""
        keys = [self._block_key] + ([] if chat_id is None else [self._chat_block_key(chat_id)])
        client = self.storage.get_connection()
        values = [float(v) for v in client.mget(keys) if v is not None]
        if not values:
            return 0.0
        seconds, micros = client.time()
        return max(0.0, max(values) - (seconds + micros / 1_000_000))

    def window_stats(self, chat_id: int | None = None) -> WindowStats:
        """``limits``'s view of a window (overall, or the chat's): (reset time, sends remaining). ``limits``
        reads it with this host's clock, the script writes Redis's: on one host they agree."""
        if chat_id is None:
            item, key, window = self.overall, OVERALL_KEY, self.overall_window
        else:
            item, key, window = self.chat, CHAT_KEY.format(chat_id=int(chat_id)), self.chat_window
        start, count = self.storage.get_moving_window(key, item.amount, window)  # type: ignore[arg-type]
        return WindowStats(start + window, item.amount - count)


def clear_cache() -> None:
    """Forget the limiters :meth:`SendLimiter.from_settings` made (tests that change settings)."""
    with _cache_lock:
        _cache.clear()


__all__ = ["LimiterTimeout", "SendLimiter", "clear_cache", "rate_item"]
