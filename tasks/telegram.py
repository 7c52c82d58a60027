"""Telegram update tasks (``telegram`` queue): handle one stored update, tell a user over their update
budget; the sweep of what was left behind (``default``). The work is in :mod:`hnpal.telegram.updates`."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.errors import Retry
from hnpal.telegram import updates


# Idempotent: a processed or quarantined update is a no-op, so a redelivered message does nothing twice
# (a crash in the middle may at worst repeat one reply).
@app.task(name="hnpal.telegram.handle", queue=queues.TELEGRAM, bind=True, acks_late=True, reject_on_worker_lost=True,
          max_retries=None)  # fmt: skip
def handle(self, update_id: int) -> str:
    """Handle one stored update. Returns its final status."""
    try:
        return updates.handle(update_id, retries=self.request.retries).status
    except Retry as retry:
        raise self.retry(countdown=retry.countdown) from None


@app.task(name="hnpal.telegram.over_budget", queue=queues.TELEGRAM, bind=True, max_retries=3)
def over_budget(self, telegram_id: int) -> int:
    """Tell a user their updates are over the budget and wait in their own line. Returns how many wait."""
    try:
        return updates.over_budget(telegram_id)
    except Retry as retry:
        raise self.retry(countdown=retry.countdown) from None


@app.task(name="hnpal.telegram.sweep", queue=queues.DEFAULT)
def sweep() -> int:
    """Re-enqueue updates whose task was lost; drop expired quarantine and old processed rows."""
    return updates.sweep()
