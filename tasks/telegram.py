"""Telegram update tasks (``telegram`` queue): handle one stored update; sweep what was left behind."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import OperationalError

from hnpal.celery import app
from hnpal.db.session import get_engine, session_scope
from hnpal.state.store import StateStore
from hnpal.telegram import service
from hnpal.telegram.client import Forbidden, NetworkError, RetryAfter
from hnpal.telegram.models import TelegramUpdate
from hnpal.telegram.ratelimit import LimiterTimeout
from hnpal.users.models import User

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, NetworkError, RetryAfter, LimiterTimeout)
MAX_ATTEMPTS = 4
ORDER_WAITS = 10  # at most this many short waits for an earlier update of the same chat
ORDER_WAIT_SECONDS = 0.5


def _outbox():  # type: ignore[no-untyped-def]
    """The outbox of one update's reply: once part of it is out, it is finished in place (a retry of
    the task would send it again from the start)."""
    from hnpal.telegram.outbox import TelegramOutbox

    return TelegramOutbox(reply=True)


# Idempotent: a processed or quarantined update is a no-op, so a redelivered message does nothing twice
# (a crash in the middle may at worst repeat one reply).
@app.task(name="hnpal.telegram.handle", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def handle(self, update_id: int) -> str:
    """Handle one stored update. Returns its final status."""
    return handle_stored(self, update_id)[0]


Inline = Callable[..., bool]


def handle_stored(task: Any, update_id: int, inline: dict[str, Inline] | None = None) -> tuple[str, bool]:
    """The work of :func:`handle` for ``task`` (a bound task: it retries through it). Returns the update's
    status and whether this call handled it (False: it was final already, or is missing).

    ``inline``: follow-up tasks this worker runs itself, by name; a runner returning False (it could not
    finish) has its task enqueued as usual."""
    # One autocommitted statement claims the attempt (the common case: one round trip); only when it
    # claims nothing is the row read again to tell why.
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        claimed = conn.execute(CLAIM, {"update_id": update_id, "check_order": task.request.retries < ORDER_WAITS})
        claimed = claimed.first()
        if claimed is None:
            row = conn.execute(
                select(TelegramUpdate.status).where(TelegramUpdate.update_id == update_id)
            ).scalar_one_or_none()
            if row is None:
                return "missing", False
            if row in ("processed", "quarantined"):
                return row, False
            # One chat's updates in the order they were sent (a typed answer after its button press):
            # an earlier one of this chat is still being handled, so this one waits a moment.
            raise task.retry(countdown=ORDER_WAIT_SECONDS)
    payload, attempts = dict(claimed.payload), claimed.attempts
    try:
        with session_scope() as session:
            effects = service.handle_update(session=session, out=_outbox(), store=StateStore(), update=payload)
            session.execute(
                update(TelegramUpdate)
                .where(TelegramUpdate.update_id == update_id)
                .values(status="processed", processed_at=datetime.now(UTC), error=None)
            )
    except TRANSIENT as exc:
        if attempts < MAX_ATTEMPTS:
            countdown = getattr(exc, "retry_after", None) or min(60, 2**attempts)
            _record(update_id, "failed", f"{type(exc).__name__}: {exc}")
            raise task.retry(countdown=countdown) from None
        return _quarantine(update_id, payload, exc), True
    except Forbidden as exc:  # 403: the user blocked the bot (or is gone); not the update's fault
        return _forbidden(update_id, payload, exc), True
    except service.MalformedUpdate as exc:  # a shape Telegram never sends: kept aside, no traceback
        log.warning("update %s is malformed (%s); quarantined", update_id, exc)
        return _quarantine(update_id, payload, exc), True
    except Exception as exc:  # a poison update: set it aside, tell the user, move on
        log.exception("update %s could not be handled", update_id)
        return _quarantine(update_id, payload, exc), True
    for task_name, args, options in effects.tasks:  # after the commit: the rows these ids name exist
        runner = (inline or {}).get(task_name)
        if runner is None or not runner(*args):
            app.send_task(task_name, args=list(args), **options)
    return "processed", True


# Count an attempt at an update that is not final, unless (when order still matters) an earlier update of
# the same chat, received in the last two minutes, is not handled yet.
CLAIM = text(
    """
    UPDATE telegram_updates t SET attempts = t.attempts + 1
    WHERE t.update_id = :update_id AND t.status NOT IN ('processed', 'quarantined')
      AND NOT (:check_order AND t.chat_id IS NOT NULL AND EXISTS (
          SELECT 1 FROM telegram_updates e
          WHERE e.chat_id = t.chat_id AND e.update_id < t.update_id
            AND e.status IN ('received', 'failed', 'deferred')
            AND e.received_at > now() - interval '2 minutes'))
    RETURNING t.payload, t.attempts
    """
)


def _record(update_id: int, status: str, error: str) -> None:
    with session_scope() as session:
        session.execute(
            update(TelegramUpdate)
            .where(TelegramUpdate.update_id == update_id)
            .values(status=status, error=error[:4000])
        )


def _forbidden(update_id: int, payload: dict, exc: Forbidden) -> str:
    """Telegram refused our reply: mark the user blocked (as a digest send does) and finish the update.
    Retrying cannot help and an apology cannot arrive; writing to the bot again makes them active."""
    chat_id, _ = service.apology(payload)  # the private chat the reply went to: the user's own id
    with session_scope() as session:
        if chat_id is not None:
            session.execute(
                update(User).where(User.telegram_id == chat_id, User.status != "deleted").values(status="blocked")
            )
        session.execute(
            update(TelegramUpdate)
            .where(TelegramUpdate.update_id == update_id)
            .values(status="processed", processed_at=datetime.now(UTC), error=f"{type(exc).__name__}: {exc}"[:4000])
        )
    log.info("update %s: reply refused (%s); user marked blocked", update_id, exc)
    return "processed"


def _quarantine(update_id: int, payload: dict, exc: BaseException) -> str:
    with session_scope() as session:
        session.execute(
            update(TelegramUpdate)
            .where(TelegramUpdate.update_id == update_id)
            .values(
                status="quarantined",
                error=f"{type(exc).__name__}: {exc}"[:4000],
                expires_at=service.quarantine_expiry(),
            )
        )
    chat_id, text = service.apology(payload)
    if chat_id is not None:
        try:
            _outbox().send(chat_id, text)
        except Exception as send_error:  # noqa: BLE001 - the apology is best effort
            log.warning("apology for update %s not sent: %s", update_id, send_error)
    return "quarantined"


OVER_BUDGET = (
    "You're sending messages faster than I can answer them all. I've kept every one and will go through "
    "them in order (about one every {seconds:g} s); {waiting} waiting. Other people's messages go first "
    "meanwhile."
)


@app.task(name="hnpal.telegram.over_budget", bind=True, max_retries=3)
def over_budget(self, telegram_id: int) -> int:
    """Tell a user their updates are over the budget and wait in their own line (the bot enqueues this at
    most once a minute per user). Returns how many of their updates wait."""
    from config.settings import get_settings

    with session_scope() as session:
        waiting = session.scalar(
            select(func.count())
            .select_from(TelegramUpdate)
            .where(TelegramUpdate.chat_id == telegram_id, TelegramUpdate.status == "deferred")
        )
    seconds = round(1 / get_settings().telegram_user_update_rate, 1)
    try:
        _outbox().send(telegram_id, OVER_BUDGET.format(seconds=seconds, waiting=waiting or "some"))
    except Forbidden:
        return waiting or 0
    except TRANSIENT as exc:
        raise self.retry(countdown=getattr(exc, "retry_after", None) or 5) from None
    return waiting or 0


@app.task(name="hnpal.telegram.sweep")
def sweep() -> int:
    """Re-enqueue updates whose task was lost (deferred ones once their time has come, and those deferred
    further than a task's countdown may reach); drop expired quarantine and old processed rows."""
    now = datetime.now(UTC)
    with session_scope() as session:
        stuck = list(
            session.scalars(
                select(TelegramUpdate.update_id)
                .where(
                    TelegramUpdate.status.in_(("received", "failed")),
                    TelegramUpdate.received_at < now - timedelta(minutes=2),
                    TelegramUpdate.attempts < MAX_ATTEMPTS,
                )
                .order_by(TelegramUpdate.update_id)
                .limit(1000)
            )
        )
        # A deferred update's task runs at its time; one still deferred a minute later lost its task (or
        # was deferred beyond the longest countdown and never had one).
        stuck += session.scalars(
            select(TelegramUpdate.update_id)
            .where(TelegramUpdate.status == "deferred", TelegramUpdate.deferred_until < now - timedelta(minutes=1))
            .order_by(TelegramUpdate.deferred_until)
            .limit(1000)
        )
        session.execute(
            delete(TelegramUpdate).where(TelegramUpdate.status == "quarantined", TelegramUpdate.expires_at < now)
        )
        session.execute(
            delete(TelegramUpdate).where(
                TelegramUpdate.status == "processed", TelegramUpdate.processed_at < now - timedelta(days=7)
            )
        )
    for update_id in stuck:
        handle.delay(update_id)
    return len(stuck)
