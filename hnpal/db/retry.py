"""The database unreachable for a moment (a restart, a failover): the task retries with backoff.

A task whose work is idempotent declares ``**DB_RETRY`` on its decorator. It is no crawl attempt and no
failed write: the post or payload would otherwise wait for a sweep's staleness limit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from config.settings import get_settings

DB_TRANSIENT = (OperationalError, InterfaceError)
DB_RETRY: dict[str, Any] = {
    "autoretry_for": DB_TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": min(60, get_settings().max_countdown),
    "retry_jitter": True,
}
