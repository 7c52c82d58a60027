"""What HN Pal does with one Telegram update: the command and button tables, and the dispatch to them.

The bot process only stores updates (``telegram_updates``) and enqueues their ids; the worker
(:mod:`hnpal.telegram.updates`) calls :func:`handle_update` with a database session and an
:class:`~hnpal.telegram.context.Outbox` for the replies. Anything an update asks is checked against the
user who sent it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from hnpal import jobs
from hnpal.deliveries import service as deliveries
from hnpal.state.service import current_state
from hnpal.state.store import BotState, StateStore
from hnpal.telegram import admin, buttons, commands, discuss, groups, members, privacy, settings_menu
from hnpal.telegram.callbacks import BadCallback, verify
from hnpal.telegram.context import Ctx, Outbox
from hnpal.telegram.texts import PROMPTS, unknown_command
from hnpal.users.models import User

log = logging.getLogger(__name__)
MAX_TEXT = 4000  # longest user text we look at; the rest is ignored

COMMANDS: dict[str, Any] = {
    "start": commands.cmd_start,
    "help": commands.cmd_help,
    "pause": commands.cmd_pause,
    "resume": commands.cmd_pause,
    "digest": commands.cmd_digest,
    "saved": commands.cmd_saved,
    "token": commands.cmd_token,
    "settings": settings_menu.cmd_settings,
    "discuss": discuss.cmd_discuss,
    "done": discuss.cmd_done,
    "memory": privacy.cmd_memory,
    "deletemydata": privacy.cmd_deletemydata,
    "export": privacy.cmd_export,
    "admin": admin.cmd_admin,
}
BUTTONS: dict[str, Any] = {
    "up": buttons.btn_reaction,
    "dn": buttons.btn_reaction,
    "sv": buttons.btn_reaction,
    "ex": buttons.btn_expand,
    "in": buttons.btn_interest,
    "sp": buttons.btn_saved_page,
    "st": settings_menu.btn_settings,
    "set": settings_menu.btn_set,
    "ds": discuss.btn_discuss,
    "mmp": privacy.btn_memory_pause,
    "mml": privacy.btn_memory_list,
    "mmf": privacy.btn_memory_forget,
    "mmd": privacy.btn_memory_done,
    "mmc": privacy.btn_memory_clear,
    "pdd": privacy.btn_delete,
}


class MalformedUpdate(ValueError):
    """An update whose shape Telegram never sends (the task quarantines it with this message)."""


def handle_update(*, session: Session, out: Outbox, store: StateStore, update: dict[str, Any]) -> jobs.Batch:
    """Handle one update. Returns the follow-up tasks it asks for, to be sent once its work has committed.
    Raises only on infrastructure errors (retried, then quarantined) and on malformed updates
    (:class:`MalformedUpdate`: quarantined at once)."""
    batch = jobs.Batch()
    for kind in ("callback_query", "message", "my_chat_member"):
        if kind in update and not isinstance(update[kind], dict):
            raise MalformedUpdate(f"the update's {kind} is a {type(update[kind]).__name__}, not an object")
    if "callback_query" in update:
        _callback(session, out, store, batch, update["callback_query"])
    elif "message" in update:
        _message(session, out, store, batch, update["message"], update.get("update_id"))
    elif "my_chat_member" in update:
        members.membership(session, update["my_chat_member"])
    else:  # edited messages, channel posts, polls, reactions...: nothing to do, by design
        log.info("update %s of kind %s ignored", update.get("update_id"), _kind(update))
    return batch


def _kind(update: dict[str, Any]) -> str:
    return next((k for k in update if k != "update_id"), "empty")


def _message(
    session: Session, out: Outbox, store: StateStore, batch: jobs.Batch, message: dict[str, Any],
    update_id: int | None = None,
) -> None:  # fmt: skip
    chat = message.get("chat") or {}
    sender = message.get("from") or {}
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int) or isinstance(chat.get("id"), bool):
        raise MalformedUpdate("a message without a chat id")
    if chat.get("type") != "private":
        groups.group_message(out, store, chat["id"], message)
        return
    if not isinstance(sender.get("id"), int) or sender.get("is_bot"):
        return
    ctx = Ctx(session, out, store, batch, sender["id"], chat["id"])
    user = members.touch_user(session, sender)
    if user.status == "deleted" and _command_of(message.get("text")) != "start":  # /deletemydata grace period
        out.send(ctx.chat_id, privacy.deleted_notice(user))
        return
    if _silenced(ctx, user, message, update_id):
        return
    text = message.get("text")
    if not isinstance(text, str):
        out.send(ctx.chat_id, "I can read text messages and commands only. Try /help.")
        return
    full_text = text  # a discussion message is taken whole (its own cap applies), a command is not
    text = text[:MAX_TEXT].strip()
    if text.startswith("/"):
        command = text.split()[0][1:].split("@")[0].lower()
        handler = COMMANDS.get(command)
        if handler is None:
            out.send(ctx.chat_id, unknown_command(command))
            return
        # /admin leaves the state alone: to a non-admin it must act exactly like an unknown command
        store.clear_fsm(ctx.telegram_id) if command not in ("start", "admin") else None
        handler(ctx, user, text)
        return
    state = current_state(session=session, store=store, telegram_id=ctx.telegram_id)  # Redis lost: from PG
    awaiting = state.data.get("awaiting")
    if awaiting in PROMPTS:
        settings_menu.answer_prompt(ctx, user, awaiting, text)
        return
    if state.state == BotState.DISCUSSION:
        discuss.on_text(ctx, user, full_text, state)
        return
    discuss.on_idle_text(ctx, user, full_text)


def _silenced(ctx: Ctx, user: User, message: dict[str, Any], update_id: int | None) -> bool:
    """The silence protocol: a silenced user's message is kept in quarantine (7 days) and not handled, so
    no model is called; they hear one fixed notice per silence. Privacy commands still work."""
    from hnpal.review import service as review

    if _command_of(message.get("text")) in review.ALLOWED_WHILE_SILENCED:
        return False
    if review.silenced(ctx.session, user.id) is None:
        return False
    if review.quarantine(ctx.session, user=user, update_id=update_id, message=message):
        ctx.out.send(ctx.chat_id, review.SILENCED_NOTICE)
    return True


def _command_of(text: Any) -> str | None:
    """The command a message starts with (``/start@HNPalBot now`` → ``start``), or None."""
    if not isinstance(text, str) or not text.strip().startswith("/"):
        return None
    return text.strip().split()[0][1:].split("@")[0].lower()


def _callback(session: Session, out: Outbox, store: StateStore, batch: jobs.Batch, query: dict[str, Any]) -> None:
    query_id = str(query.get("id") or "")
    sender = query.get("from") or {}
    message = query.get("message") or {}
    chat = message.get("chat") or {}
    if not isinstance(sender.get("id"), int) or not query_id:
        return
    try:
        callback = verify(sender["id"], query.get("data"))
    except BadCallback as exc:
        log.warning("button press from %s rejected: %s", sender.get("id"), exc)
        out.answer(query_id, "This button is not valid for you.")
        return
    if chat.get("type") != "private":
        out.answer(query_id, "HN Pal works in private chats only.")
        return
    user = members.touch_user(session, sender)
    if user.status == "deleted":  # /deletemydata grace period: buttons do nothing
        out.answer(query_id, privacy.deleted_notice(user))
        return
    ctx = Ctx(session, out, store, batch, sender["id"], chat.get("id", sender["id"]))
    handler = BUTTONS.get(callback.action)
    if handler is None:
        out.answer(query_id, "This button is no longer supported.")
        return
    try:
        notice = handler(ctx, user, callback, message)
    except deliveries.NotYours:
        notice = "This button is not valid for you."
    except BadCallback as exc:
        log.warning("button %s from %s rejected: %s", callback.action, sender["id"], exc)
        notice = "This button is not valid."
    out.answer(query_id, notice)
