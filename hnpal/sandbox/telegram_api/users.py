"""The user side, scripted by tests, benches and the demo: users and groups, what they send, edit and press
(queued as updates), and what the bot sent them (with waits)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from hnpal.sandbox.telegram_api.entities import detect_entities
from hnpal.sandbox.telegram_api.faults import Faults
from hnpal.sandbox.telegram_api.records import CallbackQuery, SentMessage


class UserSide(Faults):
    """Users' actions and what the bot did, for the code that drives the sandbox."""

    def add_user(
        self,
        user_id: int,
        first_name: str = "Test",
        username: str | None = None,
        language_code: str | None = "en",
        *,
        last_name: str | None = None,
        is_premium: bool | None = None,
    ) -> dict[str, Any]:
        """Register a user and their private chat with the bot (as if they had pressed Start); returns
        the ``User`` object. Registering again updates the profile."""
        if user_id <= 0:
            raise ValueError("user ids are positive")
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        for key, value in (
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
            ("is_premium", is_premium),
        ):
            if value is not None:
                user[key] = value
        chat = {"id": user_id, "type": "private", "first_name": first_name}
        if last_name:
            chat["last_name"] = last_name
        if username:
            chat["username"] = username
        with self._lock:
            self._users[user_id] = user
            self._chats[user_id] = chat
        return dict(user)

    def add_group(self, chat_id: int, title: str = "Test group", *, chat_type: str = "group") -> dict[str, Any]:
        """Register a group or supergroup (negative ``chat_id``) the bot is a member of."""
        if chat_id >= 0:
            raise ValueError("group chat ids are negative")
        if chat_type not in ("group", "supergroup"):
            raise ValueError("chat_type must be 'group' or 'supergroup'")
        chat = {"id": chat_id, "type": chat_type, "title": title}
        with self._lock:
            self._chats[chat_id] = chat
        return dict(chat)

    def block(self, user_id: int) -> None:
        """The user blocks the bot (for a group id: the bot is kicked); sends answer 403."""
        with self._lock:
            self.blocked.add(user_id)

    def unblock(self, user_id: int) -> None:
        with self._lock:
            self.blocked.discard(user_id)

    def deactivate(self, user_id: int) -> None:
        """The user deletes their account; sends answer 403 "user is deactivated"."""
        with self._lock:
            self.deactivated.add(user_id)

    def _user_for(self, user_id: int) -> dict[str, Any]:
        user = self._users.get(user_id)
        if user is None:
            self.add_user(user_id)
            user = self._users[user_id]
        if user_id in self.deactivated:
            raise ValueError(f"user {user_id} is deactivated and can't act")
        return user

    def _chat_for(self, user_id: int, chat_type: str, chat_id: int | None) -> dict[str, Any]:
        if chat_type == "private":
            if chat_id is not None and chat_id != user_id:
                raise ValueError("a private chat's id is the user's id")
            return self._chats[user_id]
        if chat_id is None or chat_id >= 0:
            raise ValueError("group chats need a negative chat_id")
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self.add_group(chat_id, chat_type=chat_type)
        return chat

    def send_user_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        chat_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """The user writes ``text`` to the bot (or in a group, ``chat_type="group"``/``"supergroup"``
        with a negative ``chat_id``); queues a ``message`` update and returns it. Entities default to
        what Telegram detects (a leading ``/command``, URLs). Writing to the bot unblocks it."""
        with self._cond:
            user = self._user_for(user_id)
            chat = self._chat_for(user_id, chat_type, chat_id)
            if chat["type"] == "private":
                self.blocked.discard(user_id)
            message_id = self._new_message_id(chat["id"])
            message: dict[str, Any] = {
                "message_id": message_id,
                "from": dict(user),
                "chat": dict(chat),
                "date": int(time.time()),
                "text": text,
            }
            found = detect_entities(text) if entities is None else entities
            if found:
                message["entities"] = found
            if reply_to_message_id is not None:
                replied = self._message_object(chat["id"], reply_to_message_id)
                if replied is not None:
                    message["reply_to_message"] = replied
            self._user_messages[(chat["id"], message_id)] = message
            return self._enqueue({"message": message})

    def edit_user_message(
        self, user_id: int, message_id: int, text: str, *, chat_id: int | None = None
    ) -> dict[str, Any]:
        """The user edits a message they sent; queues an ``edited_message`` update and returns it."""
        with self._cond:
            key = (user_id if chat_id is None else chat_id, message_id)
            original = self._user_messages.get(key)
            if original is None or original["from"]["id"] != user_id:
                raise ValueError(f"user {user_id} sent no message {message_id} in chat {key[0]}")
            original["text"] = text
            original["edit_date"] = int(time.time())
            found = detect_entities(text)
            if found:
                original["entities"] = found
            else:
                original.pop("entities", None)
            return self._enqueue({"edited_message": json.loads(json.dumps(original))})

    def press_button(
        self, user_id: int, message_id: int, callback_data: str, *, chat_id: int | None = None, check: bool = True
    ) -> dict[str, Any]:
        """The user presses an inline button of bot message ``message_id``; queues a ``callback_query``
        update (with the message as it is now) and returns it. With ``check`` the message must exist
        and carry a button with this ``callback_data``."""
        with self._cond:
            user = self._user_for(user_id)
            target_chat = user_id if chat_id is None else chat_id
            sent = self._sent.get((target_chat, message_id))
            if check:
                if sent is None or sent.deleted:
                    raise ValueError(f"no bot message {message_id} in chat {target_chat}")
                if callback_data not in sent.callback_data():
                    raise ValueError(
                        f"message {message_id} has no button with callback_data {callback_data!r} "
                        f"(has {sent.callback_data()})"
                    )
            self._next_callback += 1
            query_id = str(4_000_000_000_000_000 + self.bot_id % 1000 * 1_000_000 + self._next_callback)
            query: dict[str, Any] = {
                "id": query_id,
                "from": dict(user),
                "chat_instance": str((target_chat * 7_919_131 + self.bot_id) % 10**19),
                "data": callback_data,
            }
            if sent is not None and not sent.deleted:
                query["message"] = self._sent_object(sent)
            self._callback_queries[query_id] = CallbackQuery(query_id, user_id, time.monotonic())
            return self._enqueue({"callback_query": query})

    def inject_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue any update as given (hostile or malformed ones included); ``update_id`` is assigned when
        absent, and a given one moves the counter past it. Like every update it is subject to
        ``allowed_updates`` (by default Telegram leaves out chat_member and message reactions)."""
        with self._cond:
            return self._enqueue(json.loads(json.dumps(update)))

    # -- what the bot did ----------------------------------------------------------------------

    def messages(self, chat_id: int, *, include_deleted: bool = True) -> list[SentMessage]:
        """The bot's messages in ``chat_id``, oldest first (edits show in their current state)."""
        with self._lock:
            return [m for m in self._sent_order if m.chat_id == chat_id and (include_deleted or not m.deleted)]

    def all_messages(self) -> list[SentMessage]:
        with self._lock:
            return list(self._sent_order)

    def message(self, chat_id: int, message_id: int) -> SentMessage | None:
        with self._lock:
            return self._sent.get((chat_id, message_id))

    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed (getUpdates) or delivered (webhook)."""
        with self._lock:
            return len(self._updates)

    def user(self, user_id: int) -> dict[str, Any] | None:
        with self._lock:
            user = self._users.get(user_id)
            return dict(user) if user else None

    def commands(self, scope: dict[str, Any] | None = None, language_code: str = "") -> list[dict[str, str]]:
        with self._lock:
            return list(self._commands.get(self._commands_key(scope, language_code), []))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "a condition") -> None:
        """Block until ``predicate()`` (called under the lock) is true; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waited {timeout}s for {what}")
                self._cond.wait(min(left, 0.1))

    def wait_for_messages(self, chat_id: int, count: int = 1, timeout: float = 5.0) -> list[SentMessage]:
        """Block until the bot has sent at least ``count`` messages to ``chat_id``; returns them all."""
        try:
            self.wait_until(lambda: len(self.messages(chat_id)) >= count, timeout, f"{count} messages")
        except TimeoutError:
            texts = [m.text[:60] for m in self.messages(chat_id)]
            raise TimeoutError(
                f"waited {timeout}s for {count} bot message(s) in chat {chat_id}, got {len(texts)}: {texts}"
            ) from None
        return self.messages(chat_id)

    def max_sends_in_window(self, window: float = 1.0, chat_id: int | None = None) -> int:
        """The most accepted sends (all chats, or ``chat_id``) in any sliding ``window`` seconds."""
        with self._lock:
            times = [s.at for s in self.sends if chat_id is None or s.chat_id == chat_id]
        best = 0
        start = 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best
