"""Discussions about one post: /discuss, /done, the 💬 button and free text.

The handlers run in the ``hnpal.telegram.handle`` transaction: they start and end conversations and
store the user's message; the answer is made on the ``llm`` queue (``hnpal.discussions.reply``), and the
memory extraction (``hnpal.memory.extract``) of an ended discussion is enqueued, like every task here,
after the update's commit (``ctx.jobs``).
"""

from __future__ import annotations

import re
from typing import Any

from config.settings import get_settings
from hnpal import jobs
from hnpal.conversations import service
from hnpal.deliveries import service as deliveries
from hnpal.posts.models import Post
from hnpal.state.store import FsmState
from hnpal.telegram.callbacks import Callback
from hnpal.telegram.context import Ctx
from hnpal.telegram.render import esc
from hnpal.users.models import User

IDLE_HINT = (
    "Send a command, for example /digest. /help lists them all.\n"
    "To talk about a post, tap 💬 Discuss under it or send /discuss HN_ID."
)
DISCUSS_USAGE = (
    "Send /discuss with the post's HN id (or its HN link), for example /discuss 8863. "
    "Or tap 💬 Discuss under any post I sent you."
)
BUDGET_REACHED = service.BUDGET_REACHED
_HN_ID = re.compile(r"(?:item\?id=)?(\d{1,12})\b")


def _extract(ctx: Ctx, ended: list[service.Ended]) -> None:
    for item in ended:
        if item.memory_enabled:
            ctx.jobs.enqueue(jobs.MEMORY_EXTRACT, item.conversation_id)


def _start(ctx: Ctx, user: User, post: Post) -> service.Started:
    started = service.start(session=ctx.session, store=ctx.store, user=user, post=post)
    _extract(ctx, started.ended)
    ctx.out.send(ctx.chat_id, started.header)
    return started


def cmd_discuss(ctx: Ctx, user: User, text: str) -> None:
    argument = text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else ""
    match = _HN_ID.search(argument)
    if match is None:
        ctx.out.send(ctx.chat_id, DISCUSS_USAGE)
        return
    hn_id = int(match.group(1))
    post = service.post_by_hn_id(session=ctx.session, hn_id=hn_id) if 0 < hn_id < 2**53 else None
    if post is None:
        ctx.out.send(
            ctx.chat_id,
            f"I don't know HN item {hn_id}: it may have been deleted or flagged, or HN Pal has not fetched it. "
            "Tap 💬 Discuss under a post I sent you, or try another id.",
        )
        return
    _start(ctx, user, post)


def cmd_done(ctx: Ctx, user: User, _: str) -> None:
    ended = service.end(session=ctx.session, store=ctx.store, user_id=user.id, telegram_id=ctx.telegram_id,
                        reason="done")  # fmt: skip
    if not ended:
        ctx.out.send(ctx.chat_id, "You're not discussing a post right now. " + IDLE_HINT.split("\n", 1)[1])
        return
    _extract(ctx, ended)
    note = " I'll remember the gist (/memory shows what I keep)." if ended[0].memory_enabled else ""
    ctx.out.send(ctx.chat_id, f"Discussion of “{esc(ended[0].title)}” ended and saved.{note}")


def btn_discuss(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    delivery, _owner = deliveries.own_delivery(session=ctx.session, telegram_id=ctx.telegram_id,
                                               delivery_id=cb.int_arg(0))  # fmt: skip
    post = ctx.session.get(Post, delivery.post_id)
    if post is None:
        return "That post is no longer available."
    started = _start(ctx, user, post)
    return "Still discussing this post" if started.resumed else "Let's discuss it 💬"


def on_text(ctx: Ctx, user: User, text: str, state: FsmState) -> None:
    """Free text in the DISCUSSION state: stored, then answered on the llm queue."""
    try:
        appended = service.append_to_active(session=ctx.session, user_id=user.id, text_=text)
    except service.Refused as exc:
        ctx.out.send(ctx.chat_id, esc(str(exc)))
        return
    if appended is not None:  # the common case, in one statement
        ctx.jobs.enqueue(jobs.DISCUSSIONS_REPLY, *appended)
        return
    # Something stood in the way: find out what, and say it.
    conversation = service.active_conversation(session=ctx.session, user_id=user.id)
    if conversation is None:  # closed meanwhile (silence, another device): the FSM was stale
        service.end(session=ctx.session, store=ctx.store, user_id=user.id, telegram_id=ctx.telegram_id,
                    reason="timeout")  # fmt: skip
        ctx.out.send(ctx.chat_id, "Your last discussion was closed.")
        on_idle_text(ctx, user, text)
        return
    try:
        service.check_user_text(text)
        if service.budget_reached(session=ctx.session, user_id=user.id):
            ctx.out.send(ctx.chat_id, BUDGET_REACHED)
            return
        index = service.append_user_message(session=ctx.session, conversation_id=conversation.id, text=text)
    except service.Refused as exc:
        ctx.out.send(ctx.chat_id, esc(str(exc)))
        return
    ctx.jobs.enqueue(jobs.DISCUSSIONS_REPLY, conversation.id, index)


def on_idle_text(ctx: Ctx, user: User, text: str) -> None:
    """Free text outside a discussion: a question gets a short answer (llm queue), the rest a hint."""
    if not service.looks_like_question(text):
        ctx.out.send(ctx.chat_id, IDLE_HINT)
        return
    try:
        service.check_user_text(text)
    except service.Refused as exc:
        ctx.out.send(ctx.chat_id, esc(str(exc)))
        return
    if service.budget_reached(session=ctx.session, user_id=user.id, settings=get_settings()):
        ctx.out.send(ctx.chat_id, BUDGET_REACHED)
        return
    ctx.jobs.enqueue(jobs.DISCUSSIONS_IDLE, user.id, text)
