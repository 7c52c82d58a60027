"""Privacy tasks (``default`` queue): purge accounts whose deletion grace period is over."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.privacy import service


# Idempotent: a purged user is gone, so running it twice (or a redelivered message) deletes nothing more.
@app.task(name="hnpal.privacy.purge", queue=queues.DEFAULT, acks_late=True, reject_on_worker_lost=True)
def purge() -> dict:
    """Hard-delete users deleted more than the grace period ago. Returns how many and what went with them."""
    return service.purge_expired()
