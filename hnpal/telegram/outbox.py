"""Sending to Telegram from tasks: the Bot API client behind the shared rate limiter.

Every message and edit first takes a token from the limiter (about 30 messages/s over all sender
processes, or 1000/s with paid broadcasts, and 1 per second per chat); a 429 that still happens holds
that chat off for ``retry_after`` (a group's 20-a-minute limit must not stop everyone else's replies), or
the whole fleet when 429s hit several chats at once (the overall limit: see
:meth:`~hnpal.telegram.ratelimit.SendLimiter.penalize_429`), and is raised to the task, which retries later. Button
answers are not rate-limited by Telegram and go straight out.

The outbox of one reply (``reply=True``: an update's handling, a discussion answer) finishes a reply it
has started: once one of its messages is out, a 429 is waited out in place (up to
``max_started_wait``) instead of being raised, because the task's retry would send the reply again from
its first message. The chat (or the fleet) is held off for that time anyway.
"""

from __future__ import annotations

import logging
import mimetypes

from config.settings import Settings, get_settings
from hnpal.ops.metrics import count_telegram_429
from hnpal.telegram.client import BadRequest, BotAPI, RetryAfter, is_not_modified
from hnpal.telegram.ratelimit import Reservation, SendLimiter

log = logging.getLogger(__name__)


def uneditable(exc: BadRequest) -> bool:
    """A 400 about the message edited, not about what was sent: too old, deleted, not the bot's, or
    otherwise not editable. (A text Telegram cannot parse is refused as a new message too.)"""
    description = exc.description.lower()
    return "parse" not in description and ("edit" in description or "message_id_invalid" in description
                                            or "message not found" in description)  # fmt: skip


class TelegramOutbox:
    def __init__(
        self,
        api: BotAPI | None = None,
        limiter: SendLimiter | None = None,
        settings: Settings | None = None,
        *,
        reply: bool = False,
    ):
        settings = settings or get_settings()
        self.api = api or BotAPI.from_settings(settings)
        self.limiter = limiter or SendLimiter.from_settings(settings)
        self.max_wait = 30.0
        self.max_inline_retry = 5.0  # a short 429 is waited out here; a longer one goes back to the task
        self.reply = reply  # the outbox of one reply: a started reply is finished in place
        self.max_started_wait = 60.0  # the longest 429 a started reply waits out (tasks are given 5 min)
        self.sent = 0  # messages (and documents) this outbox has sent

    def _paced(self, chat_id: int, call, reservation: Reservation | None = None, *, new: bool = True):
        """Send after taking a slot (``reservation``: one taken beforehand with ``limiter.reserve_many``).
        A 429 holds every sender off for ``retry_after``; when that is short (or this outbox's reply has
        started: see the module), this message is sent again here, so a reply of several messages does
        not start over (and repeat the ones already sent) because one of them was refused. ``new``: the
        call sends something new (not an edit, which is safe to repeat)."""
        max_wait = self.max_wait
        for attempt in range(3):
            if reservation is not None and not attempt:
                self.limiter.wait_for(reservation, max_wait=max_wait)
            else:
                self.limiter.acquire(chat_id, max_wait=max_wait)
            try:
                result = call()
            except RetryAfter as exc:
                wait = exc.retry_after or 1.0
                self.limiter.penalize_429(wait, chat_id)  # that chat only, unless the overall limit was hit
                count_telegram_429(self.limiter.redis)  # hnpal_telegram_429_total (best effort)
                # a started reply waits longer and tries once more; anything else goes back to its task
                longest, tries = (self.max_started_wait, 3) if self.reply and self.sent else (self.max_inline_retry, 2)
                if attempt + 1 >= tries or wait > longest:
                    raise
                log.info("Telegram asked to wait %.1fs (429); sending again after that", wait)
                max_wait = max(self.max_wait, wait + 5.0)  # the block set above must not time the slot out
                continue
            if new:
                self.sent += 1
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, chat_id: int, text: str, reply_markup: dict | None = None) -> dict:
        # encoded before the slot: after it, only the request goes out
        return self._paced(chat_id, self.api.prepare_send_message(chat_id, text, reply_markup=reply_markup))

    def send_reserved(self, reservation: Reservation, text: str, reply_markup: dict | None = None) -> dict:
        """:meth:`send` in the slot of a ``limiter.reserve_many`` reservation (digest batches)."""
        chat_id = reservation.chat_id
        call = self.api.prepare_send_message(chat_id, text, reply_markup=reply_markup)
        return self._paced(chat_id, call, reservation)

    def edit(self, chat_id: int, message_id: int, text: str, reply_markup: dict | None = None) -> dict:
        """Replace a message's text; when Telegram will not edit it (too old, deleted, a message of the
        user's), the new text goes out as a fresh message instead: the button's work is done and kept."""
        try:
            return self._paced(
                chat_id,
                lambda: self.api.edit_message_text(chat_id, message_id, text, reply_markup=reply_markup),
                new=False,
            )
        except BadRequest as exc:
            if is_not_modified(exc):  # pressing the same button twice: nothing to change
                return {}
            if not uneditable(exc):
                raise
            log.info("message %s in chat %s cannot be edited (%s): sent anew", message_id, chat_id, exc.description)
            return self.send(chat_id, text, reply_markup=reply_markup)

    def edit_markup(self, chat_id: int, message_id: int, reply_markup: dict | None) -> dict | None:
        """Replace a message's buttons; None when Telegram will not edit the message (the caller sends a
        fresh one if the buttons matter)."""
        try:
            return self._paced(
                chat_id, lambda: self.api.edit_message_reply_markup(chat_id, message_id, reply_markup), new=False
            )
        except BadRequest as exc:
            if is_not_modified(exc):
                return {}
            if not uneditable(exc):
                raise
            log.info("buttons of message %s in chat %s cannot be edited (%s)", message_id, chat_id, exc.description)
            return None

    def send_document(self, chat_id: int, filename: str, data: bytes, caption: str | None = None) -> dict:
        """Upload ``data`` as a file named ``filename`` (paced like a message; the caption is plain text)."""
        mime_type = mimetypes.guess_type(filename)[0]
        return self._paced(
            chat_id, lambda: self.api.send_document(chat_id, filename, data, caption, mime_type=mime_type)
        )

    def answer(self, callback_query_id: str, text: str | None = None) -> None:
        try:
            self.api.answer_callback_query(callback_query_id, text=text)
        except BadRequest as exc:  # too old (the user waited > 15 min): the work is done anyway
            log.info("callback %s not answered: %s", callback_query_id, exc)
