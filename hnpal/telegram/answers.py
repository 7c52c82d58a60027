"""Discussion answers as the ``llm`` queue's workers make them, and the idle sweep that closes discussions.

:func:`reply` answers one stored user message; :func:`message` handles a discussion message's update
(as :func:`hnpal.telegram.updates.handle` handles any update) and makes its answer in the same task, one
queue hop instead of two. A failure a later attempt may cure raises :class:`~hnpal.errors.Retry`, which
the task turns into ``self.retry``. A refused answer (403: the user blocked the bot) marks the user
blocked, as a digest send does.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from hnpal import jobs
from hnpal.conversations import service
from hnpal.db.session import get_engine, session_scope
from hnpal.errors import Retry
from hnpal.state.store import StateStore
from hnpal.telegram import updates
from hnpal.telegram.client import Forbidden
from hnpal.telegram.models import TelegramUpdate
from hnpal.telegram.outbox import TelegramOutbox
from hnpal.telegram.updates import TRANSIENT

log = logging.getLogger(__name__)
MAX_TRANSIENT_RETRIES = 6


def reply(conversation_id: int, message_index: int, *, retries: int = 0) -> str:
    """Answer one user message of a conversation (``retries``: how many times its task has run before).
    Returns what happened; raises :class:`~hnpal.errors.Retry` while another worker answers in this
    conversation or a transient failure may pass, and the failure itself after
    :data:`MAX_TRANSIENT_RETRIES`; :class:`~hnpal.conversations.service.AnsweredOffline` when the model
    failed and the offline answer went out instead."""
    try:
        return service.reply(conversation_id=conversation_id, message_index=message_index)
    except Forbidden as exc:
        _refused(conversation_id, exc)
        return "forbidden"
    except service.Busy:  # the previous answer in this conversation is still being made
        raise Retry(0.3, "another answer in this conversation is being made") from None
    except TRANSIENT as exc:
        if retries >= MAX_TRANSIENT_RETRIES:
            raise
        countdown = getattr(exc, "retry_after", None) or min(60, 2 ** (retries + 1))
        log.info("answer in conversation %s failed (%s); retrying in %ss", conversation_id, exc, countdown)
        raise Retry(countdown, f"{type(exc).__name__}: {exc}") from None


def message(update_id: int, *, retries: int = 0) -> str:
    """A stored update the bot saw as a message in a discussion (hnpal/telegram/bot.py): handled as
    ``hnpal.telegram.handle`` handles any update, and its answer made in this same call instead of a
    ``hnpal.discussions.reply`` task after it. Idempotent: a redelivered message finds its update
    processed and only answers the user's message if the answer was lost with the worker. Returns the
    update's status; raises :class:`~hnpal.conversations.service.AnsweredOffline` once everything is
    done when the model failed and the offline answer went out instead."""
    offline: list[service.AnsweredOffline] = []

    def answer(conversation_id: int, message_index: int) -> bool:
        return answer_now(conversation_id, message_index, offline=offline)

    status, handled = updates.handle(update_id, retries=retries, inline={jobs.DISCUSSIONS_REPLY: answer})
    if not handled and status == "processed":
        _resume(update_id, offline)
    if offline:
        raise offline[0]
    return status


def answer_now(conversation_id: int, message_index: int, *, offline: list[service.AnsweredOffline]) -> bool:
    """Answer now, in this task. False (the caller enqueues ``hnpal.discussions.reply``, which waits and
    retries) when another worker is answering in this conversation or the answer failed for a reason a
    retry may cure. An answer the offline provider made because the model failed is sent, and its
    failure added to ``offline`` (the caller raises it after the rest of its work)."""
    try:
        service.reply(conversation_id=conversation_id, message_index=message_index)
    except service.AnsweredOffline as exc:
        offline.append(exc)
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


def _resume(update_id: int, offline: list[service.AnsweredOffline]) -> None:
    """The update was handled by an earlier delivery of this task: if the sender's last discussion
    message still has no answer (that worker died while answering), answer it."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        sender = conn.execute(
            select(TelegramUpdate.telegram_user_id).where(TelegramUpdate.update_id == update_id)
        ).scalar()
        pending = service.unanswered(conn=conn, telegram_id=sender) if sender is not None else None
    if pending is not None:
        log.info("update %s: answering message %s of conversation %s again", update_id, pending[1], pending[0])
        if not answer_now(*pending, offline=offline):
            jobs.enqueue(None, jobs.DISCUSSIONS_REPLY, *pending)


def idle(user_id: int, text: str, *, retries: int = 0) -> str:
    """A short general answer to free text outside a discussion; raises :class:`~hnpal.errors.Retry`
    when a transient failure may pass."""
    try:
        return service.idle_answer(user_id=user_id, text=text)
    except TRANSIENT as exc:
        countdown = getattr(exc, "retry_after", None) or 2 ** (retries + 1)
        raise Retry(countdown, f"{type(exc).__name__}: {exc}") from None


def close_idle() -> list[int]:
    """Close discussions silent for HNPAL_DISCUSSION_IDLE_MINUTES; after the commit, clear each user's
    discussion state, start the memory extraction and tell the user. Returns the closed conversations."""
    with session_scope() as session:
        ended = service.close_idle(session=session)
    if not ended:
        return []
    store = StateStore()
    outbox = None
    for item in ended:  # after the commit
        service.clear_fsm_if(store, item.telegram_id, item.hn_id)
        if item.memory_enabled:
            jobs.enqueue(None, jobs.MEMORY_EXTRACT, item.conversation_id)
        try:
            if outbox is None:
                outbox = TelegramOutbox()
            outbox.send(item.telegram_id, service.closed_notice(item.title))
        except Exception as exc:  # noqa: BLE001 - the notice is a courtesy; the discussion is closed anyway
            log.warning("closing notice to %s not sent: %s", item.telegram_id, exc)
    return [item.conversation_id for item in ended]
