"""The sandbox's state: users, chats, the update queue, the bot's messages, files, commands, the webhook,
flood-control windows and the logs, all under one lock; and the helpers every Bot API method shares
(resolving a chat, admitting a send under flood control, the message objects Telegram returns)."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from types import EllipsisType
from typing import Any

from hnpal.sandbox._server import LoopbackServer
from hnpal.sandbox.telegram_api.constants import DEFAULT_EXCLUDED_UPDATES, GROUP_WINDOW
from hnpal.sandbox.telegram_api.entities import PARSERS, EntityParseError, sorted_entities, trim_text, utf16_len
from hnpal.sandbox.telegram_api.params import param_bool, param_int, param_json, param_str
from hnpal.sandbox.telegram_api.records import (
    CallbackAnswer,
    CallbackQuery,
    Fault,
    SendRecord,
    SentDocument,
    SentMessage,
    Serialized,
    StoredFile,
    TelegramError,
    Throttle,
    Upload,
    WebhookDelivery,
    bad_request,
    too_many,
)

Method = Callable[[dict[str, Any], dict[str, Upload]], Any]


class ChatState(LoopbackServer):
    """Everything the server knows, guarded by ``_lock`` (``_cond`` wakes long polls and waits).

    Helpers whose docstring does not say otherwise are called with the lock held."""

    token: str
    bot_id: int
    username: str
    first_name: str
    enforce_limits: bool
    global_rate: int | None
    per_chat_rate: int | None
    group_rate: int | None
    burst_tolerance: int
    webhook_attempts: int
    webhook_retry_delay: float
    webhook_timeout: float
    first_update_id: int
    verbose: bool
    _lock: threading.RLock
    _cond: threading.Condition
    _methods: dict[str, tuple[str, Method]]  # lower-case name -> (name, method), filled by the server

    def _clear_state(self, *, keep_users: bool) -> None:
        if not keep_users:
            self._users: dict[int, dict[str, Any]] = {}
            self._chats: dict[int, dict[str, Any]] = {}
        self.blocked: set[int] = set()
        self.deactivated: set[int] = set()
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = self.first_update_id
        self._allowed_updates: list[str] | None = None
        self._poll_generation = getattr(self, "_poll_generation", 0)  # kept: a waiting long poll survives reset
        self._next_message_id: dict[int, int] = defaultdict(int)
        self._sent: dict[tuple[int, int], SentMessage] = {}
        self._sent_order: list[SentMessage] = []
        self._user_messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._callback_queries: dict[str, CallbackQuery] = {}
        self._next_callback = 0
        self._files: dict[str, StoredFile] = {}
        self._file_paths: dict[str, StoredFile] = {}
        self._commands: dict[str, list[dict[str, str]]] = {}
        self._webhook: dict[str, Any] | None = None
        self._webhook_generation = getattr(self, "_webhook_generation", 0) + 1
        self._webhook_error: tuple[int, str] | None = None
        self._global_window: deque[float] = deque()
        self._chat_windows: dict[int, deque[float]] = defaultdict(deque)
        self._group_windows: dict[int, deque[float]] = defaultdict(deque)
        self._faults: list[Fault] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.documents: list[SentDocument] = []
        self.chat_actions: list[tuple[int, str]] = []
        self.sends: list[SendRecord] = []
        self.throttled: list[Throttle] = []
        self.too_many_requests = 0
        self.too_many_requests_per_chat: dict[int, int] = defaultdict(int)
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.request_log: list[tuple[str, int]] = []
        self.errors: list[tuple[str, int, str]] = []  # (method, status, description) of every error answer
        self.requests: list[dict[str, Any]] = []

    def stop(self) -> None:
        with self._cond:
            self._webhook_generation += 1
            self._stopping.set()
            self._cond.notify_all()
        super().stop()

    def set_limits(
        self,
        *,
        global_rate: int | None | EllipsisType = ...,
        per_chat_rate: int | None | EllipsisType = ...,
        group_rate: int | None | EllipsisType = ...,
        burst_tolerance: int | None = None,
        enforce: bool | None = None,
    ) -> None:
        """Change flood control; arguments left out keep their value, ``None`` rates turn a limit off
        (paid broadcasts would be ``global_rate=1000``)."""
        with self._lock:
            if not isinstance(global_rate, EllipsisType):
                self.global_rate = global_rate
            if not isinstance(per_chat_rate, EllipsisType):
                self.per_chat_rate = per_chat_rate
            if not isinstance(group_rate, EllipsisType):
                self.group_rate = group_rate
            if burst_tolerance is not None:
                self.burst_tolerance = burst_tolerance
            if enforce is not None:
                self.enforce_limits = enforce

    def reset(self, *, keep_users: bool = False) -> None:
        """Forget everything that happened: updates, messages, answers, documents, counters, logs, faults,
        the webhook, commands, blocks, and (unless ``keep_users``) users and chats. The bot identity and
        the limit settings stay."""
        with self._cond:
            self._clear_state(keep_users=keep_users)
            self._cond.notify_all()

    def _log(self, method: str, status: int) -> None:
        self.request_log.append((method, status))  # list.append is atomic
        if self.verbose:
            print(f"{method} {status}", file=sys.stderr, flush=True)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run an API method in-process (no HTTP, no faults); raises :class:`TelegramError`."""
        known = self._methods.get(method.lower())
        if known is None:
            raise TelegramError(404, "Not Found")
        result = known[1](params, {})
        return json.loads(result) if isinstance(result, Serialized) else result

    def _enqueue(self, update: dict[str, Any]) -> dict[str, Any]:
        """Under the lock: give ``update`` an id and queue it (unless ``allowed_updates`` filters it)."""
        given = update.get("update_id")
        if isinstance(given, int) and not isinstance(given, bool):
            self._next_update_id = max(self._next_update_id, given + 1)
        else:
            update = {"update_id": self._next_update_id, **{k: v for k, v in update.items() if k != "update_id"}}
            self._next_update_id += 1
        kinds = [key for key in update if key != "update_id"]
        kind = kinds[0] if kinds else ""
        allowed = self._allowed_updates
        wanted = kind in allowed if allowed else kind not in DEFAULT_EXCLUDED_UPDATES
        if wanted:
            self._updates.append(update)
            self._cond.notify_all()
        return json.loads(json.dumps(update))

    @staticmethod
    def _commands_key(scope: Any, language_code: str | None) -> str:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True) + "|" + (language_code or "")

    # -- chats, messages, limits (called with the lock held unless noted) -------------------------

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name, "username": self.username}

    def _resolve_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise bad_request("chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            name = raw[1:].lower()
            with self._lock:
                for chat in self._chats.values():
                    if chat["type"] != "private" and str(chat.get("username", "")).lower() == name:
                        return chat
            raise bad_request("chat not found")
        try:
            chat_id = param_int(params, "chat_id")
        except TelegramError:
            raise bad_request("chat not found") from None
        with self._lock:
            found = self._chats.get(chat_id) if chat_id is not None else None
        if found is None:
            raise bad_request("chat not found")
        return found

    def _check_reachable(self, chat: dict[str, Any]) -> None:
        chat_id = chat["id"]
        if chat_id in self.deactivated:
            raise TelegramError(403, "Forbidden: user is deactivated")
        if chat_id in self.blocked:
            if chat["type"] == "private":
                raise TelegramError(403, "Forbidden: bot was blocked by the user")
            raise TelegramError(403, f"Forbidden: bot was kicked from the {chat['type']} chat")

    def _admit(self, method: str, chat: dict[str, Any], now: float) -> None:
        """Flood control for one send: raise 429 or count the send in the windows."""
        chat_id = chat["id"]
        windows: list[tuple[str, deque[float], int | None, float]] = [
            ("global", self._global_window, self.global_rate, 1.0),
            ("chat", self._chat_windows[chat_id], self.per_chat_rate, 1.0),
        ]
        if chat["type"] != "private":
            windows.append(("group", self._group_windows[chat_id], self.group_rate, GROUP_WINDOW))
        if self.enforce_limits:
            for scope, window, rate, span in windows:
                while window and window[0] <= now - span:
                    window.popleft()
                if rate is not None and len(window) >= rate + self.burst_tolerance:
                    retry_after = max(1, math.ceil(window[0] + span - now - 1e-9))
                    self.too_many_requests += 1
                    self.too_many_requests_per_chat[chat_id] += 1
                    self.throttled.append(Throttle(method, chat_id, scope, retry_after, now))
                    raise too_many(retry_after)
        for _scope, window, _rate, span in windows:
            while window and window[0] <= now - span:
                window.popleft()
            window.append(now)

    def _new_message_id(self, chat_id: int) -> int:
        self._next_message_id[chat_id] += 1
        return self._next_message_id[chat_id]

    def _sent_object(self, sent: SentMessage, *, copy: bool = True) -> dict[str, Any]:
        """The Message object of a sent message; ``copy=False`` when it is only serialized at once (the
        answer to a send: it shares the stored lists, so it must not be kept or changed)."""
        message: dict[str, Any] = {
            "message_id": sent.message_id,
            "from": self._bot_user(),
            "chat": dict(self._chats[sent.chat_id]),
            "date": sent.date,
        }
        if sent.edit_date is not None:
            message["edit_date"] = sent.edit_date
        if sent.reply_to_message_id is not None:
            replied = self._message_object(sent.chat_id, sent.reply_to_message_id, nested=False)
            if replied is not None:
                message["reply_to_message"] = replied
        if sent.document is not None:
            message["document"] = dict(sent.document)
            if sent.text:
                message["caption"] = sent.text
                if sent.entities:
                    message["caption_entities"] = [dict(e) for e in sent.entities]
        else:
            message["text"] = sent.text
            if sent.entities:
                message["entities"] = [dict(e) for e in sent.entities]
            if sent.link_preview_options:
                message["link_preview_options"] = sent.link_preview_options
        if sent.reply_markup and "inline_keyboard" in sent.reply_markup:
            message["reply_markup"] = {"inline_keyboard": sent.reply_markup["inline_keyboard"]}
        return json.loads(json.dumps(message)) if copy else message

    def _message_object(self, chat_id: int, message_id: int, *, nested: bool = True) -> dict[str, Any] | None:
        sent = self._sent.get((chat_id, message_id))
        if sent is not None and not sent.deleted:
            obj = self._sent_object(sent)
        elif (chat_id, message_id) in self._user_messages:
            obj = json.loads(json.dumps(self._user_messages[(chat_id, message_id)]))
        else:
            return None
        if not nested:
            obj.pop("reply_to_message", None)
        return obj

    def _formatted(
        self, params: dict[str, Any], text_key: str, entities_key: str, limit: int, *, caption: bool
    ) -> tuple[str, str, str | None, list[dict[str, Any]]]:
        """(plain text, raw text, parse mode, entities) of a text or caption, validated like Telegram."""
        raw = param_str(params, text_key) or ""
        parse_mode = param_str(params, "parse_mode") or None
        given = param_json(params, entities_key, f"can't parse {entities_key} JSON object")
        if given:
            if not isinstance(given, list) or not all(isinstance(e, dict) for e in given):
                raise bad_request(f"can't parse {entities_key} JSON object")
            plain, entities = raw, sorted_entities([e for e in given if isinstance(e.get("length"), int)])
        elif parse_mode:
            parser = PARSERS.get(parse_mode.lower())
            if parser is None:
                raise bad_request(f"unsupported parse_mode {parse_mode!r}")
            try:
                plain, entities = parser(raw)
            except EntityParseError as exc:
                raise bad_request(f"can't parse entities: {exc}") from None
        else:
            plain, entities = raw, []
        plain, entities = trim_text(plain, entities)
        if not plain and not caption:
            raise bad_request("message text is empty")
        if utf16_len(plain) > limit:
            raise bad_request("message caption is too long" if caption else "message is too long")
        return plain, raw, parse_mode, entities

    def _reply_to(self, params: dict[str, Any], chat_id: int) -> int | None:
        reply = param_json(params, "reply_parameters", "can't parse reply parameters JSON object")
        message_id = param_int(params, "reply_to_message_id")
        allow_missing = param_bool(params, "allow_sending_without_reply")
        if isinstance(reply, dict):
            message_id = param_int(reply, "message_id")
            allow_missing = allow_missing or param_bool(reply, "allow_sending_without_reply")
        if message_id is None:
            return None
        with self._lock:
            exists = self._message_object(chat_id, message_id) is not None
        if exists:
            return message_id
        if allow_missing:
            return None
        raise bad_request("message to be replied not found")

    def _record_send(
        self, method: str, chat: dict[str, Any], build: Callable[[int, int, float], SentMessage]
    ) -> SentMessage:
        """Check reachability and flood control, then create the message (all under the lock)."""
        with self._cond:
            self._check_reachable(chat)
            now = time.monotonic()
            self._admit(method, chat, now)
            message_id = self._new_message_id(chat["id"])
            sent = build(message_id, int(time.time()), now)
            self._sent[(chat["id"], message_id)] = sent
            self._sent_order.append(sent)
            self.sends.append(SendRecord(method, chat["id"], message_id, now))
            self._cond.notify_all()
            return sent
