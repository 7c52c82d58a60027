"""Steps 5 and 6: waiting for each user's scheduled digest, printing it as Telegram shows it, and pressing
a few of its buttons (each effect checked)."""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from sqlalchemy import text

from hnpal.demo.chats import UserChat
from hnpal.demo.common import DIGEST_GRACE, DemoError
from hnpal.demo.render import keyboard, telegram_message

if TYPE_CHECKING:
    from hnpal.sandbox.telegram_api import SentMessage


DIGEST_SQL = text(
    "SELECT g.id, g.batch_id, g.status, g.style, g.post_count, g.message_id, g.error FROM digests g "
    "JOIN users u ON u.id = g.user_id WHERE u.telegram_id = :tid AND NOT g.manual ORDER BY g.id"
)


DIGEST_MESSAGES_SQL = text(
    "SELECT d.message_id FROM deliveries d JOIN digests g "
    "ON g.user_id = d.user_id AND g.batch_id = d.batch_id WHERE g.id = :digest_id AND d.message_id IS NOT NULL "
    "ORDER BY d.id"
)


def _digests_of(telegram_id: int) -> list[dict[str, Any]]:
    from hnpal.db.session import session_scope

    with session_scope() as session:
        return [dict(row._mapping) for row in session.execute(DIGEST_SQL, {"tid": telegram_id})]


def _all_shown(chat: UserChat, message_ids: list[int]) -> bool:
    return all(chat.tg.message(chat.uid, m) for m in message_ids)


def wait_for_digests(console: Console, chats: dict[str, UserChat]) -> None:
    latest = max(chat.due_at for chat in chats.values() if chat.due_at is not None)
    deadline = time.monotonic() + max(0.0, (latest - datetime.now(latest.tzinfo)).total_seconds()) + DIGEST_GRACE
    waiting = dict(chats)
    last_note = 0.0
    while waiting:
        for name, chat in list(waiting.items()):
            digests = _digests_of(chat.uid)
            done = [d for d in digests if d["status"] in ("sent", "empty", "failed")]
            if not done:
                continue
            digest = done[-1]
            if digest["status"] != "sent":
                raise DemoError(
                    f"{name}'s digest {digest['batch_id']} ended {digest['status']} "
                    f"({digest['error'] or 'no posts matched'})"
                )
            chat.digest = digest
            messages = _digest_message_ids(chat)
            chat.tg.wait_until(
                partial(_all_shown, chat, messages),
                timeout=10,
                what=f"{name}'s digest messages",
            )
            console.print(
                f"   {escape(name)}: digest {digest['batch_id']} sent at "
                f"{datetime.now(ZoneInfo(chat.user.timezone)):%H:%M:%S} {chat.user.timezone}: "
                f"{digest['post_count']} posts in {len(messages)} message{'s' if len(messages) != 1 else ''}"
            )
            del waiting[name]
        if not waiting:
            break
        now = time.monotonic()
        if now > deadline:
            states = {n: [d["status"] for d in _digests_of(c.uid)] or "not created yet" for n, c in waiting.items()}
            raise DemoError(f"digests not delivered in time: {states}")
        if now - last_note > 15:
            console.print(f"   waiting for {', '.join(waiting)}...")
            last_note = now
        time.sleep(0.5)


def _digest_message_ids(chat: UserChat) -> list[int]:
    from hnpal.db.session import session_scope

    digest = chat.digest
    assert digest is not None
    if digest["style"] == "brief":
        return [digest["message_id"]]
    with session_scope() as session:
        return list(session.scalars(DIGEST_MESSAGES_SQL, {"digest_id": digest["id"]}))


def print_digest(console: Console, chat: UserChat) -> None:
    user = chat.user
    digest = chat.digest
    assert digest is not None
    console.print()
    console.rule(
        f"[bold]{escape(user.first_name)}'s digest[/] · {digest['style'].replace('_', ' ')} · "
        f"{user.summary_style} summaries · interests {escape(', '.join(user.topics))}",
        align="left",
        style="cyan",
    )
    chat.digest_messages = _digest_message_ids(chat)
    for message_id in chat.digest_messages:
        message = chat.tg.message(chat.uid, message_id)
        assert message is not None
        console.print(telegram_message(message, f"HN Pal → {user.first_name}"))


def press_buttons(console: Console, chats: dict[str, UserChat]) -> None:
    """A few buttons through the sandbox (real callback queries); each effect is checked, then shown."""
    ada, linus, grace = chats["Ada"], chats["Linus"], chats["Grace"]

    def tap(chat: UserChat, message: SentMessage, label: str, what: str, *, mark: str | None = None,
            answer: str | None = None, full: bool = False) -> None:  # fmt: skip
        query_id = chat.press(message, label)
        console.print(f"[cyan]{escape(chat.user.first_name)}[/] {escape(what)} → {escape(chat.steps[-1].effect)}")
        now = chat.tg.message(chat.uid, message.message_id)
        assert now is not None
        if answer is not None and answer not in (chat.answers.get(query_id) or ""):
            raise DemoError(f"{chat.user.first_name} tapped {label}: the answer was {chat.answers.get(query_id)!r}")
        if mark is not None and mark not in [b["text"] for b in now.buttons()]:
            raise DemoError(f"{chat.user.first_name} tapped {label}: the post does not show {mark}")
        if full:
            console.print(telegram_message(now, f"HN Pal → {chat.user.first_name}"))
        else:
            keys = keyboard(now.reply_markup)
            if keys is not None:
                console.print(keys)

    def post(chat: UserChat, n: int) -> SentMessage:
        ids = chat.digest_messages
        found = chat.tg.message(chat.uid, ids[min(n, len(ids) - 1)])
        assert found is not None
        return found

    tap(ada, post(ada, 0), "👍", "taps 👍 under her first post", mark="👍✓", answer="more like this")
    tap(ada, post(ada, 1), "💾 Save", "taps 💾 under her second post", mark="💾✓", answer="Saved")
    ada.say("/saved")
    console.print(f"[cyan]Ada[/] writes /saved → {escape(ada.steps[-1].effect)}")
    console.print(telegram_message(ada.last(), "HN Pal → Ada"))

    brief = post(linus, 0)
    tap(linus, brief, "2", "taps 2 in his brief digest: the post opens in place", mark="·2·", full=True)
    tap(linus, brief, "👍", "taps 👍 under it", mark="👍✓", answer="more like this")
    tap(grace, post(grace, 2), "👎", "taps 👎 under her last post", mark="👎✓", answer="less like this")
