"""A small synchronous Telegram Bot API client for Celery tasks.

python-telegram-bot is async-only; Celery tasks run in threads, so they send through this thin client
instead: one pooled, keep-alive :class:`httpx.Client` per process for each (base URL, token), shared by
every thread. Each call is one POST to ``{base_url}{token}/{method}`` (``base_url`` ends with ``/bot``,
as in python-telegram-bot) and either returns the ``result`` or raises one precise error:

* :class:`BadRequest` (400, permanent): message too long, can't parse entities, chat not found, message
  is not modified (see :func:`is_not_modified`);
* :class:`Forbidden` (403, permanent): the bot was blocked, the user deleted their account, the bot was
  kicked from a group; the caller marks the user;
* :class:`RetryAfter` (429, transient): wait ``retry_after`` seconds (``parameters.retry_after``, else
  the ``Retry-After`` header);
* :class:`NetworkError` (transient): the connection failed or dropped, a timeout, a 5xx, or an answer
  that is not the Bot API's JSON;
* :class:`TelegramError` itself (permanent): anything else, e.g. 401 (bad token), 404, 409.

The client never retries: a send whose answer was lost may have been delivered, so the caller decides
(only a connection that could not be opened at all, so nothing was sent, is tried once more by the
transport). The token never appears in an exception, and the HTTP libraries' request log lines are filtered to mask it.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import urllib3

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)

MASK = "<token>"
_POOL_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30.0)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class TelegramError(Exception):
    """A failed Bot API call. ``status`` is the HTTP status (``None`` when there was no answer)."""

    _transient = False

    def __init__(
        self,
        method: str,
        description: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.parameters = parameters or {}
        shown = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{method}: {description} ({shown})")

    @property
    def transient(self) -> bool:
        """True when the same call may succeed later (429, network trouble, 5xx)."""
        return self._transient


class BadRequest(TelegramError):
    """400: the request itself is wrong; sending it again fails again."""


class Forbidden(TelegramError):
    """403: the bot may not write to this chat (blocked, deactivated, kicked)."""


class RetryAfter(TelegramError):
    """429 flood control: nothing may be sent for ``retry_after`` seconds."""

    _transient = True
    retry_after: float


class NetworkError(TelegramError):
    """No usable answer: connection error, timeout, 5xx or a malformed body."""

    _transient = True


def is_not_modified(exc: BaseException) -> bool:
    """True for the harmless "message is not modified" answer to an edit that changes nothing."""
    return isinstance(exc, BadRequest) and "message is not modified" in exc.description.lower()


# --------------------------------------------------------------------------------------------
# Token masking and the shared connection pools
# --------------------------------------------------------------------------------------------


def _token_forms(token: str) -> tuple[str, ...]:
    forms = {token, token.replace(":", "%3A"), token.replace(":", "%3a")}
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def _mask(text: str, token: str) -> str:
    for form in _token_forms(token):
        text = text.replace(form, MASK)
    return text


class _TokenFilter(logging.Filter):
    """Masks every registered token in records of the ``httpx`` logger (it logs each request URL)."""

    def __init__(self) -> None:
        super().__init__("")
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        tokens = self.tokens
        if tokens:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is not ours to fix
                return True
            masked = message
            for token in tokens:
                masked = _mask(masked, token)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


_token_filter = _TokenFilter()
logging.getLogger("httpx").addFilter(_token_filter)
logging.getLogger("urllib3.connectionpool").addFilter(_token_filter)
log.addFilter(_token_filter)

_pools: dict[tuple[str, str], httpx.Client] = {}
_apis: dict[tuple[str, str, float], BotAPI] = {}
_lock = threading.Lock()


def _pooled_client(base_url: str, token: str) -> httpx.Client:
    """The process's keep-alive client for (base_url, token)."""
    with _lock:
        client = _pools.get((base_url, token))
        if client is None or client.is_closed:
            client = httpx.Client(
                limits=_POOL_LIMITS,
                transport=httpx.HTTPTransport(limits=_POOL_LIMITS, retries=1),  # retries connect failures only
                headers={"User-Agent": "HNPal", "Accept": "application/json"},
                follow_redirects=False,
            )
            _pools[(base_url, token)] = client
        return client


