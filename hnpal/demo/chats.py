"""The simulated users: each acts through the sandbox Bot API (real updates the bot process stores and
the telegram worker handles) and waits until its update is handled before the next step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from hnpal.demo.common import UPDATE_WAIT, DemoError, DemoUser, first_line, shorten

if TYPE_CHECKING:
    from hnpal.sandbox.telegram_api import SentMessage, TelegramServer


def update_state(update_id: int) -> tuple[str | None, str | None]:
    from hnpal.db.session import session_scope
    from hnpal.telegram.models import TelegramUpdate

    with session_scope() as session:
        row = session.execute(
            select(TelegramUpdate.status, TelegramUpdate.error).where(TelegramUpdate.update_id == update_id)
        ).first()
    return (row[0], row[1]) if row else (None, None)


@dataclass
class Step:
    """One line of a user's conversation: what they did, and what the bot did in answer."""

    action: str
    effect: str


@dataclass
class UserChat:
    """One simulated user: acts through the sandbox (real updates) and waits for the bot's answers."""

    tg: TelegramServer
    user: DemoUser
    steps: list[Step] = field(default_factory=list)
    due_at: datetime | None = None
    answers: dict[str, str | None] = field(default_factory=dict)  # callback query id -> answer text
    digest: dict[str, Any] | None = None  # the scheduled digest's row, once sent
    digest_messages: list[int] = field(default_factory=list)  # its Telegram message ids, in order

    @property
    def uid(self) -> int:
        return self.user.telegram_id

    def messages(self) -> list[SentMessage]:
        return self.tg.messages(self.uid)

    def last(self) -> SentMessage:
        messages = self.messages()
        if not messages:
            raise DemoError(f"the bot has sent {self.user.first_name} nothing")
        return messages[-1]

    def _handled(self, update: dict[str, Any], what: str) -> None:
        """Wait until the worker has handled the update (its replies, edits and answer are sent by then)."""
        update_id = update["update_id"]
        deadline = time.monotonic() + UPDATE_WAIT
        while True:
            status, error = update_state(update_id)
            if status == "processed":
                return
            if status == "quarantined":
                raise DemoError(f"{self.user.first_name}: {what} could not be handled: {error}")
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{self.user.first_name}: {what} not handled within {UPDATE_WAIT:.0f}s "
                    f"(update {update_id} is {status or 'not stored: is the bot polling?'})"
                )
            time.sleep(0.1)

    def _effect(self, before: dict[int, tuple[str, tuple[str, ...]]], count: int) -> str:
        """What changed in the chat since ``before`` (message id -> (text, keyboard labels))."""
        parts = []
        for message in self.messages():
            labels = tuple(b["text"] for b in message.buttons())
            if message.message_id not in before:
                shown = " ".join(f"[{label}]" for label in labels)
                parts.append(f"sends “{first_line(message.text)}”" + (f" {shorten(shown, 60)}" if labels else ""))
            elif before[message.message_id] != (message.text, labels):
                if before[message.message_id][0] != message.text:
                    parts.append(f"edits it: “{first_line(message.text)}”")
                else:
                    changed = [label for label in labels if label not in before[message.message_id][1]]
                    parts.append(f"edits the buttons: {' '.join(f'[{label}]' for label in changed) or 'unchanged'}")
        answer = [a.text for a in self.tg.callback_answers[count:] if a.user_id == self.uid and a.text]
        if answer:
            parts.append(f"answers “{answer[-1]}”")
        return "; ".join(parts) or "—"

    def _snapshot(self) -> tuple[dict[int, tuple[str, tuple[str, ...]]], int]:
        state = {m.message_id: (m.text, tuple(b["text"] for b in m.buttons())) for m in self.messages()}
        return state, len(self.tg.callback_answers)

    def say(self, text: str) -> None:
        before, answers = self._snapshot()
        update = self.tg.send_user_message(self.uid, text)
        self._handled(update, f"the message {text!r}")
        self.steps.append(Step(f"writes {text}", self._effect(before, answers)))

    def press(self, message: SentMessage, label: str) -> str:
        """Press the button labelled ``label`` (✅ and ✓ marks ignored) on the message as it is now;
        returns the callback query id."""
        current = self.tg.message(self.uid, message.message_id) or message
        button = find_button(current, label)
        before, answers = self._snapshot()
        update = self.tg.press_button(self.uid, current.message_id, button["callback_data"])
        query_id = update["callback_query"]["id"]
        self._handled(update, f"the button {label!r}")
        self.answers[query_id] = next(
            (a.text for a in self.tg.callback_answers if a.callback_query_id == query_id), None
        )
        self.steps.append(Step(f"taps [{button['text']}]", self._effect(before, answers)))
        return query_id

    # -- scripts --

    def onboard(self) -> None:
        user = self.user
        self.tg.add_user(user.telegram_id, user.first_name, username=user.username)
        self.say("/start")
        topics = self.last()
        for topic in user.topics:
            self.press(topics, topic)
        self.press(topics, "Done")
        self.say("/settings")
        menu = self.last()
        for field_label, value in (("Digest style", user.style), ("Summary style", user.summary_style)):
            if f"{field_label}: {value}" in menu.text:  # already what they want (the default)
                continue
            self.press(menu, field_label)
            self.press(menu, value.replace("_", " "))
        for field_label, typed in (
            ("Time zone", user.timezone),
            ("Posts per digest", str(user.max_posts)),
            ("Muted keywords", user.muted_keywords),
        ):
            if typed is None:
                continue
            self.press(self.last(), field_label)
            self.say(typed)

    def set_delivery_time(self) -> None:
        """/settings → Time → the next whole minute in the user's zone (at least 20 s away)."""
        self.say("/settings")
        self.press(self.last(), "Time")
        now = datetime.now(ZoneInfo(self.user.timezone))
        due = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (due - now).total_seconds() < 20:
            due += timedelta(minutes=1)
        self.say(f"{due:%H:%M}")
        if f"at {due:%H:%M}" not in self.last().text:
            raise DemoError(f"{self.user.first_name}: the time {due:%H:%M} was not accepted: {self.last().text}")
        self.due_at = due


