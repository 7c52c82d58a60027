"""Liveness of the processes no Celery event reports: the bot and beat write a heartbeat to Redis (a
timestamp under ``ops:heartbeat:<process>``, expiring after an hour) and the metrics endpoint turns it
into ``hnpal_heartbeat_age_seconds`` and ``hnpal_process_alive``.

The bot writes it every :data:`INTERVAL` seconds from its event loop; beat from its scheduler's tick
(:class:`BeatScheduler`, so a wedged scheduler stops beating). Best effort: Redis down is logged, never
raised.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from celery.beat import PersistentScheduler

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)
KEY = "ops:heartbeat:"
INTERVAL = 15.0
# A process is alive while its last heartbeat is younger than this (beat ticks at least every 5 minutes).
STALE_AFTER = {"bot": 120.0, "beat": 330.0}
_last: dict[str, float] = {}


def beat(process: str, *, client: redis.Redis | None = None, prefix: str | None = None, every: float = 0.0) -> None:
    """Record that ``process`` is alive now (at most once per ``every`` seconds in this process)."""
    import redis

    now = time.time()
    if every and now - _last.get(process, 0.0) < every:
        return
    _last[process] = now
    try:
        if client is None:
            from hnpal.state.store import get_redis

            client = get_redis()
        if prefix is None:
            from config.settings import get_settings

            prefix = get_settings().redis_key_prefix
        client.set(f"{prefix}{KEY}{process}", f"{now:.3f}", ex=3600)
    except (redis.RedisError, OSError) as exc:
        log.warning("heartbeat of %s not written (redis unavailable): %s", process, exc)


class BeatScheduler(PersistentScheduler):
    """Celery beat's persistent scheduler, beating at each tick."""

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        beat("beat", every=INTERVAL)
        return super().tick(*args, **kwargs)
