"""Telegram's sending limits, shared by every sender process through Redis.

Telegram answers 429 when a bot sends more than about 30 messages a second overall (1000 with paid
broadcasts) or more than one a second to one chat. Every Celery worker thread that sends asks a
:class:`SendLimiter` first::

    limiter = SendLimiter.from_settings()
    limiter.acquire(chat_id)          # reserves this send's slot and sleeps until it
    api.send_message(chat_id, text)
    # on RetryAfter: limiter.penalize(exc.retry_after, chat_id or None), then retry later

How it paces: GCRA (the generic cell rate algorithm) as virtual scheduling with reservations. Redis
keeps, under the configured key prefix, a *theoretical arrival time* (TAT: the earliest moment the next
send may go) for the overall limit (``<prefix>ratelimit:send/overall``) and one per chat
(``<prefix>ratelimit:send/chat/<id>``), each with a TTL a second past it. Sends are spaced by the
emission interval ``T = (1 + margin) / rate`` overall and ``T_chat = (1 + chat_margin) / chat_rate`` per chat.
One Lua script, atomic and on Redis's clock (``TIME``: one clock for every host), per send:

* the chat's TAT is later than now: nothing is reserved; the script answers the wait, the caller sleeps
  and asks again (a chat's sends are rare, so this costs little);
* else it reserves the next overall slot, ``slot = max(now, TAT - burst * T)``. When ``slot - now`` is
  more than the caller may still wait (``max_wait``) nothing is reserved and :class:`LimiterTimeout` is
  raised; else the overall TAT becomes ``max(TAT, now) + T``, the chat's ``slot + T_chat``, and the
  caller sleeps until ``slot`` (exactly: no random jitter) and sends.

So a granted send costs one Redis round trip however many threads wait: each reserves its own slot at
once and sleeps until it (no polling, no herd waking at a window's edge), and sends leave evenly spaced,
``T`` apart, instead of in bursts at window starts. :meth:`~SendLimiter.reserve_many` takes consecutive
slots for several distinct chats in one run of a second script (a batch of brief digests at paid rates:
one round trip for several messages); :meth:`~SendLimiter.wait_for` sleeps until each and applies the
late and block rules below, falling back to :meth:`~SendLimiter.acquire` for a slot given up.

The margin, and why evenly spaced sends survive jitter: Telegram (and the sandbox server) counts
*arrivals* in a sliding one-second window and refuses the ``rate + 1``-th. Any ``rate + 1`` consecutive
slots span ``rate * T = 1 + margin`` seconds, so the server never sees more than ``rate`` in a second as
long as the delay from slot to arrival (scheduling, GIL, network) varies by less than ``margin`` seconds
among them, whatever the rate. The trade-off: margin 0.03 (the default) paces at 0.971 of the limit
(29.1/s of 30, 971/s of 1000) and tolerates 30 ms of such jitter; 0.05 gives 0.952 and 50 ms; 0.01 gives
0.99 and only 10 ms. The same holds for one chat, with a margin of its own: ``chat_margin`` 0.15 (a
chat's sends 1.15 s apart) tolerates 150 ms, because a chat's sends are few (a flat_scroll digest, a
reply) and their pace costs no throughput, while a 429 in the middle of a reply holds every sender off
(0.03 let through one chat 429 in a few runs of the demo). ``burst``
(default 0) lets that many sends go back to back after an idle spell; each eats ``T`` of the jitter
tolerance, so keep it 0 for Telegram.

Two things keep the jitter under the margin on a busy host (measured in the digest benchmark on two
shared cores: answers from Redis reaching their thread up to 100 ms late, wake-ups up to 60 ms late):

* the script also answers Redis's ``now``, and the thread sleeps until its slot mapped onto its own
  monotonic clock (:class:`_RedisClock`: the offset of the quickest round trip seen, measured with a few
  ``TIME`` calls while none was quick, so to within a fraction of a millisecond), not for ``slot - now``
  counted from when the answer arrived;
* a thread that wakes more than ``late_limit`` (default ``margin / 2``) after its slot gives the slot up
  and reserves again, at most ``MAX_MISSES`` times in a row (then it sends late: the whole host is slow,
  every send is late alike). A missed slot is a gap in the pacing (:attr:`SendLimiter.missed_slots`
  counts them); the chat's TAT set for it is released by the next reservation.

Neither covers a stall between the wake-up and the request's arrival at Telegram (a long garbage
collection in the sender, the network) longer than ``margin - late_limit``: a 429 is then still possible,
and :meth:`~SendLimiter.penalize` is the answer.

:meth:`~SendLimiter.penalize` (after a 429) pushes the overall (or the chat's) TAT to ``now + seconds``,
never backwards, so no slot is given out before then; it also records the block (``send/blocked``,
``send/blocked/chat/<id>``) for :meth:`~SendLimiter.blocked_for`. Slots reserved before the 429 are still
used in other processes (at most one per waiting thread); in this process a thread that wakes for such a
slot inside an overall block reserves again instead of sending.

The ``limits`` library is no longer used here: its moving windows are what this replaces, and its Redis
storage only wrapped the connection pool this module takes from :func:`hnpal.state.store.get_redis`.

Redis errors are not swallowed: if Redis is down the send fails (and its task retries); Celery's broker
is the same Redis, so nothing else would work anyway.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from config.settings import Settings

DEFAULT_MARGIN = 0.03  # emission interval = (1 + margin) / rate: 0.97 of the limit, 30 ms of jitter tolerated
DEFAULT_CHAT_MARGIN = 0.15  # one chat's sends (1 + chat_margin) / chat_rate apart: 150 ms of jitter tolerated
DEFAULT_BURST = 0  # sends allowed back to back after an idle spell
TRY_SLACK = 0.001  # try_acquire takes a slot at most this far ahead (and sleeps until it)
MAX_MISSES = 2  # slots given up in a row for waking late; then the send goes late (the whole host is slow)
LOCAL_BLOCK_SLACK = 0.005  # this-process block check: Redis's and this host's clocks meet within this

KEY_SPACE = "ratelimit"
OVERALL_KEY = "send/overall"
CHAT_KEY = "send/chat/{chat_id}"
BLOCK_KEY = "send/blocked"
CHAT_BLOCK_KEY = "send/blocked/chat/{chat_id}"

GRANTED, CHAT_BUSY, TOO_FAR = "ok", "chat", "far"

# KEYS: overall TAT, chat TAT
# ARGV: overall interval T (s), chat interval (s), burst allowance (s, burst * T), max seconds ahead, the
#       chat TAT this caller set for a slot it missed ('' if none: a chat TAT equal to it is ignored)
# Returns {status, seconds, now, chat TAT}: "ok" and the seconds until the reserved slot; "chat" and the
# seconds until the chat's TAT (nothing reserved); "far" and the seconds until the slot it would have
# been (nothing reserved); now is Redis's clock. Strings: Lua numbers would be truncated to integers.
_RESERVE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local chat_raw = redis.call('GET', KEYS[2])
local chat_tat = tonumber(chat_raw)
if chat_tat and chat_tat > now and chat_raw ~= ARGV[5] then
    return {'chat', string.format('%.6f', chat_tat - now), stamp, ''}
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local slot = tat - tonumber(ARGV[3])
if slot < now then slot = now end
if slot - now > tonumber(ARGV[4]) then
    return {'far', string.format('%.6f', slot - now), stamp, ''}
end
local overall = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', overall), 'PX', math.ceil((overall - now) * 1000) + 1000)
local chat = slot + tonumber(ARGV[2])
chat_raw = string.format('%.6f', chat)
redis.call('SET', KEYS[2], chat_raw, 'PX', math.ceil((chat - now) * 1000) + 1000)
return {'ok', string.format('%.6f', slot - now), stamp, chat_raw}
"""

