"""Telegram's sending limits, shared by every sender process through Redis.

Telegram answers 429 when a bot sends more than about 30 messages a second overall (1000 with paid
broadcasts) or more than one a second to one chat. Every Celery worker thread that sends asks a
:class:`SendLimiter` first::

    limiter = SendLimiter.from_settings()
    limiter.acquire(chat_id)          # blocks until this send's reserved slot has come
    api.send_message(chat_id, text)
    # on RetryAfter: limiter.penalize(exc.retry_after, chat_id or None), then retry later

How it paces: GCRA (the generic cell rate algorithm), as virtual scheduling with reservations. Redis
keeps, under the configured key prefix, a *theoretical arrival time* (TAT) for the overall limit
(``<prefix>ratelimit:send/overall``) and one per chat (``<prefix>ratelimit:send/chat/<id>``): the
earliest moment the next send may go. Sends are spaced by the emission interval ``T = (1 + margin) /
rate`` overall and ``T_chat = (1 + margin) / chat_rate`` per chat. One Lua script, atomic and on Redis's
clock (``TIME``: one clock for every host), does for each send:

* the chat's TAT later than now: nothing is reserved; the script answers the wait and the caller
  sleeps and asks again (one chat's sends are rare, so this costs little);
* else it reserves the next overall slot, ``slot = max(now, TAT - burst * T)``; when ``slot - now``
  exceeds what the caller may still wait (``max_wait``) nothing is reserved and :class:`LimiterTimeout`
  is raised; else the overall TAT becomes ``max(TAT, now) + T``, the chat's ``slot + T_chat``, and the
  caller sleeps until ``slot`` (exactly: no random jitter) and sends.

So a granted send is one Redis round trip, however many threads wait: each reserves its own slot at
once and sleeps until it (no polling, no thundering herd at window edges), and sends leave evenly
spaced, ``T`` apart, instead of in bursts at window starts.

The margin, and why evenly spaced sends survive jitter: Telegram (and the sandbox server) counts
*arrivals* in a sliding one-second window and refuses the ``rate + 1``-th. Any ``rate + 1`` consecutive
slots span ``rate * T = 1 + margin`` seconds, so the server sees at most ``rate`` sends in any second
as long as the delay from slot to arrival (scheduling, GIL, network) varies by less than ``margin``
seconds among them, whatever the rate: margin 0.03 gives 0.97 of the limit (29.1/s of 30, 971/s of
1000) and tolerates 30 ms of such jitter; 0.05 gives 0.952 and 50 ms; 0.01 gives 0.99 and only 10 ms.
The same holds for one chat (two sends ``T_chat`` = 1.03 s apart). ``burst`` (default 0) lets that many
sends go back to back after an idle spell; each one eats into the jitter tolerance, so keep it 0 for
Telegram.

:meth:`~SendLimiter.penalize` (after a 429) pushes the overall (or the chat's) TAT to ``now + seconds``,
never backwards, so no new reservation falls before then; it also records the block
(``send/blocked``, ``send/blocked/chat/<id>``) for :meth:`~SendLimiter.blocked_for`. Slots reserved
before the 429 are still valid in other processes (at most one per waiting thread); in this process a
thread that wakes for such a slot inside an overall block reserves again instead of sending.

The ``limits`` library is no longer used here: its moving windows are what this replaces, and its
Redis storage only wrapped the connection pool this module takes from :func:`hnpal.state.store.get_redis`.

Redis errors are not swallowed: if Redis is down the send fails (and its task retries); Celery's broker
is the same Redis, so nothing else would work anyway.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings

DEFAULT_MARGIN = 0.03  # emission interval = (1 + margin) / rate: 0.97 of the limit, 30 ms of jitter tolerated
DEFAULT_BURST = 0  # sends allowed back to back after an idle spell
TRY_SLACK = 0.001  # try_acquire takes a slot at most this far ahead (and sleeps until it)
LOCAL_BLOCK_SLACK = 0.005  # this-process block check: Redis's and this host's clocks meet within this

KEY_SPACE = "ratelimit"
OVERALL_KEY = "send/overall"
CHAT_KEY = "send/chat/{chat_id}"
BLOCK_KEY = "send/blocked"
CHAT_BLOCK_KEY = "send/blocked/chat/{chat_id}"

GRANTED, CHAT_BUSY, TOO_FAR = "ok", "chat", "far"

# KEYS: overall TAT, chat TAT
# ARGV: overall interval T (s), chat interval (s), burst allowance (s, burst * T), max seconds ahead
# Returns {status, seconds}: "ok" and the seconds until the reserved slot; "chat" and the seconds until
# the chat's TAT (nothing reserved); "far" and the seconds until the slot it would have been (nothing
# reserved). Times are strings: Lua numbers would be truncated to integers in the reply.
_RESERVE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local chat_tat = tonumber(redis.call('GET', KEYS[2]))
if chat_tat and chat_tat > now then
    return {'chat', string.format('%.6f', chat_tat - now)}
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local slot = tat - tonumber(ARGV[3])
if slot < now then slot = now end
if slot - now > tonumber(ARGV[4]) then
    return {'far', string.format('%.6f', slot - now)}
end
local overall = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', overall), 'PX', math.ceil((overall - now) * 1000) + 1000)
local chat = slot + tonumber(ARGV[2])
redis.call('SET', KEYS[2], string.format('%.6f', chat), 'PX', math.ceil((chat - now) * 1000) + 1000)
return {'ok', string.format('%.6f', slot - now)}
"""

