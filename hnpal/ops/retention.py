"""Retention: what is deleted when, so the database does not grow for ever.

* ``agent_calls`` older than ``HNPAL_AGENT_CALLS_RETENTION_DAYS`` (default 90): :func:`prune_agent_calls`,
  run daily by ``hnpal.ops.prune`` (beat, ``default`` queue), in batches of ``HNPAL_PRUNE_BATCH_SIZE``
  rows, one short transaction each, so it never holds long locks.
* Quarantined Telegram updates expire after 7 days and processed ones after 7 days:
  ``hnpal.telegram.sweep`` deletes them.
* Redis keys carry TTLs (see :mod:`hnpal.state.store`); the broker's queues are not state.
* Deleted accounts are hard-deleted after 30 days by ``hnpal.privacy.purge``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

PRUNE_SQL = text(
    "DELETE FROM agent_calls WHERE id IN ("
    "SELECT id FROM agent_calls WHERE called_at < :cutoff ORDER BY id LIMIT :batch)"
)


def prune_agent_calls(*, engine: Engine, older_than: timedelta, batch_size: int, now: datetime | None = None) -> int:
    """Delete ``agent_calls`` rows called before ``now - older_than``; returns how many were deleted."""
    cutoff = (now or datetime.now(UTC)) - older_than
    deleted = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(PRUNE_SQL, {"cutoff": cutoff, "batch": batch_size}).rowcount
        deleted += count
        if count < batch_size:
            return deleted


def prune() -> dict[str, int]:
    """The daily prune: ``agent_calls`` older than HNPAL_AGENT_CALLS_RETENTION_DAYS, in batches, and the
    model-call reservations lost workers left (they stopped counting when they expired)."""
    from config.settings import get_settings
    from hnpal.db.session import get_engine
    from hnpal.usage import allowance

    settings = get_settings()
    deleted = prune_agent_calls(
        engine=get_engine(),
        older_than=timedelta(days=settings.agent_calls_retention_days),
        batch_size=settings.prune_batch_size,
    )
    return {"agent_calls": deleted, "llm_reservations": allowance.prune()}
