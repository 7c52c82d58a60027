"""The HTTP side: the server class, its method table and request routing, the request handler, and the
command line (``python -m hnpal.sandbox.telegram_api``)."""

from __future__ import annotations

import argparse
import threading
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from hnpal.sandbox._server import SandboxHandler
from hnpal.sandbox.telegram_api.constants import DEFAULT_TOKEN, FILE_PATH, PATH
from hnpal.sandbox.telegram_api.params import parse_params
from hnpal.sandbox.telegram_api.records import Described, Reply, TelegramError, error_reply, json_reply, ok_reply
from hnpal.sandbox.telegram_api.state import Method
from hnpal.sandbox.telegram_api.updates import Updates


class TelegramServer(Updates):
    """The Telegram Bot API on a loopback port; see the module docstring.

    The socket is bound at construction, so ``base_url`` (``http://127.0.0.1:PORT/bot``, what
    ``telegram.Bot(token, base_url=...)`` takes) and ``base_file_url`` are known before :meth:`start`.
    Requests must use ``token``; the bot is ``bot_id`` (default: the number before the token's colon),
    ``username`` and ``first_name``.

    Flood control (``enforce_limits``): at most ``global_rate`` message sends per second across all chats
    and ``per_chat_rate`` per second in one chat, each allowed ``burst_tolerance`` extra; group chats also
    at most ``group_rate`` per minute. ``None`` turns one limit off. Sends are sendMessage, sendDocument,
    editMessageText and editMessageReplyMarkup; a window holds the accepted sends of the last second (or
    minute), and a send is refused with 429 when its window is already full. Webhook deliveries are tried
    ``webhook_attempts`` times, ``webhook_retry_delay`` seconds apart, each with ``webhook_timeout``.
    """

    _thread_name = "telegram-api"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        bot_id: int | None = None,
        username: str = "hnpal_sandbox_bot",
        first_name: str = "HN Pal (sandbox)",
        enforce_limits: bool = True,
        global_rate: int | None = 30,
        per_chat_rate: int | None = 1,
        group_rate: int | None = 20,
        burst_tolerance: int = 0,
        webhook_attempts: int = 4,
        webhook_retry_delay: float = 0.1,
        webhook_timeout: float = 5.0,
        first_update_id: int = 1,
        verbose: bool = False,
    ) -> None:
        prefix = token.split(":", 1)[0]
        self.token = token
        self.bot_id = bot_id if bot_id is not None else (int(prefix) if prefix.isdigit() else 123456)
        self.username = username
        self.first_name = first_name
        self.enforce_limits = enforce_limits
        self.global_rate = global_rate
        self.per_chat_rate = per_chat_rate
        self.group_rate = group_rate
        self.burst_tolerance = burst_tolerance
        self.webhook_attempts = webhook_attempts
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_timeout = webhook_timeout
        self.first_update_id = first_update_id
        self.verbose = verbose
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._methods: dict[str, tuple[str, Method]] = {
            name.lower(): (name, fn)
            for name, fn in (
                ("getMe", self._get_me),
                ("logOut", self._log_out),
                ("close", self._log_out),
                ("getUpdates", self._get_updates),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("sendMessage", self._send_message),
                ("editMessageText", self._edit_message_text),
                ("editMessageReplyMarkup", self._edit_message_reply_markup),
                ("deleteMessage", self._delete_message),
                ("answerCallbackQuery", self._answer_callback_query),
                ("sendDocument", self._send_document),
                ("getFile", self._get_file),
                ("sendChatAction", self._send_chat_action),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
                ("getChat", self._get_chat),
            )
        }
        self._clear_state(keep_users=False)
        self.root_url = self._bind(host, port, _Handler, "telegram")
        self.base_url = self.root_url + "/bot"
        self.base_file_url = self.root_url + "/file/bot"

    def respond(self, http_method: str, raw_path: str, headers: Any, body: bytes) -> tuple[str, Reply]:
        """The reply to one HTTP request, and the Bot API method name to log it under."""
        name, outcome = self._respond(http_method, raw_path, headers, body)
        if isinstance(outcome, TelegramError):
            with self._lock:
                self.errors.append((name, outcome.status, outcome.description))
            return name, error_reply(outcome)
        return name, outcome

    def _respond(self, http_method: str, raw_path: str, headers: Any, body: bytes) -> tuple[str, Reply | TelegramError]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        file_match = FILE_PATH.match(path)
        if file_match and http_method in ("GET", "HEAD"):
            return "file", self._download(file_match.group("token"), file_match.group("path"))
        match = PATH.match(path)
        if match is None:
            return path, TelegramError(404, "Not Found")
        name = match.group("method")
        if match.group("token") != self.token:
            return name, TelegramError(401, "Unauthorized")
        known = self._methods.get(name.lower())
        if known is None:
            return name, TelegramError(404, "Not Found")
        name, fn = known
        fault = self._take_fault(name)
        if fault is not None:
            reply = self._fault_reply(fault)
            if reply is not None:
                return name, reply
        try:
            params, files = parse_params(headers.get("Content-Type") or "", body, parts.query)
            with self._lock:
                self.requests.append({"method": name, "params": params, "at": time.monotonic()})
            result = fn(params, files)
        except TelegramError as error:
            return name, error
        if isinstance(result, Described):
            return name, json_reply(200, {"ok": True, "result": result.result, "description": result.description})
        return name, ok_reply(result)

    def _download(self, token: str, file_path: str) -> Reply:
        if token != self.token:
            return error_reply(TelegramError(401, "Unauthorized"))
        with self._lock:
            stored = self._file_paths.get(file_path)
        if stored is None:
            return error_reply(TelegramError(404, "Not Found"))
        return Reply(200, stored.data, stored.mime_type or "application/octet-stream")


