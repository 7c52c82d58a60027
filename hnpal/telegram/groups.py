"""Groups and channels: HN Pal answers only in private chats, and says so (sparingly) when a group
addresses it."""

from __future__ import annotations

import logging
from typing import Any

from hnpal.state.store import StateStore
from hnpal.telegram.context import Outbox
from hnpal.telegram.texts import GROUP_NOTICE

log = logging.getLogger(__name__)
GROUP_NOTICE_INTERVAL = 10 * 60  # one chat hears the notice at most once in this many seconds


def group_message(out: Outbox, store: StateStore, chat_id: int, message: dict[str, Any]) -> None:
    """A group or channel: HN Pal answers only in private chats. A command of ours (``/help``,
    ``/help@HNPalBot``) gets the notice, at most once per chat per interval (a flood of commands must not
    hit Telegram's 20-a-minute group limit); a command addressed to another bot, or plain talk, nothing."""
    text = message.get("text")
    if not isinstance(text, str) or not text.startswith("/"):
        return
    target = addressed_to(text)
    if target is not None and target != bot_username():
        return
    if store.once(f"group-notice:{int(chat_id)}", GROUP_NOTICE_INTERVAL):
        out.send(chat_id, GROUP_NOTICE)


def addressed_to(text: str) -> str | None:
    """The bot a command names (``/help@OtherBot`` → ``otherbot``), casefolded; None when it names none."""
    head = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    _, at, name = head.partition("@")
    return name.casefold() if at else None


_bot_username: list[str | None] = []  # this process's answer, once known


def bot_username() -> str | None:
    """This bot's username, casefolded (``getMe``, once per process); None if Telegram cannot say now (a
    command addressed to some bot is then taken as another bot's)."""
    from hnpal.telegram.client import BotAPI

    if not _bot_username:
        try:
            name = BotAPI.from_settings().get_me().get("username")
        except Exception as exc:  # noqa: BLE001 - not knowing our name only makes us quieter
            log.warning("getMe failed (%s): commands addressed to a bot are ignored in groups", exc)
            return None
        _bot_username.append(name.casefold() if isinstance(name, str) else None)
    return _bot_username[0]
