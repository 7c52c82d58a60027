"""The main job, step by step: the pipeline while three users meet the bot, then their digests, a few
buttons, a discussion and the database afterwards."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from hnpal.demo.chats import Parallel, UserChat, print_transcript
from hnpal.demo.common import DIGEST_DUE_INTERVAL, UPDATE_WAIT, DemoUser
from hnpal.demo.digests import press_buttons, print_digest, wait_for_digests
from hnpal.demo.discussion import discussion
from hnpal.demo.pipeline import report_posts, run_pipeline
from hnpal.demo.render import telegram_message
from hnpal.demo.report import database_summary

if TYPE_CHECKING:
    from hnpal.sandbox.telegram_api import TelegramServer


def main_job(console: Console, tg: TelegramServer, users: tuple[DemoUser, ...], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    chats = {user.first_name: UserChat(tg, user) for user in users}
    console.print(
        f"[bold]0. three Telegram users[/] meet the bot while the pipeline runs: "
        f"{', '.join(escape(u.first_name) for u in users)}"
    )
    onboarding = Parallel([(chat.user.first_name, chat.onboard) for chat in chats.values()])
    if not run_pipeline(console, timeout, check=onboarding.check):
        return False
    report_posts(console)
    onboarding.join(max(5.0, deadline - time.monotonic()))

    console.rule("[bold]0. onboarding (alongside the pipeline), through the real bot")
    for chat in chats.values():
        print_transcript(console, chat)
        console.print(telegram_message(chat.last(), f"HN Pal → {chat.user.first_name}"))

    console.rule("[bold]5. digests")
    console.print(
        "Each user now sets their delivery time to the next minute in their own time zone (/settings → Time); "
        f"beat's scheduler (every {DIGEST_DUE_INTERVAL}s) creates their digest when it is due, selects and "
        "reserves posts, and the telegram worker sends it (summaries in each user's style are made first)."
    )
    Parallel([(chat.user.first_name, chat.set_delivery_time) for chat in chats.values()]).join(UPDATE_WAIT * 3)
    for chat in chats.values():
        due = chat.due_at
        assert due is not None
        console.print(
            f"   {escape(chat.user.first_name)}: delivery time {due:%H:%M} {chat.user.timezone} "
            f"(in {max(0, (due - datetime.now(due.tzinfo)).total_seconds()):.0f}s)"
        )
    wait_for_digests(console, chats)
    for chat in chats.values():
        print_digest(console, chat)

    console.rule("[bold]6. buttons")
    press_buttons(console, chats)

    console.rule("[bold]7. a discussion, and what HN Pal remembers of it")
    discussion(console, chats["Ada"])

    console.rule("[bold]8. the database afterwards")
    database_summary(console)
    if tg.throttled:
        refused = ", ".join(f"{t.method} to {t.chat_id} ({t.scope} limit)" for t in tg.throttled[:5])
        console.print(f"[yellow]Telegram's flood control refused {len(tg.throttled)} send(s) (429): {refused}")
    return True
