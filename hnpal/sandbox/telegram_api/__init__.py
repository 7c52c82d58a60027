"""A local stand-in for the Telegram Bot API.

One loopback HTTP server answers like https://api.telegram.org/bot<token>/<method> for the calls HN Pal
makes, so the real python-telegram-bot client can drive it (``Bot(token, base_url=server.base_url)``):

* getMe, getUpdates (offsets, long polling, ``allowed_updates``), setWebhook / deleteWebhook /
  getWebhookInfo (updates are POSTed to the webhook from a background thread, with the secret token
  header and a few retries), sendMessage, editMessageText, editMessageReplyMarkup, deleteMessage,
  answerCallbackQuery, sendDocument (multipart uploads, file ids) / getFile and the file download URL,
  sendChatAction, setMyCommands / getMyCommands / deleteMyCommands, getChat;
* the real response shapes ``{"ok": true, "result": ...}`` and ``{"ok": false, "error_code": N,
  "description": "...", "parameters": {...}}`` and the real error descriptions ("Bad Request: chat not
  found", "Forbidden: bot was blocked by the user", "Too Many Requests: retry after N", ...);
* HTML, MarkdownV2 and legacy Markdown parsing into plain text plus ``entities`` (offsets and lengths in
  UTF-16 code units), with "can't parse entities" errors; the 4096-character message limit counted in
  UTF-16 units after parsing; inline keyboard validation (``callback_data`` 1-64 bytes, ...);
* flood control: a global messages-per-second limit and a per-chat one (sliding one-second windows;
  groups also get Telegram's 20 messages per minute), answered with 429 and ``retry_after``.

The "user side" is scripted: :meth:`TelegramServer.send_user_message`, :meth:`~TelegramServer.press_button`,
:meth:`~TelegramServer.edit_user_message` and :meth:`~TelegramServer.inject_update` queue updates;
:meth:`~TelegramServer.messages` and friends show what the bot sent. Any method can be made to misbehave
(5xx, 429, slow answers, dropped connections) with :meth:`~TelegramServer.set_fault`.

Deliberate differences from the real service: webhooks may use plain ``http://`` URLs on any port; a
bare ``&`` that is not an HTML entity is an error in HTML mode (Telegram lets some through; the bot
should escape); updates are delivered to a webhook one at a time, and dropped after the retries fail.

In-process::

    with TelegramServer() as tg:
        tg.add_user(42, first_name="Ada")
        bot = telegram.Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)

Command line::

    python -m hnpal.sandbox.telegram_api [--port 8081] [--host 127.0.0.1] [--token T] [--no-limits]

The package, by concern: :mod:`.entities` (text parsing), :mod:`.records` (what is recorded, the reply
shapes), :mod:`.params` (request parsing), :mod:`.constants`; the server class is built in layers, each a
subclass of the one before: :mod:`.state` (users, chats, messages, limits, under one lock), :mod:`.faults`,
:mod:`.users` (the scripted user side), :mod:`.methods` (the sending Bot API methods), :mod:`.updates`
(getUpdates and webhooks) and :mod:`.server` (routing, HTTP, the command line).
"""

from __future__ import annotations

from hnpal.sandbox.telegram_api.constants import (
    BUTTON_ACTIONS,
    CHAT_ACTIONS,
    DEFAULT_EXCLUDED_UPDATES,
    DEFAULT_TOKEN,
    FAULT_KINDS,
    GROUP_WINDOW,
    JSON_UTF8,
    MAX_BUTTONS,
    MAX_CALLBACK_ANSWER_CHARS,
    MAX_CALLBACK_DATA_BYTES,
    MAX_CAPTION_UTF16,
    MAX_COMMANDS,
    MAX_TEXT_UTF16,
    MAX_UPLOAD_BYTES,
)
from hnpal.sandbox.telegram_api.entities import (
    MARKDOWN_V2_RESERVED,
    EntityParseError,
    detect_entities,
    parse_html,
    parse_markdown,
    parse_markdown_v2,
    trim_text,
    utf16_len,
)
from hnpal.sandbox.telegram_api.params import parse_params, validate_reply_markup
from hnpal.sandbox.telegram_api.records import (
    CallbackAnswer,
    Fault,
    MessageEdit,
    Reply,
    SendRecord,
    SentDocument,
    SentMessage,
    TelegramError,
    Throttle,
    Upload,
    WebhookDelivery,
)
from hnpal.sandbox.telegram_api.server import TelegramServer, main

__all__ = [
    "BUTTON_ACTIONS",
    "CHAT_ACTIONS",
    "CallbackAnswer",
    "DEFAULT_EXCLUDED_UPDATES",
    "DEFAULT_TOKEN",
    "EntityParseError",
    "FAULT_KINDS",
    "Fault",
    "GROUP_WINDOW",
    "JSON_UTF8",
    "MARKDOWN_V2_RESERVED",
    "MAX_BUTTONS",
    "MAX_CALLBACK_ANSWER_CHARS",
    "MAX_CALLBACK_DATA_BYTES",
    "MAX_CAPTION_UTF16",
    "MAX_COMMANDS",
    "MAX_TEXT_UTF16",
    "MAX_UPLOAD_BYTES",
    "MessageEdit",
    "Reply",
    "SendRecord",
    "SentDocument",
    "SentMessage",
    "TelegramError",
    "TelegramServer",
    "Throttle",
    "Upload",
    "WebhookDelivery",
    "detect_entities",
    "main",
    "parse_html",
    "parse_markdown",
    "parse_markdown_v2",
    "parse_params",
    "trim_text",
    "utf16_len",
    "validate_reply_markup",
]