# KEYS: TAT key, block key; ARGV: seconds, burst allowance (s). Neither is ever moved backwards.
_PENALIZE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked_until = now + tonumber(ARGV[1])
local tat = blocked_until + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]))
if not current or current < tat then
    redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
current = tonumber(redis.call('GET', KEYS[2]))
if not current or current < blocked_until then
    redis.call('SET', KEYS[2], string.format('%.6f', blocked_until), 'PX',
        math.ceil((blocked_until - now) * 1000) + 1000)
end
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


_cache: dict[tuple[str, str, float, float], SendLimiter] = {}
_cache_lock = threading.Lock()


class SendLimiter:
    """Paces sends to the overall and the per-chat limit (see the module docstring).

    ``margin``: the emission interval is ``(1 + margin) / rate``; the jitter (seconds) tolerated between
    a slot and its arrival at Telegram, for ``1 / (1 + margin)`` of the limit. ``burst``: sends allowed
    back to back after an idle spell (0: none). ``safety`` and ``gap`` are the moving-window limiter's
    knobs, kept for callers: ``safety`` (a fraction of the limit) maps onto ``margin = 1 / safety - 1``
    when ``margin`` is not given; ``gap`` is ignored (the margin is also the jitter allowance).
    """

    def __init__(
        self,
        *,
        overall_rate: float,
        chat_rate: float,
        redis_url: str | None = None,
        prefix: str = "",
        safety: float | None = None,
        gap: float | None = None,
        margin: float | None = None,
        burst: int = DEFAULT_BURST,
    ) -> None:
        if overall_rate <= 0 or chat_rate <= 0:
            raise ValueError("rates are positive")
        if safety is not None and not 0 < safety <= 1:
            raise ValueError("safety is in (0, 1]")
        if gap is not None and gap < 0:
            raise ValueError("gap is >= 0")
        if margin is None:
            margin = DEFAULT_MARGIN if safety is None else 1 / safety - 1
        if margin < 0:
            raise ValueError("margin is >= 0")
        if burst < 0:
            raise ValueError("burst is >= 0")
        from hnpal.state.store import get_redis

        if redis_url is None:
            from hnpal.runtime import redis_url as configured_redis_url

            redis_url = configured_redis_url()
        self.overall_rate = float(overall_rate)
        self.chat_rate = float(chat_rate)
        self.margin = float(margin)
        self.burst = int(burst)
        self.overall_interval = (1 + self.margin) / self.overall_rate
        self.chat_interval = (1 + self.margin) / self.chat_rate
        self.prefix = prefix
        self.redis = get_redis(redis_url)  # the app's shared pool; every key is "<prefix>ratelimit:send/..."
        self._reserve_script = self.redis.register_script(_RESERVE_LUA)
        self._penalize_script = self.redis.register_script(_PENALIZE_LUA)
        self._overall_key = self._key(OVERALL_KEY)
        self._block_key = self._key(BLOCK_KEY)
        self._burst_allowance = self.burst * self.overall_interval
        # an overall block this process learned of (monotonic: when penalized, until when)
        self._local_block = (float("-inf"), float("-inf"))

    def __repr__(self) -> str:
        return (
            f"SendLimiter(overall={self.overall_rate:g}/s every {self.overall_interval * 1000:.3f}ms, "
            f"chat={self.chat_rate:g}/s every {self.chat_interval:.3f}s, margin={self.margin:g}, "
            f"burst={self.burst}, prefix={self.prefix!r})"
        )

    @property
    def effective_rate(self) -> float:
        """The sends per second the overall pacing allows at most: ``rate / (1 + margin)``."""
        return 1 / self.overall_interval

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

    def _key(self, name: str) -> str:
        return f"{self.prefix}{KEY_SPACE}:{name}"

    def _chat_key(self, chat_id: int) -> str:
        return self._key(CHAT_KEY.format(chat_id=int(chat_id)))

    def _chat_block_key(self, chat_id: int) -> str:
        return self._key(CHAT_BLOCK_KEY.format(chat_id=int(chat_id)))

    # --- limiting --------------------------------------------------------------------------------

    def _reserve(self, chat_id: int, ahead: float) -> tuple[str, float]:
        """One run of the script: (status, seconds); a slot is reserved only when status is GRANTED."""
        status, seconds = self._reserve_script(
            keys=(self._overall_key, self._chat_key(chat_id)),
            args=(self.overall_interval, self.chat_interval, self._burst_allowance, max(ahead, 0.0)),
        )
        return status, max(float(seconds), 0.0)

    def try_acquire(self, chat_id: int) -> float:
        """0.0 when a send to ``chat_id`` may go now (its slot taken), else the seconds to wait before
        trying again (nothing taken). One Redis round trip; raises redis errors."""
        status, seconds = self._reserve(chat_id, TRY_SLACK)
        if status != GRANTED:
            return max(seconds, 1e-6)
        if seconds > 0:  # a slot less than TRY_SLACK ahead: keep the spacing exact
            time.sleep(seconds)
        return 0.0

    def acquire(self, chat_id: int, *, max_wait: float = 30.0) -> float:
        """Reserve the next slot for a send to ``chat_id`` and sleep until it; returns the seconds waited.
        Raises :class:`LimiterTimeout` (nothing reserved) when the slot is more than ``max_wait`` away."""
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            reserved_at = time.monotonic()
            status, seconds = self._reserve(chat_id, max_wait - elapsed)
            returned_at = time.monotonic()
            if status == GRANTED:
                if seconds > 0:
                    time.sleep(seconds)
                penalized_at, blocked_until = self._local_block
                if penalized_at > reserved_at and time.monotonic() < blocked_until - LOCAL_BLOCK_SLACK:
                    continue  # a 429 came after this slot was reserved: do not send into the block
                _dbg(f"{chat_id} {reserved_at:.6f} {returned_at:.6f} {seconds:.6f} {time.monotonic():.6f} {threading.get_ident()}")
                return time.monotonic() - start
            if status == TOO_FAR or elapsed + seconds > max_wait:
                raise LimiterTimeout(chat_id, elapsed, seconds)
            time.sleep(seconds)  # the chat's previous send is less than its interval ago

    def penalize(self, seconds: float, chat_id: int | None = None) -> None:
        """After a 429 with ``retry_after``: no slot (or, with ``chat_id``, none for that chat) is given out
        for the next ``seconds``. A longer block already in place is kept."""
        _dbg(f"PEN {chat_id} {time.monotonic():.6f} {seconds}")
        if seconds <= 0:
            return
        if chat_id is None:
            keys, allowance = (self._overall_key, self._block_key), self._burst_allowance
            now = time.monotonic()
            self._local_block = (now, max(self._local_block[1], now + seconds))
        else:
            keys, allowance = (self._chat_key(chat_id), self._chat_block_key(chat_id)), 0.0
        self._penalize_script(keys=keys, args=(float(seconds), allowance))

    def _seconds_until(self, keys: list[str]) -> float:
        pipe = self.redis.pipeline(transaction=False)
        pipe.mget(keys)
        pipe.time()
        values, (seconds, micros) = pipe.execute()
        times = [float(v) for v in values if v is not None]
        if not times:
            return 0.0
        return max(0.0, max(times) - (seconds + micros / 1_000_000))

    def blocked_for(self, chat_id: int | None = None) -> float:
        """Seconds left of a :meth:`penalize` block (overall, plus the chat's with ``chat_id``)."""
        return self._seconds_until([self._block_key] + ([] if chat_id is None else [self._chat_block_key(chat_id)]))

    def next_slot(self, chat_id: int | None = None) -> float:
        """Seconds until the earliest slot a new reservation could get (0.0: at once), ignoring ``burst``:
        overall, or also the chat's with ``chat_id`` (replaces the moving window's ``window_stats``)."""
        return self._seconds_until([self._overall_key] + ([] if chat_id is None else [self._chat_key(chat_id)]))


import os as _os
def _dbg(line):
    if _os.environ.get("HNPAL_RL_DEBUG"):
        with open(f"/tmp/diag/rl-{_os.getpid()}.log", "a") as f:
            f.write(line + "\n")


def clear_cache() -> None:
    """Forget the limiters :meth:`SendLimiter.from_settings` made (tests that change settings)."""
    with _cache_lock:
        _cache.clear()


__all__ = ["LimiterTimeout", "SendLimiter", "clear_cache"]
