"""The Bot API's limits and vocabularies as the sandbox enforces them, and the request paths."""

from __future__ import annotations

import re

DEFAULT_TOKEN = "123456:sandbox-token"


FAULT_KINDS = ("error_500", "bad_gateway", "bad_request", "too_many_requests", "timeout", "drop")


JSON_UTF8 = "application/json"


MAX_TEXT_UTF16 = 4096


MAX_CAPTION_UTF16 = 1024


MAX_CALLBACK_DATA_BYTES = 64


MAX_CALLBACK_ANSWER_CHARS = 200


MAX_BUTTONS = 100


MAX_UPLOAD_BYTES = 50 * 1024 * 1024


MAX_COMMANDS = 100


GROUP_WINDOW = 60.0


CHAT_ACTIONS = (
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
)


BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


# update types Telegram does not send unless asked for by name in allowed_updates
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


PATH = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[^/]*)$")


FILE_PATH = re.compile(r"^/file/bot(?P<token>[^/]*)/(?P<path>.+)$")


COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")


SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


URL_IN_TEXT = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]}]", re.I)


HTML_SPECIAL = re.compile(r"[<&]")


BOT_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,64})?")
