"""What a worker does with one stored Telegram update: claim it, handle it, and decide what a failure means.

The bot process stores each update in ``telegram_updates`` and enqueues its id; :func:`handle` claims an
attempt (one chat's updates in the order they were sent), runs the handlers in one transaction, marks
the update processed in that same transaction, and sends the follow-up jobs the handlers asked for once
it has committed. A failure a later attempt may cure is retried (:class:`~hnpal.errors.Retry`, which the
task turns into ``self.retry``), up to :data:`MAX_ATTEMPTS`; a poison update is quarantined for seven
days and its sender told; a reply Telegram refuses (the user blocked the bot) marks the user blocked.

Also here: the sweep of updates whose task was lost, the notice to a user over their update budget, and
a silenced user's held messages once an operator releases them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import OperationalError

from config.settings import get_settings
from hnpal import jobs
from hnpal.db.session import get_engine, session_scope
from hnpal.errors import Retry
from hnpal.state.store import StateStore
from hnpal.telegram import router
from hnpal.telegram.client import Forbidden, NetworkError, RetryAfter
from hnpal.telegram.models import TelegramUpdate
from hnpal.telegram.outbox import TelegramOutbox
from hnpal.telegram.ratelimit import LimiterTimeout
from hnpal.telegram.texts import OVER_BUDGET
from hnpal.users.models import User

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, NetworkError, RetryAfter, LimiterTimeout)  # a later attempt may succeed
MAX_ATTEMPTS = 4
ORDER_WAITS = 10  # at most this many short waits for an earlier update of the same chat
ORDER_WAIT_SECONDS = 0.5
QUARANTINE_DAYS = 7

Inline = Callable[..., bool]


class Handled(NamedTuple):
    status: str  # the update's status: processed, quarantined, or missing
    handled: bool  # False: it was final already (or is missing), so this call did nothing


def reply_outbox() -> TelegramOutbox:
    """The outbox of one update's reply: once part of it is out, it is finished in place (a retry of
    the task would send it again from the start)."""
    return TelegramOutbox(reply=True)


def handle(update_id: int, *, retries: int = 0, inline: dict[str, Inline] | None = None) -> Handled:
    """Handle one stored update, once. ``retries``: how many times its task has run before (while it is
    below :data:`ORDER_WAITS`, the update waits for an earlier one of its chat). Raises
    :class:`~hnpal.errors.Retry` when it must run again later.

    ``inline``: follow-up tasks this worker runs itself, by name; a runner returning False (it could not
    finish) has its task enqueued as usual."""
    # One autocommitted statement claims the attempt (the common case: one round trip); only when it
    # claims nothing is the row read again to tell why.
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        claimed = conn.execute(CLAIM, {"update_id": update_id, "check_order": retries < ORDER_WAITS}).first()
        if claimed is None:
            row = conn.execute(
                select(TelegramUpdate.status).where(TelegramUpdate.update_id == update_id)
            ).scalar_one_or_none()
            if row is None:
                return Handled("missing", False)
            if row in ("processed", "quarantined"):
                return Handled(row, False)
            # One chat's updates in the order they were sent (a typed answer after its button press):
            # an earlier one of this chat is still being handled, so this one waits a moment.
            raise Retry(ORDER_WAIT_SECONDS, "an earlier update of this chat is being handled")
    payload, attempts = dict(claimed.payload), claimed.attempts
    try:
        with session_scope() as session:
            batch = router.handle_update(session=session, out=reply_outbox(), store=StateStore(), update=payload)
            session.execute(
                update(TelegramUpdate)
                .where(TelegramUpdate.update_id == update_id)
                .values(status="processed", processed_at=datetime.now(UTC), error=None)
            )
    except TRANSIENT as exc:
        if attempts < MAX_ATTEMPTS:
            countdown = getattr(exc, "retry_after", None) or min(60, 2**attempts)
            _record(update_id, "failed", f"{type(exc).__name__}: {exc}")
            raise Retry(countdown, f"{type(exc).__name__}: {exc}") from None
        return Handled(_quarantine(update_id, payload, exc), True)
    except Forbidden as exc:  # 403: the user blocked the bot (or is gone); not the update's fault
        return Handled(_forbidden(update_id, payload, exc), True)
    except router.MalformedUpdate as exc:  # a shape Telegram never sends: kept aside, no traceback
        log.warning("update %s is malformed (%s); quarantined", update_id, exc)
        return Handled(_quarantine(update_id, payload, exc), True)
    except Exception as exc:  # a poison update: set it aside, tell the user, move on
        log.exception("update %s could not be handled", update_id)
        return Handled(_quarantine(update_id, payload, exc), True)
    _send(batch, inline or {})  # after the commit: the rows these ids name exist
    return Handled("processed", True)


def _send(batch: jobs.Batch, inline: dict[str, Inline]) -> None:
    for job in batch:
        runner = inline.get(job.name)
        if runner is None or not runner(*job.args):
            job.send()


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
    chat_id, _ = apology(payload)  # the private chat the reply went to: the user's own id
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
                expires_at=quarantine_expiry(),
            )
        )
    chat_id, text = apology(payload)
    if chat_id is not None:
        try:
            reply_outbox().send(chat_id, text)
        except Exception as send_error:  # noqa: BLE001 - the apology is best effort
            log.warning("apology for update %s not sent: %s", update_id, send_error)
    return "quarantined"


def quarantine_expiry(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + timedelta(days=QUARANTINE_DAYS)


def apology(update: dict[str, Any]) -> tuple[int | None, str]:
    """Where to say sorry when an update cannot be handled (quarantine), and what."""

    def field(value: Any, key: str) -> Any:  # the update may be malformed: that is why we are here
        return value.get(key) if isinstance(value, dict) else None

    chat = field(field(update, "message") or field(field(update, "callback_query"), "message"), "chat")
    chat_id = field(chat, "id")
    if field(chat, "type") != "private" or not isinstance(chat_id, int) or isinstance(chat_id, bool):
        return None, ""
    return chat_id, "Sorry, something went wrong with that request. It has been set aside; please try again."


# --- a user over their update budget ------------------------------------------------------------------


def over_budget(telegram_id: int) -> int:
    """Tell a user their updates are over the budget and wait in their own line (the bot enqueues this at
    most once a minute per user). Returns how many of their updates wait. Raises
    :class:`~hnpal.errors.Retry` when Telegram cannot take the notice now."""
    with session_scope() as session:
        waiting = session.scalar(
            select(func.count())
            .select_from(TelegramUpdate)
            .where(TelegramUpdate.chat_id == telegram_id, TelegramUpdate.status == "deferred")
        )
    seconds = round(1 / get_settings().telegram_user_update_rate, 1)
    try:
        reply_outbox().send(telegram_id, OVER_BUDGET.format(seconds=seconds, waiting=waiting or "some"))
    except Forbidden:
        return waiting or 0
    except TRANSIENT as exc:
        raise Retry(getattr(exc, "retry_after", None) or 5, f"{type(exc).__name__}: {exc}") from None
    return waiting or 0


# --- the sweep ------------------------------------------------------------------------------------------


def sweep() -> int:
    """Re-enqueue updates whose task was lost (deferred ones once their time has come, and those deferred
    further than a task's countdown may reach); drop expired quarantine and old processed rows. Returns
    how many were enqueued again."""
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
        for update_id in stuck:  # sent after the commit
            jobs.enqueue(session, jobs.TELEGRAM_HANDLE, update_id)
    return len(stuck)


# --- a silenced user's held messages --------------------------------------------------------------------


def release_held(user_id: int, *, retries: int = 0) -> int:
    """Handle a user's quarantined messages in the order they came (after an operator lifted the silence
    and chose to process them), each in its own transaction that marks it processed. Stops when none is
    left or the user is silenced again. Returns how many were handled; raises
    :class:`~hnpal.errors.Retry` when the database or Telegram fails for a moment."""
    from hnpal.review import service as review

    handled = 0
    while True:
        try:
            with session_scope() as session:
                if review.silenced(session, user_id) is not None:  # silenced again meanwhile: they wait
                    return handled
                held = review.next_held(session, user_id)
                if held is None:
                    return handled
                batch = router.handle_update(session=session, out=reply_outbox(), store=StateStore(),
                                             update=dict(held.payload))  # fmt: skip
                held.status = "processed"
        except TRANSIENT as exc:
            raise Retry(min(60, 2 ** (retries + 1)), f"{type(exc).__name__}: {exc}") from exc
        handled += 1
        batch.send()  # after the commit