# Several sends in one run (reserve_many): KEYS: overall TAT, then one chat TAT per send (distinct chats);
# ARGV: T, chat interval, burst allowance, max seconds ahead. Returns {now, then per send: status, seconds,
# chat TAT}: the same answers as _RESERVE_LUA, the granted slots consecutive; after the first "far" every
# later send is "far" too (nothing reserved for them).
_RESERVE_MANY_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {t[1] .. '.' .. string.format('%06d', tonumber(t[2]))}
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local interval, chat_interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local allowance, ahead = tonumber(ARGV[3]), tonumber(ARGV[4])
local granted, far = false, false
for i = 2, #KEYS do
    local chat_tat = tonumber(redis.call('GET', KEYS[i]))
    local slot = tat - allowance
    if slot < now then slot = now end
    if chat_tat and chat_tat > now then
        table.insert(out, 'chat'); table.insert(out, string.format('%.6f', chat_tat - now)); table.insert(out, '')
    elseif far or slot - now > ahead then
        far = true
        table.insert(out, 'far'); table.insert(out, string.format('%.6f', slot - now)); table.insert(out, '')
    else
        granted = true
        tat = tat + interval
        local chat_raw = string.format('%.6f', slot + chat_interval)
        redis.call('SET', KEYS[i], chat_raw, 'PX', math.ceil((slot + chat_interval - now) * 1000) + 1000)
        table.insert(out, 'ok'); table.insert(out, string.format('%.6f', slot - now)); table.insert(out, chat_raw)
    end
