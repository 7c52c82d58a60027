"""Memory and privacy commands: /memory (pause, forget, clear), /deletemydata, /export.

Every button names its row by id and is signed for the user it was made for (see callbacks.py); the
services check again that the row is the presser's. Destructive buttons (clear, delete) carry the time
they were shown and expire after :data:`CONFIRM_SECONDS`, so an old confirmation cannot fire by accident.
Each action is written to ``audit_log`` by the service that does it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from config.settings import get_settings
from hnpal.memory import service as memory
from hnpal.memory.models import Memory
from hnpal.privacy import service as privacy
from hnpal.telegram.callbacks import BadCallback, Callback
from hnpal.telegram.context import Ctx, button, message_id_of
from hnpal.telegram.render import esc, shorten, visible_length
from hnpal.users.models import User

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 10 * 60
FORGET_PER_PAGE = 8
SHOWN_PER_GROUP = 10
ITEM_CHARS = 160  # one remembered item in the /memory overview
MESSAGE_BUDGET = 4000  # of Telegram's 4096 characters
BUTTON_CHARS = 48  # an item's text on its forget button
MAX_DOCUMENT_BYTES = 45 * 1024 * 1024  # Telegram takes 50 MB from a bot
GROUP_TITLES = {
    "interests": "Interests",
    "discussions": "Recent discussions",
    "about_you": "About you",
    "notes": "Notes, facts and opinions",
}
SOURCES = {"onboarding": "you chose it", "discussion": "from a discussion", "reaction": "from your 👍",
           "explicit": "you told me"}  # fmt: skip
MEMORY_USAGE = (
    "/memory — what I remember about you\n"
    "/memory pause — stop (or resume) learning about you\n"
    "/memory forget — pick items to forget\n"
    "/memory clear — forget everything and delete our conversations"
)


def _show(ctx: Ctx, message: dict[str, Any], text: str, markup: dict | None = None) -> None:
    """Replace the pressed message (or send a new one when Telegram did not include it)."""
    message_id = message_id_of(message)
    if message_id is not None:
        ctx.out.edit(ctx.chat_id, message_id, text, reply_markup=markup)
    else:
        ctx.out.send(ctx.chat_id, text, reply_markup=markup)


def _fresh(cb: Callback, index: int) -> bool:
    try:
        shown = int(cb.arg(index))
    except (BadCallback, ValueError):
        return False
    return 0 <= time.time() - shown <= CONFIRM_SECONDS


def _past_grace(user: User) -> bool:
    when = privacy.deletion_date(user)
    return when is not None and when <= datetime.now(UTC)


def deleted_notice(user: User) -> str:
    """What a deleted account hears instead of having a command or button act."""
    when = privacy.deletion_date(user)
    if when is None or _past_grace(user):
        return "Your account has been deleted. /start begins afresh."
    return f"Your account is scheduled for deletion on {when:%d %B %Y}. /start restores it."


def restore(ctx: Ctx, user: User) -> None:
    """``/start`` from an account in its grace period: it is active again, with everything it had. Past
    the grace period (the hourly purge has not come yet) the account is erased now instead."""
    if _past_grace(user):
        privacy.purge_user(session=ctx.session, user=user)
        ctx.out.send(
            ctx.chat_id,
            "Your data was erased at the end of the grace period. Send /start again to begin afresh.",
        )
        return
    privacy.restore_account(session=ctx.session, user=user)
    ctx.out.send(
        ctx.chat_id,
        f"Welcome back, {esc(user.first_name or 'there')}! Your account is restored: digests, settings, saved "
        "posts and memory are as you left them. /help lists what I can do.",
    )


# --- /memory ----------------------------------------------------------------------------------------


def cmd_memory(ctx: Ctx, user: User, text: str) -> None:
    parts = text.split()
    sub = parts[1].lower() if len(parts) > 1 else ""
    if sub in ("", "show"):
        ctx.out.send(ctx.chat_id, *_overview(ctx, user))
    elif sub in ("pause", "resume"):
        enabled = (not user.memory_enabled) if sub == "pause" else True
        memory.set_enabled(session=ctx.session, user=user, enabled=enabled)
        ctx.out.send(ctx.chat_id, _pause_text(user))
    elif sub == "forget":
        ctx.out.send(ctx.chat_id, *_forget_view(ctx, user, 0))
    elif sub == "clear":
        ctx.out.send(ctx.chat_id, *_clear_question(ctx, user))
    else:
        ctx.out.send(ctx.chat_id, f"I don't know /memory {esc(sub[:40])}. Try:\n\n{MEMORY_USAGE}")


def _pause_text(user: User) -> str:
    if user.memory_enabled:
        return "🧠 Memory is <b>ON</b>: I learn from our discussions and your 👍 again. /memory shows what I know."
    return (
        "⏸ Memory <b>paused</b>: I won't learn anything new about you from discussions or reactions. What I "
        "already remember stays (/memory forget or /memory clear removes it). /memory pause turns it back on."
    )


def _item_line(item: Memory, chars: int) -> str:
    source = SOURCES.get(item.source_type or "", "")
    suffix = f" <i>· {source}</i>" if source and item.type == "interest" else ""
    return f"• {esc(shorten(item.content, chars))}{suffix}"


def _overview(ctx: Ctx, user: User) -> tuple[str, dict]:
    groups = memory.grouped(session=ctx.session, user_id=user.id, per_group=SHOWN_PER_GROUP)
    total = sum(count for _, count in groups.values())
    # Fewer and shorter items until the message fits in one Telegram message.
    for shown, chars in ((SHOWN_PER_GROUP, ITEM_CHARS), (6, 100), (3, 60), (1, 40)):
        text = _overview_text(user, groups, total, shown, chars)
        if visible_length(text) <= MESSAGE_BUDGET:
            break
    tid = ctx.telegram_id
    toggle = "⏸ Pause memory" if user.memory_enabled else "▶️ Resume memory"
    rows = [[button(tid, toggle, "mmp")]]
    if total:
        rows[0].append(button(tid, "🗑 Forget an item", "mml", 0))
        rows.append([button(tid, "🧹 Clear everything", "mmc")])
    return text, {"inline_keyboard": rows}


def _overview_text(user: User, groups: dict, total: int, shown: int, chars: int) -> str:
    state = "<b>ON</b>" if user.memory_enabled else "<b>paused</b> (I'm not learning anything new)"
    lines = ["🧠 <b>What I remember about you</b>", f"Memory: {state}"]
    if total == 0:
        lines += [
            "",
            "Nothing yet. I learn your interests from /start, from 👍 under posts, and from our discussions "
            "(💬 under a post).",
        ]
    for name, (items, count) in groups.items():
        if not count:
            continue
        lines += ["", f"<b>{GROUP_TITLES[name]}</b> ({count})"]
        lines += [_item_line(item, chars) for item in items[:shown]]
        if count > min(shown, len(items)):
            lines.append(f"… and {count - min(shown, len(items))} more (/export has them all)")
    lines += ["", MEMORY_USAGE]
    return "\n".join(lines)


def _forget_view(ctx: Ctx, user: User, page: int, note: str = "") -> tuple[str, dict | None]:
    items, total, page = memory.active_page(session=ctx.session, user_id=user.id, page=page, per_page=FORGET_PER_PAGE)
    prefix = f"{note}\n\n" if note else ""
    if total == 0:
        return prefix + "I don't remember anything about you (any more).", None
    pages = -(-total // FORGET_PER_PAGE)
    lines = [f"{prefix}<b>Tap an item to forget it</b> · {total} remembered · page {page + 1}/{pages}", ""]
    tid = ctx.telegram_id
    rows = []
    for n, item in enumerate(items, start=page * FORGET_PER_PAGE + 1):
        lines.append(f"{n}. <i>{item.type.replace('_', ' ')}</i>: {esc(shorten(item.content, ITEM_CHARS))}")
        rows.append([button(tid, f"🗑 {n}. {shorten(item.content, BUTTON_CHARS)}", "mmf", item.id, page)])
    nav = []
    if page > 0:
        nav.append(button(tid, "◀ Newer", "mml", page - 1))
    if page < pages - 1:
        nav.append(button(tid, "Older ▶", "mml", page + 1))
    if nav:
        rows.append(nav)
    rows.append([button(tid, "Done", "mmd")])
    return "\n".join(lines), {"inline_keyboard": rows}


def _clear_question(ctx: Ctx, user: User) -> tuple[str, dict]:
    text = (
        "🧹 <b>Forget everything?</b>\n\nEvery item I remember about you (your interests too) will be forgotten "
        "and all our conversations deleted; an open discussion ends. Your digests, settings and saved posts "
        "stay. This cannot be undone."
    )
    markup = {
        "inline_keyboard": [
            [
                button(ctx.telegram_id, "Yes, forget everything", "mmc", "yes", int(time.time())),
                button(ctx.telegram_id, "Cancel", "mmc", "no"),
            ]
        ]
    }
    return text, markup


def btn_memory_pause(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    memory.set_enabled(session=ctx.session, user=user, enabled=not user.memory_enabled)
    _show(ctx, message, *_overview(ctx, user))
    return "Memory is on" if user.memory_enabled else "Memory paused"


def btn_memory_list(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    _show(ctx, message, *_forget_view(ctx, user, cb.int_arg(0)))
    return None


def btn_memory_forget(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    try:
        item = memory.forget(session=ctx.session, user=user, memory_id=cb.int_arg(0))
    except memory.NotYours:
        log.warning("user %s pressed forget for memory %s, not theirs", user.id, cb.arg(0))
        return "This button is not valid for you."
    note = f"Forgotten: {esc(shorten(item.content, ITEM_CHARS))}"
    _show(ctx, message, *_forget_view(ctx, user, cb.int_arg(1), note=note))
    return "Forgotten"


def btn_memory_done(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    _show(ctx, message, *_overview(ctx, user))
    return None


def btn_memory_clear(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    answer = cb.arg(0, "")
    if answer == "":  # from the /memory overview: ask first
        _show(ctx, message, *_clear_question(ctx, user))
        return None
    if answer != "yes":
        _show(ctx, message, "Nothing was cleared. /memory shows what I remember.")
        return "Cancelled"
    if not _fresh(cb, 1):
        _show(ctx, message, "That confirmation has expired; nothing was cleared. Send /memory clear again.")
        return "Expired"
    counts = memory.clear(session=ctx.session, user=user)
    privacy.forget_redis_keys(ctx.store, ctx.telegram_id)  # the discussion state and its cached context
    _show(
        ctx,
        message,
        f"🧹 Done: I forgot {counts['memory_forgotten']} items and deleted {counts['conversations_deleted']} "
        "conversations. I'll start learning again from here (/memory pause stops that).",
    )
    return "Memory cleared"


# --- /deletemydata ----------------------------------------------------------------------------------


def cmd_deletemydata(ctx: Ctx, user: User, _: str) -> None:
    days = get_settings().privacy_grace_days
    text = (
        "⚠️ <b>Delete all your data?</b>\n\n"
        "Your account is closed at once: no more digests, an open discussion ends, and I stop reading your "
        f"messages. After {days} days everything is erased for good: profile, settings, delivered and saved "
        f"posts, reactions, conversations, memory and usage. Until then /start restores it all.\n\n"
        "/export gives you a copy first."
    )
    markup = {
        "inline_keyboard": [
            [
                button(ctx.telegram_id, "Yes, delete my data", "pdd", "yes", int(time.time())),
                button(ctx.telegram_id, "Cancel", "pdd", "no"),
            ]
        ]
    }
    ctx.out.send(ctx.chat_id, text, reply_markup=markup)


def btn_delete(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    if cb.arg(0) != "yes":
        _show(ctx, message, "Nothing was deleted.")
        return "Cancelled"
    if not _fresh(cb, 1):
        _show(ctx, message, "That confirmation has expired; nothing was deleted. Send /deletemydata again.")
        return "Expired"
    purge_on = privacy.delete_account(session=ctx.session, store=ctx.store, user=user)
    _show(
        ctx,
        message,
        f"🗑 Your account is scheduled for deletion on <b>{purge_on:%d %B %Y}</b>. No more digests will "
        "arrive. Everything is erased on that day; /start before then restores your account.",
    )
    return "Account deleted"


# --- /export ----------------------------------------------------------------------------------------


def cmd_export(ctx: Ctx, user: User, text: str) -> None:
    parts = text.split()
    fmt = parts[1].lower().lstrip(".") if len(parts) > 1 else "md"
    fmt = {"markdown": "md", "jsn": "json"}.get(fmt, fmt)
    if fmt not in privacy.EXPORT_FORMATS:
        ctx.out.send(ctx.chat_id, "Send /export for a Markdown file, or /export json for JSON.")
        return
    filename, body = privacy.export(session=ctx.session, user=user, fmt=fmt)
    if len(body) > MAX_DOCUMENT_BYTES:
        ctx.out.send(
            ctx.chat_id,
            "Your data is too large for one Telegram file. /memory clear deletes old conversations; "
            "an operator can export everything with <code>hnpal user export</code>.",
        )
        return
    ctx.out.send_document(ctx.chat_id, filename, body, caption="Everything HN Pal holds about you.")
