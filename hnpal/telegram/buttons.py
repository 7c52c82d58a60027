"""The buttons under posts and digests (👍/👎/💾, a brief digest's numbers), the onboarding topics, and
the pages of /saved. Each returns the notice shown on the button press (or None)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config.settings import get_settings
from hnpal.deliveries import service as deliveries
from hnpal.deliveries.models import Delivery, Digest
from hnpal.memory import service as memory_service
from hnpal.telegram import render
from hnpal.telegram.callbacks import BadCallback, Callback
from hnpal.telegram.commands import saved_view, topics_keyboard
from hnpal.telegram.context import Ctx, message_id_of
from hnpal.telegram.render import esc
from hnpal.telegram.settings_menu import remember_interests
from hnpal.telegram.texts import TOPICS
from hnpal.users.models import User


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
    message_id = message_id_of(message)
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
            Digest.message_id == message_id_of(message),
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
    message_id = message_id_of(message)
    if arg in ("done", "skip"):
        state = ctx.store.get_fsm(ctx.telegram_id)
        ctx.store.clear_fsm(ctx.telegram_id)
        before = state.data.get("before") if state is not None else None
        if arg == "skip" and isinstance(before, list):
            user.interests = [str(i) for i in before][:50]  # Skip: the topics tapped just now are dropped
        if arg == "done":
            remember_interests(ctx.session, user)
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
        keyboard = topics_keyboard(ctx.telegram_id, current)
        if ctx.out.edit_markup(ctx.chat_id, message_id, keyboard) is None:  # no longer editable: a fresh one
            ctx.out.send(ctx.chat_id, "Which topics interest you? Pick any, then tap Done.", reply_markup=keyboard)
    return None


def btn_saved_page(ctx: Ctx, user: User, cb: Callback, message: dict[str, Any]) -> str | None:
    message_id = message_id_of(message)
    text, markup = saved_view(ctx, user, cb.int_arg(0))
    if message_id is not None:
        ctx.out.edit(ctx.chat_id, message_id, text, reply_markup=markup)
    return None
