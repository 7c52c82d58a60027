"""Privacy tasks (``default`` queue): purge accounts whose deletion grace period is over."""

from __future__ import annotations

from hnpal.celery import app
from hnpal.db.session import session_scope
from hnpal.privacy import service

MAX_ROUNDS = 50  # batches per run; the next run (hourly) goes on


# Idempotent: a purged user is gone, so running it twice (or a redelivered message) deletes nothing more.
@app.task(name="hnpal.privacy.purge", acks_late=True, reject_on_worker_lost=True)
def purge() -> dict:
    """Hard-delete users deleted more than the grace period ago. Returns how many and what went with them."""
    users = 0
    rows: dict[str, int] = {}
    for _ in range(MAX_ROUNDS):
        with session_scope() as session:
            done = service.purge(session=session)
        users += done.users
        for name, count in done.rows.items():
            rows[name] = rows.get(name, 0) + count
        if done.users < service.PURGE_BATCH:
            break
    return {"users": users, "rows": rows}
