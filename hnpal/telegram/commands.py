"""The everyday commands: /start, /help, /pause (and /resume), /digest, /saved, /token.

/settings is in :mod:`hnpal.telegram.settings_menu`; the discussion, memory, privacy and admin commands
in modules of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hnpal import jobs
from hnpal.deliveries import service as deliveries
from hnpal.state.store import BotState, FsmState
from hnpal.telegram import privacy, render
from hnpal.telegram.callbacks import sign
from hnpal.telegram.context import Ctx
from hnpal.telegram.render import esc
from hnpal.telegram.texts import HELP, TOPICS
from hnpal.users.models import User

SAVED_PER_PAGE = 5


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
        reply_markup=topics_keyboard(ctx.telegram_id, user.interests),
    )


def topics_keyboard(telegram_id: int, interests: list[str]) -> dict[str, Any]:
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
    text, markup = saved_view(ctx, user, 0)
    ctx.out.send(ctx.chat_id, text, reply_markup=markup)


def saved_view(ctx: Ctx, user: User, page: int) -> tuple[str, dict | None]:
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
