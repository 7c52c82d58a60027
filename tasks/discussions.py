"""Discussion tasks: answers on the ``llm`` queue (a thread pool overlaps the model's latency); the idle
sweep on ``default``."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hnpal.celery import app
from hnpal.conversations import service
from hnpal.db.session import get_engine, session_scope
from hnpal.state.store import StateStore
from hnpal.telegram.client import Forbidden, NetworkError, RetryAfter
from hnpal.telegram.ratelimit import LimiterTimeout

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, NetworkError, RetryAfter, LimiterTimeout)
MAX_TRANSIENT_RETRIES = 6


# Idempotent: an answered message is not answered again (see hnpal.conversations.service.reply).
@app.task(name="hnpal.discussions.reply", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def reply(self, conversation_id: int, message_index: int) -> str:
    """Answer one user message of a conversation. Returns what happened."""
    try:
        return service.reply(conversation_id=conversation_id, message_index=message_index)
    except Forbidden as exc:
        _refused(conversation_id, exc)
        return "forbidden"
    except service.Busy:  # the previous answer in this conversation is still being made
        raise self.retry(countdown=0.3) from None
    except TRANSIENT as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            raise
        countdown = getattr(exc, "retry_after", None) or min(60, 2 ** (self.request.retries + 1))
        log.info("answer in conversation %s failed (%s); retrying in %ss", conversation_id, exc, countdown)
        raise self.retry(countdown=countdown) from None


@app.task(name="hnpal.discussions.message", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def message(self, update_id: int) -> str:
    """A stored update the bot saw as a message in a discussion (hnpal/telegram/bot.py): handled as
    ``hnpal.telegram.handle`` handles any update, here on the ``llm`` queue, and its answer made in this
    same task instead of a ``hnpal.discussions.reply`` task after it (one queue hop, not two). Idempotent:
    a redelivered message finds its update processed and only answers the user's message if the answer
    was lost with the worker. Returns the update's status."""
    from tasks.telegram import handle_stored

    status, handled = handle_stored(self, update_id, inline={"hnpal.discussions.reply": _answer_inline})
    if not handled and status == "processed":
        _resume(update_id)
    return status


def _answer_inline(conversation_id: int, message_index: int) -> bool:
    """Answer now, in this task. False (the caller enqueues ``hnpal.discussions.reply``, which waits and
    retries) when another worker is answering in this conversation or the answer failed for a reason a
    retry may cure."""
    try:
        service.reply(conversation_id=conversation_id, message_index=message_index)
    except Forbidden as exc:
        _refused(conversation_id, exc)
    except service.Busy:
        return False
    except TRANSIENT as exc:
        log.info("answer in conversation %s failed (%s); left to hnpal.discussions.reply", conversation_id, exc)
        return False
    return True


def _refused(conversation_id: int, exc: Forbidden) -> None:
    """Telegram refused the answer (403): the user blocked the bot; as a digest send does, mark them."""
    service.mark_blocked(conversation_id=conversation_id)
    log.info("answer in conversation %s refused (%s); user marked blocked", conversation_id, exc)


def _resume(update_id: int) -> None:
    """The update was handled by an earlier delivery of this task: if the sender's last discussion
    message still has no answer (that worker died while answering), answer it."""
    from hnpal.telegram.models import TelegramUpdate

    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        sender = conn.execute(
            select(TelegramUpdate.telegram_user_id).where(TelegramUpdate.update_id == update_id)
        ).scalar()
        pending = service.unanswered(conn=conn, telegram_id=sender) if sender is not None else None
    if pending is not None:
        log.info("update %s: answering message %s of conversation %s again", update_id, pending[1], pending[0])
        if not _answer_inline(*pending):
            app.send_task("hnpal.discussions.reply", args=list(pending))


@app.task(name="hnpal.discussions.idle", bind=True, max_retries=3)
def idle(self, user_id: int, text: str) -> str:
    """A short general answer to free text outside a discussion (not idempotent: no late ack)."""
    try:
        return service.idle_answer(user_id=user_id, text=text)
    except TRANSIENT as exc:
        raise self.retry(countdown=getattr(exc, "retry_after", None) or 2 ** (self.request.retries + 1)) from None


@app.task(name="hnpal.discussions.sweep")
def sweep() -> list[int]:
    """Close discussions silent for HNPAL_DISCUSSION_IDLE_MINUTES; tell the users; start the extraction."""
    with session_scope() as session:
        ended = service.close_idle(session=session)
    if not ended:
        return []
    store = StateStore()
    outbox = None
    for item in ended:  # after the commit
        service.clear_fsm_if(store, item.telegram_id, item.hn_id)
        if item.memory_enabled:
            app.send_task("hnpal.memory.extract", args=[item.conversation_id])
        try:
            if outbox is None:
                from hnpal.telegram.outbox import TelegramOutbox

                outbox = TelegramOutbox()
            outbox.send(item.telegram_id, service.closed_notice(item.title))
        except Exception as exc:  # noqa: BLE001 - the notice is a courtesy; the discussion is closed anyway
            log.warning("closing notice to %s not sent: %s", item.telegram_id, exc)
    return [item.conversation_id for item in ended]