end
if granted then
    redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return out
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


# A 429 for one chat: KEYS: the recent 429s (a sorted set of chat ids by time); ARGV: chat id, window (s).
# Returns how many distinct chats met a 429 within the window, this one included.
_RECENT_429_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return redis.call('ZCARD', KEYS[1])
"""
RECENT_429_KEY = "send/recent429"
GLOBAL_429_WINDOW = 2.0  # 429s in this many distinct chats within this many seconds: the overall limit
GLOBAL_429_CHATS = 2


class LimiterTimeout(Exception):  # the name the callers use (not ...Error)
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


@dataclass(frozen=True)
class Reservation:
    """A slot :meth:`SendLimiter.reserve_many` took for one chat: ``slot`` on this process's monotonic
    clock, the chat TAT it set (to release it if the slot is given up), and when it was reserved."""

    chat_id: int
    slot: float
    chat_tat: str
    reserved_at: float


class _RedisClock:
    """Maps Redis's clock onto this process's monotonic clock, so a thread sleeps until its slot even when
    the script's answer reached it late (GIL, a busy core): the offset of the round trip with the smallest
    error bound (half its duration, grown with age by a clock drift of at most ``DRIFT``). While that bound
    is over ``GOOD`` (the first call: a new connection, the script loaded), a few ``TIME`` round trips,
    at most once a second, measure it better."""

    DRIFT = 5e-4  # 500 ppm: NTP's largest slew
    GOOD = 0.001
    SAMPLES = 3

    def __init__(self) -> None:
        self._best: tuple[float, float, float] | None = None  # offset, error bound, measured at
        self._calibrated_at = float("-inf")

    def error(self, now: float) -> float:
        best = self._best
        return math.inf if best is None else best[1] + self.DRIFT * (now - best[2])

    def local(self, redis_now: float, before: float, after: float) -> float:
        """The monotonic time at which Redis's clock read ``redis_now``, read by a call that began at
        ``before`` and ended at ``after`` (the answer is always within them)."""
        if (after - before) / 2 <= self.error(after):
            self._best = (redis_now - (before + after) / 2, (after - before) / 2, after)
        return min(max(redis_now - self._best[0], before), after)  # type: ignore[index]

    def calibrate(self, client: redis.Redis) -> None:
        now = time.monotonic()
        if self.error(now) <= self.GOOD or now - self._calibrated_at < 1.0:
            return
        self._calibrated_at = now
        for _ in range(self.SAMPLES):
            before = time.monotonic()
            seconds, micros = client.time()
            self.local(seconds + micros / 1_000_000, before, time.monotonic())
            if self.error(time.monotonic()) <= self.GOOD:
                return


_cache: dict[tuple[str, str, float, float], SendLimiter] = {}
_cache_lock = threading.Lock()


class SendLimiter:
    """Paces sends to the overall and the per-chat limit (see the module docstring).

    ``margin``: the emission interval is ``(1 + margin) / rate``; the jitter (seconds) tolerated between
    a slot and its arrival at Telegram, for ``1 / (1 + margin)`` of the limit. ``chat_margin``: the same
    for one chat's sends (default 0.15: its pace costs no throughput). ``burst``: sends allowed
    back to back after an idle spell (0: none). ``late_limit``: a thread waking more than this after its
    slot gives it up and reserves again (default ``margin / 2``; ``math.inf``: never). ``safety`` and
    ``gap`` are the moving-window limiter's knobs, kept for callers: ``safety`` (a fraction of the limit)
    maps onto ``margin = 1 / safety - 1`` when ``margin`` is not given; ``gap`` is accepted and ignored
    (the margin is also the jitter allowance).
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
        chat_margin: float = DEFAULT_CHAT_MARGIN,
        burst: int = DEFAULT_BURST,
        late_limit: float | None = None,
    ) -> None:
        if overall_rate <= 0 or chat_rate <= 0:
            raise ValueError("rates are positive")
        if safety is not None and not 0 < safety <= 1:
            raise ValueError("safety is in (0, 1]")
        if gap is not None and gap < 0:
            raise ValueError("gap is >= 0")
        if margin is None:
            margin = DEFAULT_MARGIN if safety is None else 1 / safety - 1
        if margin < 0 or chat_margin < 0:
            raise ValueError("margin and chat_margin are >= 0")
        if burst < 0:
            raise ValueError("burst is >= 0")
        if late_limit is not None and late_limit < 0:
            raise ValueError("late_limit is >= 0")
        from hnpal.state.store import get_redis

        if redis_url is None:
            from hnpal.runtime import redis_url as configured_redis_url

            redis_url = configured_redis_url()
        self.overall_rate = float(overall_rate)
        self.chat_rate = float(chat_rate)
        self.margin = float(margin)
        self.burst = int(burst)
        self.overall_interval = (1 + self.margin) / self.overall_rate
        self.chat_margin = float(chat_margin)
        self.chat_interval = (1 + self.chat_margin) / self.chat_rate
        self.prefix = prefix
        self.redis = get_redis(redis_url)  # the app's shared pool; every key is "<prefix>ratelimit:send/..."
        self._reserve_script = self.redis.register_script(_RESERVE_LUA)
        self._penalize_script = self.redis.register_script(_PENALIZE_LUA)
        self._reserve_many_script = self.redis.register_script(_RESERVE_MANY_LUA)
        self._recent_script = self.redis.register_script(_RECENT_429_LUA)
        self._overall_key = self._key(OVERALL_KEY)
        self._block_key = self._key(BLOCK_KEY)
        self._burst_allowance = self.burst * self.overall_interval
        self._clock = _RedisClock()
        self.late_limit = self.margin / 2 if late_limit is None else float(late_limit)
        self.missed_slots = 0  # slots given up for waking later than late_limit
        # an overall block this process learned of (monotonic: when penalized, until when)
        self._local_block = (float("-inf"), float("-inf"))

    def __repr__(self) -> str:
        return (
            f"SendLimiter(overall={self.overall_rate:g}/s every {self.overall_interval * 1000:.3f}ms, "
            f"chat={self.chat_rate:g}/s every {self.chat_interval:.3f}s, margin={self.margin:g}, "
            f"chat_margin={self.chat_margin:g}, burst={self.burst}, prefix={self.prefix!r})"
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

    def load_scripts(self) -> None:
        """Load the Lua scripts into Redis now (one round trip each), not on a first send's clock."""
        for script in (self._reserve_script, self._penalize_script, self._reserve_many_script, self._recent_script):
            self.redis.script_load(script.script)  # the same sha the Script object computed

    # --- keys ------------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return f"{self.prefix}{KEY_SPACE}:{name}"

    def _chat_key(self, chat_id: int) -> str:
        return self._key(CHAT_KEY.format(chat_id=int(chat_id)))

    def _chat_block_key(self, chat_id: int) -> str:
        return self._key(CHAT_BLOCK_KEY.format(chat_id=int(chat_id)))

    # --- limiting --------------------------------------------------------------------------------

    def _reserve(self, chat_id: int, ahead: float, missed: str = "") -> tuple[str, float, float, str]:
        """One run of the script: (status, seconds, at, chat TAT), ``at`` the monotonic time it ran at,
        ``at + seconds`` the slot (or the chat's TAT); a slot is reserved only when status is GRANTED.
        ``missed``: the chat TAT returned for a slot this caller gave up (the chat is free again)."""
        self._clock.calibrate(self.redis)
        before = time.monotonic()
        status, seconds, redis_now, chat_tat = self._reserve_script(
            keys=(self._overall_key, self._chat_key(chat_id)),
            args=(self.overall_interval, self.chat_interval, self._burst_allowance, max(ahead, 0.0), missed),
        )
        at = self._clock.local(float(redis_now), before, time.monotonic())
        return status, max(float(seconds), 0.0), at, chat_tat

    def try_acquire(self, chat_id: int) -> float:
        """0.0 when a send to ``chat_id`` may go now (its slot taken), else the seconds to wait before
        trying again (nothing taken). One Redis round trip; raises redis errors."""
        status, seconds, at, _ = self._reserve(chat_id, TRY_SLACK)
        if status != GRANTED:
            return max(at + seconds - time.monotonic(), 1e-6)
        _sleep_until(at + seconds)  # a slot less than TRY_SLACK ahead: keep the spacing exact
        return 0.0

    def acquire(self, chat_id: int, *, max_wait: float = 30.0, missed: str = "") -> float:
        """Reserve the next slot for a send to ``chat_id`` and sleep until it; returns the seconds waited.
        Raises :class:`LimiterTimeout` (nothing reserved) when the slot is more than ``max_wait`` away.
        ``missed``: the chat TAT of a slot for this chat given up just before (it is ignored)."""
        start = time.monotonic()
        misses = 0
        while True:
            reserved_at = time.monotonic()
            elapsed = reserved_at - start
            status, seconds, at, chat_tat = self._reserve(chat_id, max_wait - elapsed, missed)
            if status == GRANTED:
                slot = at + seconds
                _sleep_until(slot)
                now = time.monotonic()
                penalized_at, blocked_until = self._local_block
                if penalized_at > reserved_at and now < blocked_until - LOCAL_BLOCK_SLACK:
                    missed = chat_tat  # a 429 came after this slot was reserved: do not send into the block
                    continue
                if now - slot > self.late_limit and misses < MAX_MISSES:
                    missed, misses = chat_tat, misses + 1  # woke too late (busy CPU, GC): take a new slot
                    self.missed_slots += 1
                    continue
                return now - start
            if status == TOO_FAR or elapsed + seconds > max_wait:
                raise LimiterTimeout(chat_id, elapsed, seconds)
            _sleep_until(at + seconds)  # the chat's previous send is less than its interval ago

    def reserve_many(self, chat_ids: list[int], *, max_wait: float = 30.0) -> list[Reservation | None]:
        """Reserve the next slots for sends to several distinct chats in one Redis round trip (a batch of
        digests: one message each). One :class:`Reservation` per chat, in order, consecutive slots; ``None``
        for a chat that is not free now (its previous send is less than the chat interval ago) or whose
        slot would be more than ``max_wait`` away: nothing is reserved for those (send them with
        :meth:`acquire`). Pass each reservation to :meth:`wait_for` before its send."""
        if not chat_ids:
            return []
        if len(set(chat_ids)) != len(chat_ids):
            raise ValueError("reserve_many takes distinct chats")
        self._clock.calibrate(self.redis)
        before = time.monotonic()
        answer = self._reserve_many_script(
            keys=(self._overall_key, *(self._chat_key(c) for c in chat_ids)),
            args=(self.overall_interval, self.chat_interval, self._burst_allowance, max(max_wait, 0.0)),
        )
        at = self._clock.local(float(answer[0]), before, time.monotonic())
        out: list[Reservation | None] = []
        for n, chat_id in enumerate(chat_ids):
            status, seconds, chat_tat = answer[1 + 3 * n : 4 + 3 * n]
            if isinstance(status, bytes):
                status, seconds, chat_tat = status.decode(), seconds.decode(), chat_tat.decode()
            granted = status == GRANTED
            out.append(Reservation(chat_id, at + max(float(seconds), 0.0), chat_tat, before) if granted else None)
        return out

    def wait_for(self, reservation: Reservation, *, max_wait: float = 30.0) -> float:
        """Sleep until a :meth:`reserve_many` slot and return the seconds waited. When the thread wakes more
        than ``late_limit`` after it (the slot was reserved ahead of a send that took long) or a 429 blocked
        every sender after it was reserved, the slot is given up and a new one taken with :meth:`acquire`
        (which may raise :class:`LimiterTimeout`)."""
        start = time.monotonic()
        _sleep_until(reservation.slot)
        now = time.monotonic()
        penalized_at, blocked_until = self._local_block
        blocked = penalized_at > reservation.reserved_at and now < blocked_until - LOCAL_BLOCK_SLACK
        if not blocked and now - reservation.slot <= self.late_limit:
            return now - start
        if not blocked:
            self.missed_slots += 1
        return (now - start) + self.acquire(reservation.chat_id, max_wait=max_wait, missed=reservation.chat_tat)

    def penalize(self, seconds: float, chat_id: int | None = None) -> None:
        """After a 429 with ``retry_after``: no slot (or, with ``chat_id``, none for that chat) is given out
        for the next ``seconds``. A longer block already in place is kept."""
        if seconds <= 0:
            return
        if chat_id is None:
            keys, allowance = (self._overall_key, self._block_key), self._burst_allowance
            now = time.monotonic()
            self._local_block = (now, max(self._local_block[1], now + seconds))
        else:
            keys, allowance = (self._chat_key(chat_id), self._chat_block_key(chat_id)), 0.0
        self._penalize_script(keys=keys, args=(float(seconds), allowance))

    def penalize_429(self, seconds: float, chat_id: int) -> bool:
        """After a 429 on a send to ``chat_id``. Telegram does not say which limit it was: one chat's (1 a
        second), a group's (20 a minute) or the bot's overall one. Only that chat is held off, unless 429s
        met :data:`GLOBAL_429_CHATS` distinct chats within :data:`GLOBAL_429_WINDOW` seconds: then the
        overall limit was hit and every sender holds off. Returns True for an overall block."""
        if seconds <= 0:
            return False
        chats = int(self._recent_script(keys=(self._key(RECENT_429_KEY),), args=(int(chat_id), GLOBAL_429_WINDOW)))
        overall = chats >= GLOBAL_429_CHATS
        self.penalize(seconds, chat_id)
        if overall:
            self.penalize(seconds)
        return overall

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


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def clear_cache() -> None:
    """Forget the limiters :meth:`SendLimiter.from_settings` made (tests that change settings)."""
    with _cache_lock:
        _cache.clear()


__all__ = ["LimiterTimeout", "Reservation", "SendLimiter", "clear_cache"]
