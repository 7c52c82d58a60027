"""The settings menu: /settings, its buttons, and the typed answers to its prompts.

A setting with a few values is picked from buttons (``st`` opens its choices, ``set`` stores one); the
others prompt for a typed answer, which the router hands to :func:`answer_prompt` while the user's state
says it is awaited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from hnpal.deliveries import service as deliveries
from hnpal.deliveries.schedule import next_delivery
from hnpal.memory.models import Memory
from hnpal.relevance.model import muted_topics, topic_name
from hnpal.relevance.service import interests_in_use, map_phrases
from hnpal.state.store import BotState, FsmState
from hnpal.telegram import render
from hnpal.telegram.callbacks import BadCallback, Callback
from hnpal.telegram.context import Ctx, button, message_id_of
from hnpal.telegram.render import esc
from hnpal.telegram.texts import PROMPTS
from hnpal.users.models import User
from hnpal.users.schemas import DigestPreferences, UserCreate, zone_label

SUMMARY_STYLES = ("basic", "technical", "business", "concise", "personalized")
CHOICES: dict[str, tuple[str, ...]] = {
    "style": ("flat_scroll", "brief"),
    "summary_style": SUMMARY_STYLES,
    "frequency": ("daily", "twice_daily", "weekly"),
    "weekday": ("0", "1", "2", "3", "4", "5", "6"),
}
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def cmd_settings(ctx: Ctx, user: User, _: str) -> None:
    ctx.out.send(ctx.chat_id, *settings_view(ctx, user))


def settings_view(ctx: Ctx, user: User) -> tuple[str, dict]:
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
            *_muted_topics_line(prefs.muted_keywords),
            f"Muted domains{_count(prefs.muted_domains)}: {esc(_listed(prefs.muted_domains))}",
            f"Status: <b>{user.status}</b> · next digest {upcoming:%a %d %b %H:%M}",
        ]
    )
    tid = ctx.telegram_id
    rows = [
        [button(tid, "Digest style", "st", "style"), button(tid, "Summary style", "st", "summary_style")],
        [button(tid, "Frequency", "st", "frequency"), button(tid, "Time", "st", "time")],
        [button(tid, "Time zone", "st", "timezone"), button(tid, "Weekday", "st", "weekday")],
        [button(tid, "Posts per digest", "st", "max_posts"), button(tid, "Min score", "st", "min_score")],
        [button(tid, "Interests", "st", "interests"), button(tid, "Muted keywords", "st", "muted_keywords")],
        [button(tid, "Muted domains", "st", "muted_domains")],
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


def _muted_topics_line(mutes: list[str]) -> list[str]:
    """The topics the muted keywords name, whose posts are muted too (not only the titles with the word)."""
    names = [topic_name(t) for t in muted_topics(mutes)]
    return [f"Muted topics (by meaning): {esc(', '.join(names))}"] if names else []


def _listed(items: list[str]) -> str:
    return render.shorten(", ".join(items), LIST_CHARS) if items else "—"


def _count(items: list[str]) -> str:
    return f" ({len(items)})" if items else ""


def _zone(prefs: DigestPreferences) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(prefs.timezone)


def update_prefs(ctx: Ctx, user: User, **changes: Any) -> DigestPreferences:
    """Validate and store changed preferences; raises ValueError with a user-facing message."""
    current = deliveries.preferences(user.digest_preferences).model_dump()
    try:
        prefs = DigestPreferences.model_validate({**current, **changes})
    except ValidationError as exc:
        message = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(message) from None
    user.digest_preferences = prefs.model_dump()
    return prefs


def answer_prompt(ctx: Ctx, user: User, field_name: str, text: str) -> None:
    try:
        if field_name == "time":
            parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
            if not parts or len(parts) > 2:
                raise ValueError("send one time (HH:MM) or two for twice-daily digests")
            changes: dict[str, Any] = {"time": parts[0]}
            if len(parts) == 2:
                changes["evening_time"] = parts[1]
            update_prefs(ctx, user, **changes)
        elif field_name == "timezone":
            update_prefs(ctx, user, timezone=text.strip())
        elif field_name == "interests":
            typed = [] if text.strip() in ("-", "") else [p.strip() for p in text.split(",") if p.strip()]
            try:
                chosen = UserCreate(telegram_id=user.telegram_id, interests=typed).interests
            except ValidationError:
                raise ValueError("send at most 50 interests of up to 100 characters each") from None
            user.interests = chosen
            remember_interests(ctx.session, user)
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
            update_prefs(ctx, user, **{field_name: value})
        else:
            items = [] if text.strip() in ("-", "") else [p.strip() for p in text.split(",") if p.strip()]
            update_prefs(ctx, user, **{field_name: items})
    except ValueError as exc:
        # shortened: the message may quote the answer, and a reply over Telegram's 4096 characters fails
        ctx.out.send(ctx.chat_id, f"⚠️ {esc(render.shorten(str(exc), 300))}\n\n{PROMPTS[field_name]}")
        return
    ctx.store.clear_fsm(ctx.telegram_id)
    ctx.out.send(ctx.chat_id, *settings_view(ctx, user))


def remember_interests(session: Session, user: User) -> None:
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
    message_id = message_id_of(message)
    if field_name == "menu":
        if message_id is not None:
            ctx.out.edit(ctx.chat_id, message_id, *settings_view(ctx, user))
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
        rows.append([button(ctx.telegram_id, label, "set", field_name, n)])
    rows.append([button(ctx.telegram_id, "⬅ Back", "st", "menu")])
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
    update_prefs(ctx, user, **{field_name: value})
    message_id = message_id_of(message)
    if message_id is not None:
        ctx.out.edit(ctx.chat_id, message_id, *settings_view(ctx, user))
    return "Saved"
