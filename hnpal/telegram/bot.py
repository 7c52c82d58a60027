"""The bot process (``hnpal bot``): Telegram updates in, Celery tasks out, nothing else.

A python-telegram-bot ``Application`` owns the Bot API connection. Updates are fetched raw (a payload
python-telegram-bot could not parse must not stall the queue), written to ``telegram_updates``
(write-ahead; a duplicate update_id is ignored), and only then enqueued as ``hnpal.telegram.handle``
tasks and confirmed to Telegram by advancing the polling offset. A crash before the write loses
nothing (Telegram sends the update again); a crash after it leaves a stored row that the sweep
enqueues. Database writes and enqueueing run in worker threads, never on the event loop.

Webhook mode (HNPAL_TELEGRAM_MODE=webhook) answers Telegram's POST only after the write, so Telegram
retries an update we could not store.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import signal
import threading
import warnings
from collections import deque
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from config.settings import Settings, get_settings
from hnpal.db.session import get_engine, session_scope
from hnpal.telegram.models import TelegramUpdate

log = logging.getLogger(__name__)
# Updates are fetched raw on purpose (see above); python-telegram-bot suggests its parsed method.
warnings.filterwarnings("ignore", message=".*Bot.getUpdates.*")
# After an empty getUpdates answer that came at once: the first pause, doubled while it lasts, up to the last.
IDLE_PAUSE = 0.5
IDLE_PAUSE_MAX = 5.0
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
COMMANDS = [
    ("digest", "A digest now"),
    ("discuss", "Talk about a post: /discuss HN_ID"),
    ("done", "End the discussion"),
    ("settings", "Digest style, time, time zone, filters"),
    ("saved", "Your bookmarks"),
    ("pause", "Pause or resume scheduled digests"),
    ("token", "Your LLM usage"),
    ("memory", "What HN Pal remembers about you"),
    ("export", "A copy of your data"),
    ("deletemydata", "Delete your account and data"),
    ("start", "Pick your interests"),
    ("help", "What HN Pal can do"),
]


def _ids(update: dict[str, Any]) -> tuple[int | None, int | None]:
    """(telegram user id, chat id) of an update, when it has them (any shape: a malformed update must
    still be stored, so the worker can quarantine it, instead of stalling the queue)."""

    def field(value: Any, key: str) -> Any:
        return value.get(key) if isinstance(value, dict) else None

    def number(value: Any) -> int | None:
        return value if _bigint(value) else None

    for key in ("message", "edited_message", "callback_query", "my_chat_member", "channel_post"):
        body = update.get(key)
        if isinstance(body, dict):
            chat = field(body, "chat") or field(field(body, "message"), "chat")
            return number(field(field(body, "from"), "id")), number(field(chat, "id"))
    return None, None


def _bigint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _storable(value: Any) -> Any:
    """``value`` with NUL characters replaced: PostgreSQL's JSONB cannot hold \\u0000, and one update
    the insert refuses would be retried forever, holding up every update after it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def store_updates(updates: Iterable[dict[str, Any]]) -> list[int]:
    """Write updates ahead of handling them; returns the ids that were new (to enqueue)."""
    rows = []
    for update in updates:
        update_id = update.get("update_id")
        if not _bigint(update_id) or update_id < 0:
            log.warning("update without a valid update_id ignored: %.200s", json.dumps(update))
            continue
        user_id, chat_id = _ids(update)
        rows.append(
            {"update_id": update_id, "payload": _storable(update), "telegram_user_id": user_id, "chat_id": chat_id}
        )
    if not rows:
        return []
    # One autocommitted statement (no BEGIN/COMMIT round trips); a batch is all or nothing all the same.
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return sorted(conn.scalars(_store_statement(), rows))


@functools.cache
def _store_statement():  # type: ignore[no-untyped-def]
    """The write-ahead insert, built once (executemany-free: one multi-row INSERT per batch)."""
    return insert(TelegramUpdate).on_conflict_do_nothing().returning(TelegramUpdate.update_id)


def enqueue(update_ids: list[int], updates: Iterable[dict[str, Any]] = ()) -> None:
    """One task per stored update: ``hnpal.telegram.handle`` on the ``telegram`` queue, except a plain
    text message from a user whom the Redis FSM shows in a discussion: ``hnpal.discussions.message`` on
    the ``llm`` queue handles it and makes the answer in the same task (one queue hop instead of two).
    Both run the same handler, so a stale or missing FSM only changes which worker handles the update."""
    from tasks.discussions import message
    from tasks.telegram import handle

    by_id = {u.get("update_id"): u for u in updates}
    for update_id in update_ids:
        if _in_discussion(by_id.get(update_id)):
            message.delay(update_id)
        else:
            handle.delay(update_id)


