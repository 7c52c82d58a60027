"""The Bot API methods that send, edit, delete and answer: messages, callback answers, documents and
files, chat actions, bot commands and chats."""

from __future__ import annotations

import json
import mimetypes
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from hnpal.sandbox.telegram_api.constants import (
    CHAT_ACTIONS,
    COMMAND,
    MAX_CALLBACK_ANSWER_CHARS,
    MAX_CAPTION_UTF16,
    MAX_COMMANDS,
    MAX_TEXT_UTF16,
    MAX_UPLOAD_BYTES,
)
from hnpal.sandbox.telegram_api.params import param_bool, param_int, param_json, param_str, validate_reply_markup
from hnpal.sandbox.telegram_api.records import (
    CallbackAnswer,
    MessageEdit,
    SendRecord,
    SentDocument,
    SentMessage,
    Serialized,
    StoredFile,
    TelegramError,
    Upload,
    bad_request,
)
from hnpal.sandbox.telegram_api.users import UserSide


class BotMethods(UserSide):
    """sendMessage, editMessageText, sendDocument, getFile, setMyCommands, getChat and the rest."""

    def _get_me(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _log_out(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        return True

    def _send_message(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        plain, raw, parse_mode, entities = self._formatted(params, "text", "entities", MAX_TEXT_UTF16, caption=False)
        markup = validate_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_to(params, chat["id"])
        preview = param_json(params, "link_preview_options", "can't parse link preview options JSON object")

        def build(message_id: int, date: int, now: float) -> SentMessage:
            return SentMessage(
                message_id=message_id,
                chat_id=chat["id"],
                text=plain,
                raw_text=raw,
                parse_mode=parse_mode,
                entities=entities,
                reply_markup=markup,
                date=date,
                sent_at=now,
                reply_to_message_id=reply_to,
                link_preview_options=preview if isinstance(preview, dict) else None,
                disable_notification=param_bool(params, "disable_notification"),
            )

        sent = self._record_send("sendMessage", chat, build)
        with self._lock:
            return Serialized(json.dumps(self._sent_object(sent, copy=False), ensure_ascii=False))

    def _editable(self, params: dict[str, Any]) -> tuple[dict[str, Any], SentMessage]:
        if params.get("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self._resolve_chat(params)
        message_id = param_int(params, "message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        with self._lock:
            sent = self._sent.get((chat["id"], message_id))
            if sent is None or sent.deleted:
                if (chat["id"], message_id) in self._user_messages:
                    raise bad_request("message can't be edited")
                raise bad_request("message to edit not found")
        return chat, sent

    def _apply_edit(
        self,
        method: str,
        chat: dict[str, Any],
        sent: SentMessage,
        content: tuple[str, str, str | None, list[dict[str, Any]]],
        markup: dict[str, Any] | None,
    ) -> Any:
        plain, raw, parse_mode, entities = content
        with self._cond:
            if sent.deleted:
                raise bad_request("message to edit not found")
            if plain == sent.text and entities == sent.entities and markup == sent.reply_markup:
                raise bad_request(
                    "message is not modified: specified new message content and reply markup are exactly the same "
                    "as a current content and reply markup of the message"
                )
            self._check_reachable(chat)
            now = time.monotonic()
            self._admit(method, chat, now)
            date = int(time.time())
            sent.text, sent.raw_text, sent.parse_mode, sent.entities = plain, raw, parse_mode, entities
            sent.reply_markup = markup
            sent.edit_date = date
            sent.edits.append(MessageEdit(method, plain, raw, parse_mode, entities, markup, date, now))
            self.sends.append(SendRecord(method, chat["id"], sent.message_id, now))
            self._cond.notify_all()
            return self._sent_object(sent)

    def _edit_message_text(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat, sent = self._editable(params)
        if sent.document is not None:
            raise bad_request("there is no text in the message to edit")
        content = self._formatted(params, "text", "entities", MAX_TEXT_UTF16, caption=False)
        # like Telegram: an edit without reply_markup removes the inline keyboard
        markup = validate_reply_markup(params.get("reply_markup"))
        return self._apply_edit("editMessageText", chat, sent, content, markup)

    def _edit_message_reply_markup(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat, sent = self._editable(params)
        markup = validate_reply_markup(params.get("reply_markup"))
        with self._lock:
            content = (sent.text, sent.raw_text, sent.parse_mode, sent.entities)
        return self._apply_edit("editMessageReplyMarkup", chat, sent, content, markup)

    def _delete_message(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        message_id = param_int(params, "message_id")
        with self._cond:
            key = (chat["id"], message_id or 0)
            sent = self._sent.get(key)
            if sent is not None and not sent.deleted:
                sent.deleted = True
            elif key in self._user_messages:
                del self._user_messages[key]
            else:
                raise bad_request("message to delete not found")
            self._cond.notify_all()
        return True

    def _answer_callback_query(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        query_id = param_str(params, "callback_query_id") or ""
        text = param_str(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_CHARS:
            raise bad_request("MESSAGE_TOO_LONG")
        with self._cond:
            query = self._callback_queries.get(query_id)
            if query is None or query.answered:
                raise bad_request("query is too old and response timeout expired or query ID is invalid")
            query.answered = True
            self.callback_answers.append(
                CallbackAnswer(
                    callback_query_id=query_id,
                    user_id=query.user_id,
                    text=text,
                    show_alert=param_bool(params, "show_alert"),
                    url=param_str(params, "url"),
                    cache_time=param_int(params, "cache_time") or 0,
                    at=time.monotonic(),
                )
            )
            self._cond.notify_all()
        return True

    def _store_file(self, data: bytes, file_name: str | None, mime_type: str | None) -> StoredFile:
        with self._lock:
            number = len(self._files) + 1
            unique = f"AgAD{self.bot_id % 10_000:04d}{number:08d}"
            file_id = f"BQACAgIAAxkBAAI{self.bot_id % 10_000:04d}{number:08d}sandbox"
            suffix = (file_name or "").rsplit(".", 1)[-1] if file_name and "." in file_name else "bin"
            stored = StoredFile(file_id, unique, data, file_name, mime_type, f"documents/file_{number}.{suffix}")
            self._files[file_id] = stored
            self._file_paths[stored.file_path] = stored
            return stored

    def _document_input(self, params: dict[str, Any], files: dict[str, Upload]) -> StoredFile:
        value = params.get("document")
        upload = files.get("document")
        if isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value[len("attach://") :])
        if upload is not None:
            if not upload.data:
                raise bad_request("file must be non-empty")
            if len(upload.data) > MAX_UPLOAD_BYTES:
                raise TelegramError(413, "Request Entity Too Large")
            mime = upload.content_type
            if not mime or mime == "application/octet-stream":
                mime = mimetypes.guess_type(upload.filename or "")[0] or mime
            return self._store_file(upload.data, upload.filename, mime)
        if not isinstance(value, str) or not value:
            raise bad_request("there is no document in the request")
        with self._lock:
            known = self._files.get(value)
        if known is not None:
            return known
        if urlsplit(value).scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(value, timeout=10) as response:
                    data = response.read(MAX_UPLOAD_BYTES + 1)
                    mime = response.headers.get_content_type()
            except (OSError, ValueError):
                raise bad_request("failed to get HTTP URL content") from None
            if not data or len(data) > MAX_UPLOAD_BYTES:
                raise bad_request("failed to get HTTP URL content")
            name = urlsplit(value).path.rsplit("/", 1)[-1] or "file"
            return self._store_file(data, name, mime)
        raise bad_request("wrong file identifier/HTTP URL specified")

    def _send_document(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        stored = self._document_input(params, files)
        plain, raw, parse_mode, entities = self._formatted(
            params, "caption", "caption_entities", MAX_CAPTION_UTF16, caption=True
        )
        markup = validate_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_to(params, chat["id"])
        document: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if stored.file_name:
            document["file_name"] = stored.file_name
        if stored.mime_type:
            document["mime_type"] = stored.mime_type
        document["file_size"] = len(stored.data)

        def build(message_id: int, date: int, now: float) -> SentMessage:
            return SentMessage(
                message_id=message_id,
                chat_id=chat["id"],
                text=plain,
                raw_text=raw,
                parse_mode=parse_mode,
                entities=entities,
                reply_markup=markup,
                date=date,
                sent_at=now,
                method="sendDocument",
                document=document,
                reply_to_message_id=reply_to,
                disable_notification=param_bool(params, "disable_notification"),
            )

        sent = self._record_send("sendDocument", chat, build)
        with self._lock:
            self.documents.append(
                SentDocument(
                    chat["id"],
                    sent.message_id,
                    stored.file_id,
                    stored.file_unique_id,
                    stored.file_name,
                    stored.mime_type,
                    stored.data,
                    plain,
                    sent.sent_at,
                )
            )
            return self._sent_object(sent)

    def _get_file(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        file_id = param_str(params, "file_id") or ""
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    def _send_chat_action(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        action = param_str(params, "action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        with self._lock:
            self._check_reachable(chat)
            self.chat_actions.append((chat["id"], action))
        return True

    def _set_my_commands(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        commands = param_json(params, "commands", "can't parse commands JSON object")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > MAX_COMMANDS:
            raise bad_request("too many commands specified")
        clean = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand JSON object")
            name = command.get("command")
            description = command.get("description")
            if not isinstance(name, str) or not COMMAND.match(name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            clean.append({"command": name, "description": description})
        scope = param_json(params, "scope", "can't parse BotCommandScope JSON object")
        with self._lock:
            self._commands[self._commands_key(scope, param_str(params, "language_code"))] = clean
        return True

    def _get_my_commands(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        scope = param_json(params, "scope", "can't parse BotCommandScope JSON object")
        with self._lock:
            return list(self._commands.get(self._commands_key(scope, param_str(params, "language_code")), []))

    def _delete_my_commands(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        scope = param_json(params, "scope", "can't parse BotCommandScope JSON object")
        with self._lock:
            self._commands.pop(self._commands_key(scope, param_str(params, "language_code")), None)
        return True

    def _get_chat(self, params: dict[str, Any], files: dict[str, Upload]) -> Any:
        chat = self._resolve_chat(params)
        with self._lock:
            full = {
                **chat,
                "accent_color_id": chat["id"] % 7,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": True,
                    "limited_gifts": True,
                    "unique_gifts": True,
                    "premium_subscription": True,
                    "gifts_from_channels": True,
                },
            }
        return full
