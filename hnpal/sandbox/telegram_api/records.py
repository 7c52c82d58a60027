"""What the sandbox records (messages, edits, answers, documents, sends, throttles, webhook deliveries,
faults) and the reply shapes: ``{"ok": true, ...}`` and the Bot API's errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hnpal.sandbox.telegram_api.constants import JSON_UTF8


@dataclass
class MessageEdit:
    """One accepted edit of a bot message: the content after it."""

    method: str
    text: str
    raw_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    date: int
    at: float  # time.monotonic()


@dataclass
class SentMessage:
    """A message the bot sent; ``text``/``entities``/``reply_markup`` are its current (edited) state.

    For a document ``text`` is the caption and ``document`` describes the file.
    """

    message_id: int
    chat_id: int
    text: str
    raw_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    date: int
    sent_at: float  # time.monotonic()
    method: str = "sendMessage"
    edits: list[MessageEdit] = field(default_factory=list)
    edit_date: int | None = None
    document: dict[str, Any] | None = None
    reply_to_message_id: int | None = None
    link_preview_options: dict[str, Any] | None = None
    disable_notification: bool = False
    deleted: bool = False

    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row by row, flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]

    def callback_data(self) -> list[str]:
        return [b["callback_data"] for b in self.buttons() if "callback_data" in b]


@dataclass
class CallbackAnswer:
    callback_query_id: str
    user_id: int
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int
    at: float  # time.monotonic()


@dataclass
class SentDocument:
    chat_id: int
    message_id: int
    file_id: str
    file_unique_id: str
    file_name: str | None
    mime_type: str | None
    data: bytes
    caption: str
    at: float  # time.monotonic()


@dataclass
class SendRecord:
    """An accepted message-sending call (the ones flood control counts)."""

    method: str
    chat_id: int
    message_id: int
    at: float  # time.monotonic()


@dataclass
class Throttle:
    """A 429 the flood control answered: ``scope`` is "global", "chat" or "group"."""

    method: str
    chat_id: int
    scope: str
    retry_after: int
    at: float


@dataclass
class WebhookDelivery:
    update_id: int
    attempts: int
    status: int | None  # the last HTTP status, None when the connection failed
    delivered: bool
    error: str | None
    at: float


@dataclass
class Fault:
    method: str  # lower-cased method name, or "*"
    kind: str
    params: dict[str, Any]
    remaining: int | None
    skip: int = 0  # matching calls still to let through before misbehaving


@dataclass
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    file_name: str | None
    mime_type: str | None
    file_path: str


@dataclass
class CallbackQuery:
    query_id: str
    user_id: int
    created: float
    answered: bool = False


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = JSON_UTF8
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: str | None = None  # "close" or "reset": no answer at all


class TelegramError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        parameters: dict[str, Any] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass
class Described:
    """A result sent with a ``description`` (setWebhook says "Webhook was set")."""

    result: Any
    description: str


def bad_request(description: str) -> TelegramError:
    return TelegramError(400, "Bad Request: " + description)


def too_many(retry_after: int) -> TelegramError:
    return TelegramError(
        429,
        f"Too Many Requests: retry after {retry_after}",
        parameters={"retry_after": retry_after},
        headers=[("Retry-After", str(retry_after))],
    )


class Serialized(str):
    """A method's result already as JSON text (a send's answer: serialized once, under the lock)."""


def ok_reply(result: Any) -> Reply:
    if isinstance(result, Serialized):
        return Reply(200, ('{"ok": true, "result": ' + result + "}").encode("utf-8"), JSON_UTF8, [])
    return json_reply(200, {"ok": True, "result": result})


def json_reply(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, json.dumps(value, ensure_ascii=False).encode("utf-8"), JSON_UTF8, headers or [])


def error_reply(error: TelegramError) -> Reply:
    return json_reply(error.status, error.body(), error.headers)