def _in_discussion(update: dict[str, Any] | None) -> bool:
    """A private text message (not a command, not an answer to a settings prompt) from a user whose FSM
    state in Redis is DISCUSSION. Redis unreachable or the state gone: False (the telegram queue)."""
    from hnpal.state.store import BotState, StateStore

    body = update.get("message") if isinstance(update, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or body["text"].lstrip().startswith("/"):
        return False
    chat, sender = body.get("chat"), body.get("from")
    if not isinstance(chat, dict) or chat.get("type") != "private" or not isinstance(sender, dict):
        return False
    if not _bigint(sender.get("id")) or sender["id"] <= 0:
        return False
    state = StateStore().get_fsm(sender["id"])
    return state is not None and state.state == BotState.DISCUSSION and not state.data.get("awaiting")


def resume_offset() -> int | None:
    """The first update_id not stored yet (None on a fresh database: take what Telegram has)."""
    with session_scope() as session:
        last = session.scalar(select(func.max(TelegramUpdate.update_id)))
    return None if last is None else last + 1


async def accept(updates: list[dict[str, Any]]) -> None:
    """Store, then enqueue: both off the event loop."""
    new = await asyncio.to_thread(store_updates, updates)
    if new:
        await asyncio.to_thread(enqueue, new, updates)


class BotProcess:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        if self.settings.telegram_token is None:
            raise SystemExit("HNPAL_TELEGRAM_TOKEN is not set: the bot needs a token from @BotFather")
        self.stopping = asyncio.Event()
        self.received = 0
        self.idle_pauses: deque[float] = deque(maxlen=100)  # the last pauses after quick empty answers

    def _application(self):  # type: ignore[no-untyped-def]
        from telegram.ext import Application

        base = str(self.settings.telegram_base_url)
        timeout = self.settings.telegram_timeout
        return (
            Application.builder()
            .token(self.settings.telegram_token.get_secret_value())  # type: ignore[union-attr]
            .base_url(base)
            .base_file_url(base.replace("/bot", "/file/bot", 1))
            .updater(None)
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .write_timeout(timeout)
            .get_updates_read_timeout(self.settings.telegram_poll_timeout + timeout)
            .build()
        )

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
        application = self._application()
        async with application:
            bot = application.bot
            me = bot.bot
            log.info("bot @%s started (%s)", me.username, self.settings.telegram_mode)
            try:
                await bot.set_my_commands(COMMANDS)
            except Exception as exc:  # noqa: BLE001 - the menu is cosmetic
                log.warning("could not set the command menu: %s", exc)
            if self.settings.telegram_mode == "webhook":
                await self._webhook(bot)
            else:
                await self._poll(bot)
        log.info("bot stopped after %d updates", self.received)

    async def _poll(self, bot) -> None:  # type: ignore[no-untyped-def]
        from telegram.error import NetworkError, RetryAfter, TimedOut

        loop = asyncio.get_running_loop()
        await bot.delete_webhook(drop_pending_updates=False)
        offset = await asyncio.to_thread(resume_offset)
        backoff, idle = 1.0, 0.0
        while not self.stopping.is_set():
            params: dict[str, Any] = {
                "timeout": self.settings.telegram_poll_timeout,
                "allowed_updates": ALLOWED_UPDATES,
            }
            if offset is not None:
                params["offset"] = offset
            fetch = asyncio.ensure_future(bot.do_api_request("getUpdates", api_kwargs=params))
            asked = loop.time()
            stop = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                fetch.cancel()
                break
            stop.cancel()
            try:
                updates = fetch.result()
            except RetryAfter as exc:
                wait = exc.retry_after
                await self._sleep(wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait))
                continue
            except (TimedOut, NetworkError) as exc:
                log.warning("getUpdates failed (%s); retrying in %.0fs", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            if not isinstance(updates, list) or not updates:
                # An empty answer that came at once (a timeout of 0, a server that does not hold the
                # request) must not turn the loop into a spin: pause, longer while it lasts.
                if loop.time() - asked >= self.settings.telegram_poll_timeout / 2 + IDLE_PAUSE:
                    idle = 0.0  # a real long poll that timed out: ask again at once
                    continue
                idle = min(idle * 2, IDLE_PAUSE_MAX) if idle else IDLE_PAUSE
                self.idle_pauses.append(idle)
                await self._sleep(idle)
                continue
            idle = 0.0
            updates = [u for u in updates if isinstance(u, dict)]
            while not self.stopping.is_set():
                try:
                    await accept(updates)
                    break
                except Exception as exc:  # noqa: BLE001 - database or broker down: keep the batch, retry
                    log.error("could not store %d updates (%s); retrying in %.0fs", len(updates), exc, backoff)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            else:
                break
            self.received += len(updates)
            ids = [u["update_id"] for u in updates if isinstance(u.get("update_id"), int)]
            if ids:
                offset = max(ids) + 1  # confirmed only now that they are stored

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _webhook(self, bot) -> None:  # type: ignore[no-untyped-def]
        import tornado.web

        secret = self.settings.telegram_webhook_secret
        expected = secret.get_secret_value() if secret else None
        process = self

        class Handler(tornado.web.RequestHandler):
            async def post(self) -> None:
                given = self.request.headers.get("X-Telegram-Bot-Api-Secret-Token")
                if expected is not None and not (given and hmac.compare_digest(given, expected)):
                    self.set_status(403)
                    return
                try:
                    update = json.loads(self.request.body or b"null")
                except ValueError:
                    self.set_status(400)
                    return
                if not isinstance(update, dict):
                    self.set_status(400)
                    return
                try:
                    await accept([update])
                except Exception:  # noqa: BLE001 - not stored: Telegram must send it again
                    log.exception("webhook update not stored")
                    self.set_status(500)
                    return
                process.received += 1
                self.set_status(200)

        url = str(self.settings.telegram_webhook_url)
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        web = tornado.web.Application([(path.rstrip("/") or "/", Handler)])
        server = web.listen(self.settings.telegram_webhook_port, address=self.settings.telegram_webhook_listen)
        await bot.set_webhook(url=url, secret_token=expected, allowed_updates=ALLOWED_UPDATES)
        log.info("webhook listening on %s:%s%s", self.settings.telegram_webhook_listen,
                 self.settings.telegram_webhook_port, path)  # fmt: skip
        await self.stopping.wait()
        server.stop()


def main() -> None:
    asyncio.run(BotProcess().run())
