"""Fair service: one user (or one group) cannot make everyone else wait.

Every incoming update is charged, in the bot process before anything is enqueued (so before any
expensive work), to its sender's budget and, in a group, to the group's as well: a token bucket kept as
GCRA in Redis (the theoretical arrival time ``<prefix>fair:user/<id>`` and ``<prefix>fair:chat/<id>``). An
update within the budget is enqueued at once; one over it gets a *slot* in the sender's own future, the
next free one, ``1 / rate`` after the previous: it is stored as 'deferred' with ``deferred_until`` and its
task is enqueued with that countdown. So a flood never sits in the shared queue ahead of anyone else's
updates: it waits in its sender's own line, in order, and nothing is dropped. A slot further away than
the longest countdown a task may carry is left to the sweep (``hnpal.telegram.sweep``), which also
enqueues a deferred update whose task was lost.

Choosing the budget: each update is answered in its sender's chat, and Telegram takes one message a second
per chat (the sender paces a chat's messages 1.15 s apart, and a worker thread waits for its chat's slot).
A user's updates handed to the workers faster than that would pile up in worker threads, each waiting its
turn in that one chat while everyone else's updates wait for a thread (measured: a burst of 20 at 1 a second
took the ordinary users' p95 from 0.1 s to 21 s). So the defaults stay under it: 0.5 a second after a burst
of 5 (HNPAL_TELEGRAM_USER_UPDATE_RATE / _BURST); a group's: 0.5 a second after 10.

One Lua script charges a whole batch in one round trip, atomically, on Redis's clock. Redis down: the
broker is the same Redis, so nothing could be enqueued anyway; the bot retries the batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from config.settings import Settings

KEY_SPACE = "fair"

# KEYS: per update, its user key and its chat key ('' when none).
# ARGV: user interval, user tolerance (burst * interval), chat interval, chat tolerance, key TTL slack (s).
# Returns {now, then per update the seconds until its slot (0: now)} as strings.
_CHARGE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {string.format('%.6f', now)}
local cache = {}
local function tat(key)
    if cache[key] == nil then
        local v = tonumber(redis.call('GET', key))
        if not v or v < now then v = now end
        cache[key] = v
    end
    return cache[key]
end
local limits = {{tonumber(ARGV[1]), tonumber(ARGV[2])}, {tonumber(ARGV[3]), tonumber(ARGV[4])}}
for i = 1, #KEYS, 2 do
    local slot = now
    for k = 0, 1 do
        local key = KEYS[i + k]
        if key ~= '' then
            local s = tat(key) - limits[k + 1][2]
            if s > slot then slot = s end
        end
    end
    for k = 0, 1 do
        local key = KEYS[i + k]
        if key ~= '' then
            local v = tat(key)
            if slot > v then v = slot end
            cache[key] = v + limits[k + 1][1]
        end
    end
    out[#out + 1] = string.format('%.6f', slot - now)
end
for key, v in pairs(cache) do
    redis.call('SET', key, string.format('%.6f', v), 'PX', math.ceil((v - now + tonumber(ARGV[5])) * 1000))
end
return out
"""


@dataclass(frozen=True)
class Budget:
    user_rate: float
    user_burst: int
    group_rate: float
    group_burst: int
    prefix: str = ""

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Budget:
        if settings is None:
            from config.settings import get_settings

            settings = get_settings()
        return cls(
            user_rate=settings.telegram_user_update_rate,
            user_burst=settings.telegram_user_update_burst,
            group_rate=settings.telegram_group_update_rate,
            group_burst=settings.telegram_group_update_burst,
            prefix=settings.redis_key_prefix,
        )

    def charge(self, client: redis.Redis, senders: list[tuple[int | None, int | None]]) -> list[float]:
        """Charge one update per ``(telegram user id, chat id)``, in order; the seconds each must wait
        (0.0: within the budget). An update with neither (a malformed one) costs nothing. A chat that is
        the user's own private chat is charged to the user only."""
        keys: list[str] = []
        for user_id, chat_id in senders:
            user_key = f"{self.prefix}{KEY_SPACE}:user/{int(user_id)}" if user_id is not None else ""
            group = chat_id is not None and chat_id != user_id and chat_id < 0
            chat_key = f"{self.prefix}{KEY_SPACE}:chat/{int(chat_id)}" if group else ""  # type: ignore[arg-type]
            keys += [user_key, chat_key]
        if not keys:
            return []
        user_interval, group_interval = 1 / self.user_rate, 1 / self.group_rate
        answer = _script(client)(
            keys=keys,
            args=(user_interval, self.user_burst * user_interval, group_interval, self.group_burst * group_interval, 5),
        )
        return [max(0.0, float(v)) for v in answer[1:]]


@functools.cache
def _script(client: redis.Redis):
    return client.register_script(_CHARGE_LUA)
