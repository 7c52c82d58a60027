"""What every handler is given: the update's :class:`Ctx` (its transaction, where replies go, the
conversation state, the follow-up jobs) and the small helpers the handler modules share.

A handler is ``cmd_x(ctx, user, text)`` for a command or ``btn_x(ctx, user, callback, message)`` for a
button (returning the notice shown on the button press, or None); :mod:`hnpal.telegram.router` holds the
tables that name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from hnpal.jobs import Batch
from hnpal.state.store import StateStore
from hnpal.telegram.callbacks import sign


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
    jobs: Batch  # follow-up tasks, sent once the update's work has committed
    telegram_id: int
    chat_id: int


def button(telegram_id: int, text: str, action: str, *args: object) -> dict[str, str]:
    return {"text": text, "callback_data": sign(telegram_id, action, *args)}


def message_id_of(message: dict[str, Any]) -> int | None:
    value = message.get("message_id")
    return value if isinstance(value, int) else None