class _Headers(dict):
    """Request headers by lower-case name (the first of repeated ones), read with ``get`` like the
    ``email.message.Message`` the base class builds."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100


class _Handler(SandboxHandler):
    server_version = "TelegramSandbox/1.0"
    raw_requestline: bytes  # set by the base class before parse_request

    def parse_request(self) -> bool:
        """A well-formed HTTP/1.x request line and its headers, read without the email parser the base
        class uses (a fifth of the CPU of a send); anything else goes to the base class."""
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return super().parse_request()
        self.requestline = line
        self.command, path, self.request_version = words
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(raw) > _MAX_HEADER_LINE:
                self.close_connection = True
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if colon:
                headers.setdefault(name.strip().lower(), value.strip())
        else:
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (words[2] == "HTTP/1.0" and connection != "keep-alive")
        if headers.get("expect", "").lower() == "100-continue" and words[2] == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _serve(self, method: str) -> None:
        telegram = self.server.telegram
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            return
        name, reply = telegram.respond(method, self.path, self.headers, body)
        if reply.drop is not None:
            self._drop(reply.drop)
            telegram._log(name, 0)
            return
        telegram._log(name, reply.status)
        self._reply(reply.status, reply.content_type, list(reply.headers), reply.body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hnpal.sandbox.telegram_api",
        description="Serve a local Telegram Bot API for python-telegram-bot (base_url = the printed URL).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the only bot token accepted")
    parser.add_argument("--username", default="hnpal_sandbox_bot", help="the bot's username")
    parser.add_argument("--global-rate", type=int, default=30, help="messages per second across all chats")
    parser.add_argument("--per-chat-rate", type=int, default=1, help="messages per second in one chat")
    parser.add_argument("--no-limits", action="store_true", help="turn flood control off")
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="ID[:NAME]",
        help="register a user (repeatable), e.g. --user 42:Ada",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print every request to stderr")
    args = parser.parse_args(argv)
    server = TelegramServer(
        host=args.host,
        port=args.port,
        token=args.token,
        username=args.username,
        enforce_limits=not args.no_limits,
        global_rate=args.global_rate,
        per_chat_rate=args.per_chat_rate,
        verbose=args.verbose,
    )
    for spec in args.user:
        user_id, _, name = spec.partition(":")
        server.add_user(int(user_id), first_name=name or "Test")
    return server.serve_cli(server.base_url)
