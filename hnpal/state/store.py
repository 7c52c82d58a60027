"""Redis keys and TTLs of the storage design.

==============================  ======  ======================================================
key                             TTL     value (JSON)
==============================  ======  ======================================================
``fsm:{telegram_id}:state``     60 min  ``{"state": "IDLE|DISCUSSION|ONBOARDING", "data": {...}}``
``session:{telegram_id}``       30 min  the user's cached profile
``context:{telegram_id}:{pid}`` 30 min  the loaded discussion context for one post
==============================  ======  ======================================================

Every key gets a TTL, every value is JSON, and every key carries the configured prefix. Methods never
raise on a Redis failure: reads return None, writes return False, and a warning is logged.
"""

from __future__ import annotations

import json
import logging
import threading
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)

FSM_TTL = 60 * 60
SESSION_TTL = 30 * 60
CONTEXT_TTL = 30 * 60

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def get_redis(url: str | None = None) -> redis.Redis:
    """A process-wide client with short timeouts, so a Redis outage costs milliseconds, not minutes."""
    if url is None:
        from hnpal.runtime import redis_url

        url = redis_url()
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=1.0,
                socket_timeout=2.0,
                health_check_interval=30,
                decode_responses=True,
            )
            _clients[url] = client
        return client


class BotState(StrEnum):
    IDLE = "IDLE"
    DISCUSSION = "DISCUSSION"
    ONBOARDING = "ONBOARDING"


class FsmState(BaseModel):
    state: BotState = BotState.IDLE
    data: dict[str, Any] = Field(default_factory=dict)


class StateStore:
    """Typed access to the per-user Redis keys."""

    def __init__(self, client: redis.Redis | None = None, *, prefix: str | None = None) -> None:
        if prefix is None:
            from config.settings import get_settings

            prefix = get_settings().redis_key_prefix
        self.prefix = prefix
        self._client = client

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = get_redis()
        return self._client

    # --- keys --------------------------------------------------------------------------------------
    def fsm_key(self, telegram_id: int) -> str:
        return f"{self.prefix}fsm:{int(telegram_id)}:state"

    def session_key(self, telegram_id: int) -> str:
        return f"{self.prefix}session:{int(telegram_id)}"

    def context_key(self, telegram_id: int, post_id: int) -> str:
        return f"{self.prefix}context:{int(telegram_id)}:{int(post_id)}"

    # --- generic JSON get/set that never raise ------------------------------------------------------
    def _get(self, key: str) -> Any | None:
        try:
            raw = self.client.get(key)
        except (redis.RedisError, OSError) as exc:
            log.warning("redis unavailable, reading %s skipped: %s", key, exc)
            return None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            log.warning("redis key %s held invalid JSON; dropped", key)
            self._delete(key)
            return None

    def _set(self, key: str, value: Any, ttl: int) -> bool:
        try:
            self.client.set(key, json.dumps(value, default=str, separators=(",", ":")), ex=ttl)
            return True
        except (redis.RedisError, OSError) as exc:
            log.warning("redis unavailable, writing %s skipped: %s", key, exc)
            return False

    def _delete(self, *keys: str) -> bool:
        try:
            self.client.delete(*keys)
            return True
        except (redis.RedisError, OSError) as exc:
            log.warning("redis unavailable, deleting %s skipped: %s", keys, exc)
            return False

    def once(self, name: str, ttl: int) -> bool:
        """True the first time ``name`` is asked for within ``ttl`` seconds (a notice sent at most once
        per interval), False after that. Redis unreachable: True (a notice too many beats none)."""
        try:
            return bool(self.client.set(f"{self.prefix}once:{name}", b"1", nx=True, ex=max(1, int(ttl))))
        except (redis.RedisError, OSError) as exc:
            log.warning("redis unavailable, notice %s not rate-limited: %s", name, exc)
            return True

    # --- FSM -----------------------------------------------------------------------------------------
    def get_fsm(self, telegram_id: int) -> FsmState | None:
        raw = self._get(self.fsm_key(telegram_id))
        if raw is None:
            return None
        try:
            return FsmState.model_validate(raw)
        except ValidationError:
            log.warning("fsm state for %s was malformed; dropped", telegram_id)
            self._delete(self.fsm_key(telegram_id))
            return None

    def set_fsm(self, telegram_id: int, state: FsmState) -> bool:
        return self._set(self.fsm_key(telegram_id), state.model_dump(mode="json"), FSM_TTL)

    def clear_fsm(self, telegram_id: int) -> bool:
        return self._delete(self.fsm_key(telegram_id))

    # --- session cache -----------------------------------------------------------------------------
    def get_session(self, telegram_id: int) -> dict[str, Any] | None:
        value = self._get(self.session_key(telegram_id))
        return value if isinstance(value, dict) else None

    def set_session(self, telegram_id: int, profile: dict[str, Any]) -> bool:
        return self._set(self.session_key(telegram_id), profile, SESSION_TTL)

    # --- discussion context cache ------------------------------------------------------------------
    def get_context(self, telegram_id: int, post_id: int) -> dict[str, Any] | None:
        value = self._get(self.context_key(telegram_id, post_id))
        return value if isinstance(value, dict) else None

    def set_context(self, telegram_id: int, post_id: int, context: dict[str, Any]) -> bool:
        return self._set(self.context_key(telegram_id, post_id), context, CONTEXT_TTL)

    # --- privacy -------------------------------------------------------------------------------------
    def delete_user_keys(self, telegram_id: int) -> int:
        """Delete every key of this user (found with SCAN, never KEYS). Returns how many were deleted.

        Every per-user key is spelled ``<kind>:<telegram_id>[:...]``, so a key belongs to the user when
        its second part is exactly the id: user 12 keeps user 123's keys, and user 77's context for
        post 12 is not touched. Raises redis errors: a deletion must not fail silently.
        """
        tid = str(int(telegram_id))
        deleted = 0
        batch: list[str] = []
        for key in self.client.scan_iter(match=f"{self.prefix}*:{tid}*", count=500):
            parts = key[len(self.prefix) :].split(":") if key.startswith(self.prefix) else []
            if len(parts) >= 2 and parts[1] == tid:
                batch.append(key)
            if len(batch) >= 500:
                deleted += self.client.delete(*batch)
                batch.clear()
        if batch:
            deleted += self.client.delete(*batch)
        return deleted