def find_button(message: SentMessage, label: str) -> dict[str, Any]:
    def bare(text: str) -> str:
        return text.removeprefix("✅ ").removesuffix("✓").strip()

    for button in message.buttons():
        if button["text"] == label or bare(button["text"]) == label:
            return button
    raise DemoError(
        f"no button {label!r} on message {message.message_id} (has {[b['text'] for b in message.buttons()]})"
    )


class Parallel:
    """Run a few named scripts in threads; ``join`` re-raises the first failure."""

    def __init__(self, scripts: list[tuple[str, Callable[[], None]]]) -> None:
        self.errors: list[tuple[str, BaseException]] = []
        self.threads = [
            threading.Thread(target=self._run, args=(name, fn), name=f"demo-{name}", daemon=True)
            for name, fn in scripts
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.errors.append((name, exc))

    def check(self) -> None:
        """Raise the first failure now, if there is one."""
        if self.errors:
            name, exc = self.errors[0]
            if isinstance(exc, DemoError):
                raise exc
            raise DemoError(f"{name}: {type(exc).__name__}: {exc}") from exc

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.check()
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise DemoError(f"{', '.join(alive)} did not finish within {timeout:.0f}s")


def print_transcript(console: Console, chat: UserChat) -> None:
    user = chat.user
    table = Table(
        title=f"{escape(user.first_name)} (@{escape(user.username)}) — {escape(user.about)}",
        box=box.SIMPLE,
        show_header=True,
        title_justify="left",
        padding=(0, 1),
    )
    table.add_column(user.first_name, style="cyan", no_wrap=True)
    table.add_column("HN Pal", overflow="fold")
    for step in chat.steps:
        table.add_row(Text(step.action), Text(step.effect))
    console.print(table)