def close_clients() -> None:
    """Close every pooled connection of this process (worker shutdown, tests)."""
    with _lock:
        clients = list(_pools.values())
        _pools.clear()
        _apis.clear()
    for client in clients:
        client.close()


def _forget_after_fork() -> None:
    # A forked child (Celery prefork) must not share the parent's sockets: drop the references
    # without closing them (closing would not touch the parent's copies, but there is no need).
    global _lock
    _lock = threading.Lock()
    _pools.clear()
    _apis.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


def _retry_after_header(response: httpx.Response | _Answer) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class BotAPI:
    """Synchronous Bot API calls over a shared connection pool; safe to use from many threads."""

    def __init__(self, *, token: str, base_url: str, timeout: float = 15.0) -> None:
        if not token:
            raise ValueError("a bot token is required")
        from config.settings import bot_api_base

        base_url = bot_api_base(base_url)
        self._token = token
        self.base_url = base_url
        self.timeout = timeout
        self._client: httpx.Client | None = None  # uploads only; created on first use
        _token_filter.tokens.add(token)

    @property
    def _http(self) -> httpx.Client:
        """The process's pooled httpx client, for uploads. Created on first use: JSON calls (all that a
        sender makes) go over ``http.client`` and never need it, and creating it costs a sender process
        tens of milliseconds of imports and TLS setup."""
        client = self._client
        if client is None or client.is_closed:
            client = self._client = _pooled_client(self.base_url, self._token)
        return client

    def __repr__(self) -> str:
        return f"BotAPI(base_url={self.base_url!r}, token={MASK!r})"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> BotAPI:
        """The process's client for the configured bot (HNPAL_TELEGRAM_TOKEN, _BASE_URL, _TIMEOUT)."""
        if settings is None:
            from config.settings import get_settings

            settings = get_settings()
        if settings.telegram_token is None or not settings.telegram_token.get_secret_value():
            raise RuntimeError("HNPAL_TELEGRAM_TOKEN is not set: the bot token from @BotFather is needed to send")
        token = settings.telegram_token.get_secret_value()
        base_url = str(settings.telegram_base_url)
        key = (token, base_url, float(settings.telegram_timeout))
        with _lock:
            api = _apis.get(key)
        if api is None or (api._client is not None and api._client.is_closed):
            api = cls(token=token, base_url=base_url, timeout=settings.telegram_timeout)
            with _lock:
                api = _apis.setdefault(key, api)
        return api

    # --- transport -------------------------------------------------------------------------------

    def _url(self, method: str) -> str:
        return f"{self.base_url}{self._token}/{method}"

    def _post_json(self, method: str, payload: dict[str, Any]) -> Any:
        """The common case, on a keep-alive ``http.client`` connection of this thread (about 0.2 ms less
        CPU per call than urllib3's pool and 0.5 ms less than httpx, which counts at paid-broadcast
        rates); uploads go through :meth:`_post`. Only a connection that could not be opened is tried
        again (nothing was sent); a kept-alive connection the server closed is replaced before use."""
        return self._post_body(method, json.dumps(payload).encode())

    def _post_body(self, method: str, body: bytes) -> Any:
        conn, path = _json_connection(self.base_url, self.timeout)
        try:
            if conn.sock is None:
                try:
                    conn.connect()
                except OSError:
                    conn.close()
                    conn.connect()  # once more: nothing was sent
            conn.request("POST", path + self._token + "/" + method, body=body, headers=_JSON_HEADERS)
            response = conn.getresponse()
            answer = _Answer(response.status, response.headers, response.read())
        except TimeoutError as exc:
            conn.close()
            raise NetworkError(method, _mask(f"timed out ({type(exc).__name__})", self._token)) from None
        except (http.client.HTTPException, OSError) as exc:  # refused, dropped, reset, a broken answer
            conn.close()
            detail = _mask(str(exc) or type(exc).__name__, self._token)
            raise NetworkError(method, f"{type(exc).__name__}: {detail}") from None
        if response.will_close:
            conn.close()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HTTP POST %s%s/%s %s", self.base_url, MASK, method, answer.status_code)
        return self._result(method, answer)

    def _post(self, method: str, **kwargs: Any) -> Any:
        try:
            response = self._http.post(self._url(method), timeout=self.timeout, **kwargs)
        except httpx.TimeoutException as exc:
            raise NetworkError(method, _mask(f"timed out ({type(exc).__name__})", self._token)) from None
        except httpx.InvalidURL:  # its message would show the URL, token included
            raise TelegramError(method, "invalid Bot API URL (check HNPAL_TELEGRAM_BASE_URL)") from None
        except httpx.HTTPError as exc:  # connect errors, dropped connections, protocol errors
            detail = _mask(str(exc) or type(exc).__name__, self._token)
            raise NetworkError(method, f"{type(exc).__name__}: {detail}") from None
        return self._result(method, response)

    def _result(self, method: str, response: httpx.Response | _Answer) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or "ok" not in body:
            description = f"unexpected answer ({response.headers.get('content-type', 'no content type')})"
            if status == 429:
                raise RetryAfter(method, "Too Many Requests", status=status, retry_after=_retry_after(None, response))
            if 400 <= status < 500:
                raise TelegramError(method, _mask(description, self._token), status=status)
            raise NetworkError(method, description, status=status, retry_after=_retry_after_header(response))
        if body.get("ok") is True:
            return body.get("result")
        code = body.get("error_code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else status
        description = _mask(str(body.get("description") or f"error {code}"), self._token)
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        kwargs: dict[str, Any] = {"status": code, "parameters": parameters}
        log.debug("telegram %s failed: %s %s", method, code, description)
        if code == 429:
            raise RetryAfter(method, description, retry_after=_retry_after(parameters, response), **kwargs)
        if code == 400:
            raise BadRequest(method, description, **kwargs)
        if code == 403:
            raise Forbidden(method, description, **kwargs)
        if code >= 500 or status >= 500:
            raise NetworkError(method, description, retry_after=_retry_after_header(response), **kwargs)
        raise TelegramError(method, description, **kwargs)

    # --- API -------------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """POST ``params`` as JSON (``None`` values left out; dicts such as reply_markup go as JSON
        objects) and return the ``result``; raises the errors in the module docstring."""
        payload = {key: value for key, value in (params or {}).items() if value is not None}
        return self._post_json(method, payload)

    def get_me(self) -> dict[str, Any]:
        return self.call("getMe", {})

    def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        parse_mode: str | None = "HTML",
        reply_markup: dict[str, Any] | None = None,
        disable_web_page_preview: bool = True,
    ) -> dict[str, Any]:
        """Send ``text``; returns the Message (``message_id``, ``chat``, ``date``, ``text``, ...)."""
        return self.prepare_send_message(
            chat_id, text, parse_mode=parse_mode, reply_markup=reply_markup,
            disable_web_page_preview=disable_web_page_preview,
        )()  # fmt: skip

    def prepare_send_message(
        self,
        chat_id: int,
        text: str,
        *,
        parse_mode: str | None = "HTML",
        reply_markup: dict[str, Any] | None = None,
        disable_web_page_preview: bool = True,
    ) -> Callable[[], dict[str, Any]]:
        """:meth:`send_message` with its request encoded now and sent when the returned function is
        called (what a paced sender does after its slot: as little as possible between the two)."""
        params = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": parse_mode,
            "reply_markup": reply_markup,
            "link_preview_options": {"is_disabled": True} if disable_web_page_preview else None,
        }
        body = json.dumps({key: value for key, value in params.items() if value is not None}).encode()
        return lambda: self._post_body("sendMessage", body)

    def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        parse_mode: str | None = "HTML",
        reply_markup: dict[str, Any] | None = None,
        disable_web_page_preview: bool = True,
    ) -> dict[str, Any]:
        """Replace a message's text (and keyboard: without ``reply_markup`` the keyboard goes, like
        Telegram). An identical edit raises BadRequest that :func:`is_not_modified` recognises."""
        return self.call(
            "editMessageText",
            {
                "chat_id": chat_id,
                "message_id": message_id,
                "text": text,
                "parse_mode": parse_mode,
                "reply_markup": reply_markup,
                "link_preview_options": {"is_disabled": True} if disable_web_page_preview else None,
            },
        )

    def edit_message_reply_markup(
        self, chat_id: int, message_id: int, reply_markup: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Replace a message's inline keyboard (``None`` removes it)."""
        return self.call(
            "editMessageReplyMarkup", {"chat_id": chat_id, "message_id": message_id, "reply_markup": reply_markup}
        )

    def answer_callback_query(self, callback_query_id: str, text: str | None = None, show_alert: bool = False) -> bool:
        return bool(
            self.call(
                "answerCallbackQuery",
                {"callback_query_id": callback_query_id, "text": text, "show_alert": show_alert or None},
            )
        )

    def send_document(
        self,
        chat_id: int,
        filename: str,
        data: bytes,
        caption: str | None = None,
        *,
        parse_mode: str | None = None,
        mime_type: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``data`` as a file named ``filename`` (multipart); returns the Message."""
        fields: dict[str, str] = {"chat_id": str(chat_id)}
        if caption is not None:
            fields["caption"] = caption
        if parse_mode is not None:
            fields["parse_mode"] = parse_mode
        files = {"document": (filename, data, mime_type or "application/octet-stream")}
        return self._post("sendDocument", data=fields, files=files)


class _Answer:
    """The parts of an ``http.client`` response that :meth:`BotAPI._result` reads, shaped like httpx's."""

    __slots__ = ("_data", "headers", "status_code")

    def __init__(self, status: int, headers: Any, data: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self._data = data

    def json(self) -> Any:
        return json.loads(self._data)


_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "HNPal"}
_local = threading.local()


def _json_connection(base_url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """This thread's keep-alive connection to ``base_url``'s host (a forked child opens its own), and the
    path prefix of the Bot API methods. A kept-alive connection the server has closed meanwhile (it is
    readable: end of file) is dropped first, so a request never goes out on a dead socket."""
    pid = os.getpid()
    if getattr(_local, "pid", None) != pid:
        _local.pid, _local.conns = pid, {}
    key = (base_url, timeout)
    entry = _local.conns.get(key)
    if entry is None:
        parts = urllib3.util.parse_url(base_url)
        if parts.scheme not in ("http", "https") or not parts.host:
            raise TelegramError("call", "invalid Bot API URL (check HNPAL_TELEGRAM_BASE_URL)")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.host, parts.port, timeout=timeout)
        entry = _local.conns[key] = (conn, parts.path or "/")
    conn = entry[0]
    if conn.sock is not None and urllib3.util.wait_for_read(conn.sock, timeout=0.0):
        conn.close()
    return entry


def _retry_after(parameters: dict[str, Any] | None, response: httpx.Response | _Answer) -> float:
    seconds = _number((parameters or {}).get("retry_after"))
    if seconds is None:
        seconds = _retry_after_header(response)
    return max(seconds, 0.0) if seconds is not None else 1.0


__all__ = [
    "BadRequest",
    "BotAPI",
    "Forbidden",
    "NetworkError",
    "RetryAfter",
    "TelegramError",
    "close_clients",
    "is_not_modified",
]
