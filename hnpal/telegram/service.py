"""What HN Pal does with one Telegram update (commands, buttons, typed answers).

The bot process only stores updates (``telegram_updates``) and enqueues their ids; the
``hnpal.telegram.handle`` task calls :func:`handle_update` here with a database session and an
:class:`Outbox` for the replies. Anything an update asks is checked against the user who sent it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import bindparam, case, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from config.settings import get_settings
from hnpal import jobs
from hnpal.deliveries import service as deliveries
from hnpal.deliveries.models import Delivery, Digest
from hnpal.deliveries.schedule import next_delivery
from hnpal.memory import service as memory_service
from hnpal.memory.models import Memory
from hnpal.relevance.service import interests_in_use, map_phrases
from hnpal.state.service import current_state
from hnpal.state.store import BotState, FsmState, StateStore
from hnpal.telegram import render
from hnpal.telegram.callbacks import BadCallback, Callback, sign, verify
from hnpal.telegram.render import esc
from hnpal.users.models import User
from hnpal.users.schemas import DigestPreferences, UserCreate, zone_label

log = logging.getLogger(__name__)

TOPICS = (
    "AI", "LLM", "Programming", "Rust", "Python", "Go", "JavaScript", "Databases", "Security", "Privacy",
    "Linux", "Open source", "Startups", "Hardware", "Science", "Space", "Web", "Cloud",
)  # fmt: skip
HELP = (
    "<b>HN Pal</b> brings you the best of Hacker News, summarized, on your schedule.\n\n"
    "/digest — a digest now\n"
    "/discuss HN_ID — talk about a post (or tap 💬 under it); /done ends the talk\n"
    "/settings — style, summary style, time, time zone, frequency, filters\n"
    "/saved — your bookmarks\n"
    "/pause — pause or resume scheduled digests\n"
    "/token — your LLM usage\n"
    "/memory — what I remember about you (pause, forget, clear)\n"
    "/export — a copy of your data · /deletemydata — delete it\n"
    "/start — pick your interests again\n"
    "/help — this message\n\n"
    "Under every post: 💬 discuss it, 👍/👎 to teach me your taste, 💾 to save it."
)
SUMMARY_STYLES = ("basic", "technical", "business", "concise", "personalized")
CHOICES: dict[str, tuple[str, ...]] = {
    "style": ("flat_scroll", "brief"),
    "summary_style": SUMMARY_STYLES,
    "frequency": ("daily", "twice_daily", "weekly"),
    "weekday": ("0", "1", "2", "3", "4", "5", "6"),
}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PROMPTS = {
    "time": "Send the delivery time as HH:MM (24-hour), for example 07:30. "
    "For twice-daily digests send two: 07:30, 19:00.",
    "timezone": "Send your time zone as an IANA name, for example Europe/Berlin or America/New_York.",
    "max_posts": "How many posts per digest? Send a number from 1 to 30.",
    "min_score": "Only posts with at least this many points: send a number (0 for all).",
    "interests": "Send what you want to read about, separated by commas, for example: distributed systems, "
    "compilers, sourdough (send - to clear). They replace your interests; /start picks topic buttons.",
    "muted_keywords": "Send keywords to mute, separated by commas (send - to clear).",
    "muted_domains": "Send domains to mute, separated by commas, e.g. example.com (send - to clear).",
}
SAVED_PER_PAGE = 5
MAX_TEXT = 4000  # longest user text we look at; the rest is ignored


class Outbox(Protocol):
    def send(self, chat_id: int, text: str, reply_markup: dict | None = None) -> dict: ...
    def edit(self, chat_id: int, message_id: int, text: str, reply_markup: dict | None = None) -> dict: ...
    def edit_markup(self, chat_id: int, message_id: int, reply_markup: dict | None) -> dict | None: ...
    def answer(self, callback_query_id: str, text: str | None = None) -> None: ...
    def send_document(self, chat_id: int, filename: str, data: bytes, caption: str | None = None) -> dict: ...


@dataclass
class Ctx:
    session: Session
    out: Outbox
    store: StateStore
    jobs: jobs.Batch  # follow-up tasks, sent once the update's work has committed
    telegram_id: int
    chat_id: int


# --- entry point ------------------------------------------------------------------------------------


class MalformedUpdate(ValueError):
    """An update whose shape Telegram never sends (the task quarantines it with this message)."""


def handle_update(*, session: Session, out: Outbox, store: StateStore, update: dict[str, Any]) -> jobs.Batch:
    """Handle one update. Returns the follow-up tasks it asks for, to be sent once its work has committed.
    Raises only on infrastructure errors (retried, then quarantined) and on malformed updates
    (:class:`MalformedUpdate`: quarantined at once)."""
    effects = jobs.Batch()
    for kind in ("callback_query", "message", "my_chat_member"):
        if kind in update and not isinstance(update[kind], dict):
            raise MalformedUpdate(f"the update's {kind} is a {type(update[kind]).__name__}, not an object")
    if "callback_query" in update:
        _callback(session, out, store, effects, update["callback_query"])
    elif "message" in update:
        _message(session, out, store, effects, update["message"], update.get("update_id"))
    elif "my_chat_member" in update:
        _membership(session, update["my_chat_member"])
    else:  # edited messages, channel posts, polls, reactions...: nothing to do, by design
        log.info("update %s of kind %s ignored", update.get("update_id"), _kind(update))
    return effects


def _kind(update: dict[str, Any]) -> str:
    return next((k for k in update if k != "update_id"), "empty")


# --- messages ---------------------------------------------------------------------------------------


def _message(
    session: Session, out: Outbox, store: StateStore, effects: jobs.Batch, message: dict[str, Any],
    update_id: int | None = None,
) -> None:  # fmt: skip
    chat = message.get("chat") or {}
    sender = message.get("from") or {}
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int) or isinstance(chat.get("id"), bool):
        raise MalformedUpdate("a message without a chat id")
    if chat.get("type") != "private":
        _group_message(out, store, chat["id"], message)
        return
    if not isinstance(sender.get("id"), int) or sender.get("is_bot"):
        return
    ctx = Ctx(session, out, store, effects, sender["id"], chat["id"])
    user = _touch_user(session, sender)
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
            out.send(ctx.chat_id, f"I don't know /{esc(command[:40])}. Here is what I can do:\n\n{HELP}")
            return
        # /admin leaves the state alone: to a non-admin it must act exactly like an unknown command
        store.clear_fsm(ctx.telegram_id) if command not in ("start", "admin") else None
        handler(ctx, user, text)
        return
    state = current_state(session=session, store=store, telegram_id=ctx.telegram_id)  # Redis lost: from PG
    awaiting = state.data.get("awaiting")
    if awaiting in PROMPTS:
        _answer_prompt(ctx, user, awaiting, text)
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


GROUP_NOTICE = "HN Pal works in private chats only: open a chat with me and send /start."
GROUP_NOTICE_INTERVAL = 10 * 60  # one chat hears the notice at most once in this many seconds


def _group_message(out: Outbox, store: StateStore, chat_id: int, message: dict[str, Any]) -> None:
    """A group or channel: HN Pal answers only in private chats. A command of ours (``/help``,
    ``/help@HNPalBot``) gets the notice, at most once per chat per interval (a flood of commands must not
    hit Telegram's 20-a-minute group limit); a command addressed to another bot, or plain talk, nothing."""
    text = message.get("text")
    if not isinstance(text, str) or not text.startswith("/"):
        return
    target = addressed_to(text)
    if target is not None and target != bot_username():
        return
    if store.once(f"group-notice:{int(chat_id)}", GROUP_NOTICE_INTERVAL):
        out.send(chat_id, GROUP_NOTICE)


def addressed_to(text: str) -> str | None:
    """The bot a command names (``/help@OtherBot`` → ``otherbot``), casefolded; None when it names none."""
    head = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    _, at, name = head.partition("@")
    return name.casefold() if at else None


_bot_username: list[str | None] = []  # this process's answer, once known


def bot_username() -> str | None:
    """This bot's username, casefolded (``getMe``, once per process); None if Telegram cannot say now (a
    command addressed to some bot is then taken as another bot's)."""
    from hnpal.telegram.client import BotAPI

    if not _bot_username:
        try:
            name = BotAPI.from_settings().get_me().get("username")
        except Exception as exc:  # noqa: BLE001 - not knowing our name only makes us quieter
            log.warning("getMe failed (%s): commands addressed to a bot are ignored in groups", exc)
            return None
        _bot_username.append(name.casefold() if isinstance(name, str) else None)
    return _bot_username[0]


def _command_of(text: Any) -> str | None:
    """The command a message starts with (``/start@HNPalBot now`` → ``start``), or None."""
    if not isinstance(text, str) or not text.strip().startswith("/"):
        return None
    return text.strip().split()[0][1:].split("@")[0].lower()


def _touch_user(session: Session, sender: dict[str, Any]) -> User:
    """The sender's user row: created on first contact, profile refreshed, back from 'blocked'."""
    values = {
        "telegram_id": sender["id"],
        "username": (sender.get("username") or None) and str(sender["username"])[:255],
        "first_name": (sender.get("first_name") or None) and str(sender["first_name"])[:255],
        "last_name": (sender.get("last_name") or None) and str(sender["last_name"])[:255],
        "last_interaction_at": datetime.now(UTC),
    }
    # One round trip: the row as it is after the upsert, loaded as the session's User.
    return session.scalars(_touch_statement(), values, execution_options={"populate_existing": True}).one()


@functools.cache
def _touch_statement() -> Any:
    """The upsert of :func:`_touch_user`, built once (its parameters bound per call)."""
    columns = ("telegram_id", "username", "first_name", "last_name", "last_interaction_at")
    stmt = insert(User).values({c: bindparam(c) for c in columns})
    return stmt.on_conflict_do_update(
        index_elements=[User.telegram_id],
        set_={
            **{k: stmt.excluded[k] for k in columns[1:]},
            # writing to the bot again means they unblocked it (a paused user comes back paused)
            "status": _unblocked(),
        },
    ).returning(User)


def _unblocked() -> Any:
    """The status of a user who unblocked the bot: 'paused' if they had paused their digests, else
    'active'; any other status is kept."""
    return case(
        (User.status != "blocked", User.status),
        (User.paused_at.is_not(None), "paused"),
        else_="active",
    )


def _membership(session: Session, member: dict[str, Any]) -> None:
    """The user blocked (kicked) or unblocked the bot in their private chat."""
    if (member.get("chat") or {}).get("type") != "private":
        return
    user_id = (member.get("from") or {}).get("id")
    status = (member.get("new_chat_member") or {}).get("status")
    if not isinstance(user_id, int):
        return
    if status == "kicked":
        session.execute(
            update(User).where(User.telegram_id == user_id, User.status != "deleted").values(status="blocked")
        )
    elif status == "member":
        session.execute(
            update(User).where(User.telegram_id == user_id, User.status == "blocked").values(status=_unblocked())
        )


# --- commands ---------------------------------------------------------------------------------------


def cmd_start(ctx: Ctx, user: User, _: str) -> None:
    if user.status == "deleted":  # within the grace period of /deletemydata: restore the account
        privacy.restore(ctx, user)
        return
    name = esc(user.first_name or "there")
    ctx.out.send(
        ctx.chat_id,
        f"Hi {name}! I'm <b>HN Pal</b>: I read Hacker News for you, summarize what matters and send you a "
        "digest on your schedule. Tap 👍/👎 under posts and I learn what you like.",
    )
    # What the interests were before, so that Skip can put them back (Redis lost: Skip keeps the taps).
    ctx.store.set_fsm(ctx.telegram_id, FsmState(state=BotState.ONBOARDING, data={"before": list(user.interests)}))
    ctx.out.send(
        ctx.chat_id,
        "Which topics interest you? Pick any, then tap Done.",
        reply_markup=_topics_keyboard(ctx.telegram_id, user.interests),
    )


def _topics_keyboard(telegram_id: int, interests: list[str]) -> dict[str, Any]:
    chosen = {i.casefold() for i in interests}
    buttons = [
        {"text": f"✅ {t}" if t.casefold() in chosen else t, "callback_data": sign(telegram_id, "in", n)}
        for n, t in enumerate(TOPICS)
    ]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    rows.append(
        [
            {"text": "Done", "callback_data": sign(telegram_id, "in", "done")},
            {"text": "Skip", "callback_data": sign(telegram_id, "in", "skip")},
        ]
    )
    return {"inline_keyboard": rows}


def cmd_help(ctx: Ctx, _: User, __: str) -> None:
    ctx.out.send(ctx.chat_id, HELP)


def cmd_pause(ctx: Ctx, user: User, _: str) -> None:
    if user.status == "paused":
        user.status, user.paused_at = "active", None
        ctx.out.send(ctx.chat_id, "Digests resumed. /pause stops them again.")
    else:
        user.status, user.paused_at = "paused", datetime.now(UTC)
        ctx.out.send(ctx.chat_id, "Digests paused. /pause resumes them; /digest still works.")


def cmd_digest(ctx: Ctx, user: User, _: str) -> None:
    digest_id = deliveries.create_manual_digest(session=ctx.session, user_id=user.id)
    ctx.jobs.enqueue(jobs.DIGESTS_SEND, digest_id, waited_on=True)
    ctx.out.send(ctx.chat_id, "Putting your digest together…")


def cmd_saved(ctx: Ctx, user: User, _: str) -> None:
    text, markup = _saved_view(ctx, user, 0)
    ctx.out.send(ctx.chat_id, text, reply_markup=markup)


def _saved_view(ctx: Ctx, user: User, page: int) -> tuple[str, dict | None]:
    rows, total = deliveries.saved_page(session=ctx.session, user_id=user.id, page=page, per_page=SAVED_PER_PAGE)
    if total == 0:
        return "No bookmarks yet: tap 💾 under a post to save it.", None
    pages = (total + SAVED_PER_PAGE - 1) // SAVED_PER_PAGE
    page = min(max(page, 0), pages - 1)
    lines = [f"<b>Saved posts</b> · {total} · page {page + 1}/{pages}", ""]
    for n, (_delivery, post) in enumerate(rows, start=page * SAVED_PER_PAGE + 1):
        link = post.url or render.HN_ITEM.format(post.hn_id)
        lines.append(
            f'{n}. <a href="{esc(link)}">{esc(render.shorten(post.title, 150))}</a> · '
            f'<a href="{esc(render.HN_ITEM.format(post.hn_id))}">HN</a>'
        )
    nav = []
    if page > 0:
        nav.append({"text": "◀ Newer", "callback_data": sign(ctx.telegram_id, "sp", page - 1)})
    if page < pages - 1:
        nav.append({"text": "Older ▶", "callback_data": sign(ctx.telegram_id, "sp", page + 1)})
    return "\n".join(lines), ({"inline_keyboard": [nav]} if nav else None)


def cmd_token(ctx: Ctx, user: User, _: str) -> None:
    from hnpal.usage.report import usage_rows

    _title, _columns, rows = usage_rows(ctx.session, telegram_id=ctx.telegram_id, days=30)
    total = rows[-1]
    today = rows[0] if len(rows) > 1 and rows[0][0] == datetime.now(UTC).date() else None
    cost = Decimal(total[6]).quantize(Decimal("0.0001"))
    lines = ["<b>Your LLM usage</b>", ""]
    if today is not None:
        lines.append(f"Today: {today[1] + today[2]:,} tokens (${Decimal(today[6]).quantize(Decimal('0.0001'))})")
    lines += [
        f"Last 30 days: {total[1] + total[2]:,} tokens (${cost})",
        f"  summaries {total[3]:,} · discussions {total[4]:,} · memory {total[5]:,}",
        "",
        "Shared summaries cost you nothing: each is made once for everyone.",
    ]
    ctx.out.send(ctx.chat_id, "\n".join(lines))


def cmd_settings(ctx: Ctx, user: User, _: str) -> None:
    ctx.out.send(ctx.chat_id, *_settings_view(ctx, user))


def _settings_view(ctx: Ctx, user: User) -> tuple[str, dict]:
    prefs = deliveries.preferences(user.digest_preferences)
    times = ", ".join(prefs.times)
    when = f"{WEEKDAYS[prefs.weekday]}s {times}" if prefs.frequency == "weekly" else times
    upcoming = next_delivery(prefs, datetime.now(UTC)).astimezone(_zone(prefs))
    text = "\n".join(
        [
            "<b>Settings</b>",
            "",
            f"Digest style: <b>{prefs.style}</b>",
            f"Summary style: <b>{prefs.summary_style}</b>",
            f"Frequency: <b>{prefs.frequency.replace('_', ' ')}</b> at <b>{esc(when)}</b> "
            f"({esc(zone_label(prefs.timezone))})",
            f"Posts per digest: <b>{prefs.max_posts}</b> · minimum score: <b>{prefs.min_score}</b>",
            *_interests_lines(ctx, user),
            f"Muted keywords{_count(prefs.muted_keywords)}: {esc(_listed(prefs.muted_keywords))}",
            f"Muted domains{_count(prefs.muted_domains)}: {esc(_listed(prefs.muted_domains))}",
            f"Status: <b>{user.status}</b> · next digest {upcoming:%a %d %b %H:%M}",
        ]
    )
    tid = ctx.telegram_id
    rows = [
        [_button(tid, "Digest style", "st", "style"), _button(tid, "Summary style", "st", "summary_style")],
        [_button(tid, "Frequency", "st", "frequency"), _button(tid, "Time", "st", "time")],
        [_button(tid, "Time zone", "st", "timezone"), _button(tid, "Weekday", "st", "weekday")],
        [_button(tid, "Posts per digest", "st", "max_posts"), _button(tid, "Min score", "st", "min_score")],
        [_button(tid, "Interests", "st", "interests"), _button(tid, "Muted keywords", "st", "muted_keywords")],
        [_button(tid, "Muted domains", "st", "muted_domains")],
    ]
    return text, {"inline_keyboard": rows}


def _interests_lines(ctx: Ctx, user: User) -> list[str]:
    """The interests the digests use: chosen and typed ones (with the topics they mean), remembered ones,
    and what 👍 taught; each list shortened so the view stays within one message."""
    in_use = interests_in_use(session=ctx.session, user_id=user.id)
    lines = [f"Interests: {esc(render.shorten(', '.join(in_use.declared), 600) or '— (👍/👎 teach me)')}"]
    if in_use.remembered:
        lines.append(f"Remembered from our talks: {esc(render.shorten(', '.join(in_use.remembered), 300))}")
    if in_use.learned:
        lines.append(f"Learned from your 👍: {esc(', '.join(in_use.learned))}")
    return lines


# Each muted list shown in at most this many characters: 50 entries of 100 characters each would take
# Telegram's whole 4096 (the count says how many there are); with the interests' lines the view stays
# within one message.
LIST_CHARS = 1000


def _listed(items: list[str]) -> str:
    return render.shorten(", ".join(items), LIST_CHARS) if items else "—"


def _count(items: list[str]) -> str:
    return f" ({len(items)})" if items else ""


def _zone(prefs: DigestPreferences) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(prefs.timezone)


def _button(telegram_id: int, text: str, action: str, *args: object) -> dict[str, str]:
    return {"text": text, "callback_data": sign(telegram_id, action, *args)}


def _update_prefs(ctx: Ctx, user: User, **changes: Any) -> DigestPreferences:
    """Validate and store changed preferences; raises ValueError with a user-facing message."""
    current = deliveries.preferences(user.digest_preferences).model_dump()
    try:
        prefs = DigestPreferences.model_validate({**current, **changes})
    except ValidationError as exc:
        message = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(message) from None
    user.digest_preferences = prefs.model_dump()
    return prefs


def _answer_prompt(ctx: Ctx, user: User, field_name: str, text: str) -> None:
    try:
        if field_name == "time":
            parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
            if not parts or len(parts) > 2:
                raise ValueError("send one time (HH:MM) or two for twice-daily digests")
            changes: dict[str, Any] = {"time": parts[0]}
            if len(parts) == 2:
                changes["evening_time"] = parts[1]
            _update_prefs(ctx, user, **changes)
        elif field_name == "timezone":
            _update_prefs(ctx, user, timezone=text.strip())
        elif field_name == "interests":
            typed = [] if text.strip() in ("-", "") else [p.strip() for p in text.split(",") if p.strip()]
            try:
                chosen = UserCreate(telegram_id=user.telegram_id, interests=typed).interests
            except ValidationError:
                raise ValueError("send at most 50 interests of up to 100 characters each") from None
            user.interests = chosen
            _remember_interests(ctx.session, user)
            # what they mean, before the view below shows it (once per new phrase)
            ctx.session.flush()
            map_phrases(session=ctx.session, phrases=chosen)
        elif field_name in ("max_posts", "min_score"):
            try:
                value = int(text.strip())
            except ValueError:
                raise ValueError("that is not a whole number") from None
            if field_name == "max_posts" and not 1 <= value <= 30:
                raise ValueError("a digest holds from 1 to 30 posts")
            if field_name == "min_score" and value < 0:
                raise ValueError("a score cannot be negative")
            _update_prefs(ctx, user, **{field_name: value})
        else:
            items = [] if text.strip() in ("-", "") else [p.strip() for p in text.split(",") if p.strip()]
            _update_prefs(ctx, user, **{field_name: items})
    except ValueError as exc:
        # shortened: the message may quote the answer, and a reply over Telegram's 4096 characters fails
        ctx.out.send(ctx.chat_id, f"⚠️ {esc(render.shorten(str(exc), 300))}\n\n{PROMPTS[field_name]}")
        return
    ctx.store.clear_fsm(ctx.telegram_id)
    ctx.out.send(ctx.chat_id, *_settings_view(ctx, user))


COMMANDS = {
    "start": cmd_start,
    "help": cmd_help,
    "settings": cmd_settings,
    "pause": cmd_pause,
    "resume": cmd_pause,
    "digest": cmd_digest,
    "saved": cmd_saved,
    "token": cmd_token,
}


# --- buttons ----------------------------------------------------------------------------------------


def _callback(session: Session, out: Outbox, store: StateStore, effects: jobs.Batch, query: dict[str, Any]) -> None:
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
    user = _touch_user(session, sender)
    if user.status == "deleted":  # /deletemydata grace period: buttons do nothing
        out.answer(query_id, privacy.deleted_notice(user))
        return
    ctx = Ctx(session, out, store, effects, sender["id"], chat.get("id", sender["id"]))
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


def _message_id(message: dict[str, Any]) -> int | None:
    value = message.get("message_id")
    return value if isinstance(value, int) else None


def btn_reaction(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    delivery_id = cb.int_arg(0)
    if cb.action == "sv":
        delivery = deliveries.toggle_save(session=ctx.session, telegram_id=ctx.telegram_id, delivery_id=delivery_id)
        notice = "Saved 💾 (see /saved)" if delivery.is_saved else "Removed from saved"
    else:
        reaction = "up" if cb.action == "up" else "down"
        delivery = deliveries.react(
            session=ctx.session, telegram_id=ctx.telegram_id, delivery_id=delivery_id, reaction=reaction
        )
        notice = {"up": "Noted: more like this 👍", "down": "Noted: less like this 👎", None: "Reaction removed"}[
            delivery.reaction
        ]
        if delivery.reaction == "up":  # enough 👍 on one topic: remember it as an interest
            learned = memory_service.learn_from_reaction(session=ctx.session, user=user, delivery_id=delivery.id)
            notice += f" · I'll remember you like {render.shorten(', '.join(learned), 80)}" if learned else ""
    message_id = _message_id(message)
    if message_id is not None:
        card = deliveries.card_for(session=ctx.session, delivery=delivery)
        extra = _brief_rows(ctx, delivery, message)
        keyboard = render.post_keyboard(card, ctx.telegram_id, extra)
        if ctx.out.edit_markup(ctx.chat_id, message_id, keyboard) is None:  # no longer editable: a fresh card
            fresh = render.post_keyboard(card, ctx.telegram_id)
            ctx.out.send(ctx.chat_id, render.post_message(card), reply_markup=fresh)
    return notice


def _brief_rows(ctx: Ctx, delivery: Delivery, message: dict[str, Any]) -> list[list[dict]] | None:
    """When the post is shown inside a brief digest, keep its number buttons under the post's own."""
    digest = ctx.session.scalar(
        select(Digest).where(
            Digest.user_id == delivery.user_id,
            Digest.batch_id == delivery.batch_id,
            Digest.message_id == _message_id(message),
        )
    )
    if digest is None:
        return None
    count = digest.post_count or 1
    position = _position(ctx.session, digest, delivery.id)
    return render.brief_keyboard(digest.id, count, ctx.telegram_id, selected=position)["inline_keyboard"]


def _position(session: Session, digest: Digest, delivery_id: int) -> int:
    ids = list(
        session.scalars(
            select(Delivery.id)
            .where(Delivery.user_id == digest.user_id, Delivery.batch_id == digest.batch_id)
            .order_by(Delivery.id)
        )
    )
    return ids.index(delivery_id) + 1 if delivery_id in ids else 1


def btn_expand(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    digest = ctx.session.get(Digest, cb.int_arg(0))
    if digest is None or digest.user_id != user.id or digest.message_id is None:
        raise deliveries.NotYours("digest of another user")
    n = cb.int_arg(1)
    cards, _ = deliveries.digest_cards(
        session=ctx.session,
        digest=digest,
        user=user,
        style=deliveries.preferences(user.digest_preferences).summary_style,
        default_style=get_settings().summary_default_style,
    )
    if n == 0 or not 1 <= n <= len(cards):
        text = render.brief_message(cards, deliveries.digest_heading(digest, len(cards)))
        ctx.out.edit(
            ctx.chat_id,
            digest.message_id,
            text,
            reply_markup=render.brief_keyboard(digest.id, len(cards), ctx.telegram_id),
        )
        return None
    card = cards[n - 1]
    numbers = render.brief_keyboard(digest.id, len(cards), ctx.telegram_id, selected=n)["inline_keyboard"]
    ctx.out.edit(
        ctx.chat_id,
        digest.message_id,
        render.post_message(card),
        reply_markup=render.post_keyboard(card, ctx.telegram_id, numbers),
    )
    ctx.session.execute(update(Delivery).where(Delivery.id == card.delivery_id).values(is_read=True))
    return None


def btn_interest(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    arg = cb.arg(0)
    message_id = _message_id(message)
    if arg in ("done", "skip"):
        state = ctx.store.get_fsm(ctx.telegram_id)
        ctx.store.clear_fsm(ctx.telegram_id)
        before = state.data.get("before") if state is not None else None
        if arg == "skip" and isinstance(before, list):
            user.interests = [str(i) for i in before][:50]  # Skip: the topics tapped just now are dropped
        if arg == "done":
            _remember_interests(ctx.session, user)
        chosen = render.shorten(", ".join(user.interests), 3000) if user.interests else "none yet (👍/👎 teach me)"
        text = (
            f"Interests: {esc(chosen)}.\n\nYour first digest arrives at your delivery time; "
            "/digest sends one now, /settings changes the rest."
        )
        if message_id is not None:
            ctx.out.edit(ctx.chat_id, message_id, text)
        return "Saved" if arg == "done" else "Skipped"
    index = cb.int_arg(0)
    if not 0 <= index < len(TOPICS):
        raise BadCallback("no such topic")
    topic = TOPICS[index]
    current = list(user.interests)
    lowered = [i.casefold() for i in current]
    if topic.casefold() in lowered:
        current.pop(lowered.index(topic.casefold()))
    elif len(current) < 50:
        current.append(topic)
    user.interests = current
    if message_id is not None:
        keyboard = _topics_keyboard(ctx.telegram_id, current)
        if ctx.out.edit_markup(ctx.chat_id, message_id, keyboard) is None:  # no longer editable: a fresh one
            ctx.out.send(ctx.chat_id, "Which topics interest you? Pick any, then tap Done.", reply_markup=keyboard)
    return None


def _remember_interests(session: Session, user: User) -> None:
    """The chosen interests as memory rows (type interest, from onboarding), once each; an interest
    unticked since is no longer active (interests learned elsewhere are left alone)."""
    chosen = {interest.casefold() for interest in user.interests}
    rows = session.scalars(
        select(Memory).where(Memory.user_id == user.id, Memory.type == "interest", Memory.active)
    ).all()
    existing = {row.content.casefold() for row in rows}
    for row in rows:
        if row.source_type == "onboarding" and row.content.casefold() not in chosen:
            row.active = False
    for interest in user.interests:
        if interest.casefold() not in existing:
            session.add(Memory(user_id=user.id, type="interest", content=interest, source_type="onboarding"))


def btn_settings(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    field_name = cb.arg(0)
    message_id = _message_id(message)
    if field_name == "menu":
        if message_id is not None:
            ctx.out.edit(ctx.chat_id, message_id, *_settings_view(ctx, user))
        return None
    if field_name in PROMPTS:
        ctx.store.set_fsm(ctx.telegram_id, FsmState(state=BotState.IDLE, data={"awaiting": field_name}))
        ctx.out.send(ctx.chat_id, PROMPTS[field_name])
        return None
    options = CHOICES.get(field_name)
    if options is None:
        raise BadCallback(f"no setting {field_name}")
    prefs = deliveries.preferences(user.digest_preferences).model_dump()
    rows = []
    for n, option in enumerate(options):
        label = WEEKDAYS[int(option)] if field_name == "weekday" else option.replace("_", " ")
        if str(prefs.get(field_name)) == option:
            label = f"✅ {label}"
        rows.append([_button(ctx.telegram_id, label, "set", field_name, n)])
    rows.append([_button(ctx.telegram_id, "⬅ Back", "st", "menu")])
    if message_id is not None:
        ctx.out.edit(
            ctx.chat_id,
            message_id,
            f"Choose the {field_name.replace('_', ' ')}:",
            reply_markup={"inline_keyboard": rows},
        )
    return None


def btn_set(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    field_name = cb.arg(0)
    options = CHOICES.get(field_name)
    index = cb.int_arg(1)
    if options is None or not 0 <= index < len(options):
        raise BadCallback(f"no option {index} for {field_name}")
    value: Any = int(options[index]) if field_name == "weekday" else options[index]
    _update_prefs(ctx, user, **{field_name: value})
    message_id = _message_id(message)
    if message_id is not None:
        ctx.out.edit(ctx.chat_id, message_id, *_settings_view(ctx, user))
    return "Saved"


def btn_saved_page(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    message_id = _message_id(message)
    text, markup = _saved_view(ctx, user, cb.int_arg(0))
    if message_id is not None:
        ctx.out.edit(ctx.chat_id, message_id, text, reply_markup=markup)
    return None


BUTTONS = {
    "up": btn_reaction,
    "dn": btn_reaction,
    "sv": btn_reaction,
    "ex": btn_expand,
    "in": btn_interest,
    "st": btn_settings,
    "set": btn_set,
    "sp": btn_saved_page,
}


# The discussion, memory and privacy commands live in modules of their own (they use Ctx and the helpers
# above, so they are imported last) and register their commands and buttons here.
from hnpal.telegram import admin, discuss, privacy  # noqa: E402

for _module in (discuss, privacy, admin):
    COMMANDS.update(_module.COMMANDS)
    BUTTONS.update(_module.BUTTONS)
