"""Sending to Telegram from tasks: the Bot API client behind the shared rate limiter.

Every message and edit first takes a token from the limiter (about 30 messages/s over all sender
processes, or 1000/s with paid broadcasts, and 1 per second per chat); a 429 that still happens makes
the whole fleet hold off for ``retry_after`` and is raised to the task, which retries later. Button
answers are not rate-limited by Telegram and go straight out.
"""

from __future__ import annotations

import logging
import mimetypes

from config.settings import Settings, get_settings
from hnpal.ops.metrics import count_telegram_429
from hnpal.telegram.client import BadRequest, BotAPI, RetryAfter, is_not_modified
from hnpal.telegram.ratelimit import Reservation, SendLimiter

log = logging.getLogger(__name__)


class TelegramOutbox:
    def __init__(self, api: BotAPI | None = None, limiter: SendLimiter | None = None, settings: Settings | None = None):
        settings = settings or get_settings()
        self.api = api or BotAPI.from_settings(settings)
        self.limiter = limiter or SendLimiter.from_settings(settings)
        self.max_wait = 30.0
        self.max_inline_retry = 5.0  # a short 429 is waited out here; a longer one goes back to the task

    def _paced(self, chat_id: int, call, reservation: Reservation | None = None):  # type: ignore[no-untyped-def]
        """Send after taking a slot (``reservation``: one taken beforehand with ``limiter.reserve_many``).
        A 429 holds every sender off for ``retry_after``; when that is short this message is sent again
        here, so a reply of several messages does not start over (and repeat the ones already sent)
        because one of them was refused."""
        for attempt in range(2):
            if reservation is not None and not attempt:
                self.limiter.wait_for(reservation, max_wait=self.max_wait)
            else:
                self.limiter.acquire(chat_id, max_wait=self.max_wait)
            try:
                return call()
            except RetryAfter as exc:
                wait = exc.retry_after or 1.0
                self.limiter.penalize(wait)
                count_telegram_429(self.limiter.redis)  # hnpal_telegram_429_total (best effort)
                if attempt or wait > self.max_inline_retry:
                    raise
                log.info("Telegram asked to wait %.1fs (429); sending again after that", wait)
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
        try:
            return self._paced(
                chat_id, lambda: self.api.edit_message_text(chat_id, message_id, text, reply_markup=reply_markup)
            )
        except BadRequest as exc:
            if is_not_modified(exc):  # pressing the same button twice: nothing to change
                return {}
            raise

    def edit_markup(self, chat_id: int, message_id: int, reply_markup: dict | None) -> dict:
        try:
            return self._paced(chat_id, lambda: self.api.edit_message_reply_markup(chat_id, message_id, reply_markup))
        except BadRequest as exc:
            if is_not_modified(exc):
                return {}
            raise

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
