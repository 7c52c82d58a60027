"""The bot process (``hnpal bot``): Telegram updates in, Celery tasks out, nothing else.

A python-telegram-bot ``Application`` owns the Bot API connection. Updates are fetched raw (a payload
python-telegram-bot could not parse must not stall the queue), written to ``telegram_updates``
(write-ahead; a duplicate update_id is ignored), and only then enqueued as ``hnpal.telegram.handle``
tasks and confirmed to Telegram by advancing the polling offset. A crash before the write loses
nothing (Telegram sends the update again); a crash after it leaves a stored row that the sweep
enqueues. Database writes and enqueueing run in worker threads, never on the event loop.

Webhook mode (HNPAL_TELEGRAM_MODE=webhook) answers Telegram's POST only after the write, so Telegram
retries an update we could not store; it always checks Telegram's secret header (see ``_webhook``).

Before an update is enqueued it is charged to its sender's budget (hnpal/telegram/fairness.py): a flood
is deferred into its sender's own line instead of the shared queue.
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
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, null, select, text
from sqlalchemy.dialects.postgresql import insert

from config.settings import Settings, get_settings
from hnpal import jobs
from hnpal.db.session import get_engine, session_scope
from hnpal.telegram.fairness import Budget
from hnpal.telegram.models import TelegramUpdate

log = logging.getLogger(__name__)
# Updates are fetched raw on purpose (see above); python-telegram-bot suggests its parsed method.
warnings.filterwarnings("ignore", message=".*Bot.getUpdates.*")
OVER_BUDGET_NOTICE_INTERVAL = 60  # a user over their update budget hears about it at most once a minute
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


# An update id seen again within this long is the same update (Telegram keeps an unconfirmed update for
# 24 hours); a finished row older than that with the same id is an older update of a restarted sequence
# (after a week without updates Telegram may restart the ids at a random value) and is replaced.
DEDUP_WINDOW = timedelta(days=1)


@dataclass
class Stored:
    """What :func:`store_updates` did with a batch: the new updates to enqueue now, those deferred (id and
    seconds to wait) and the ids ignored at once (a command for another bot)."""

    now: list[int] = field(default_factory=list)
    deferred: list[tuple[int, float]] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    over_budget: set[int] = field(default_factory=set)  # senders (private chats) that went over their budget

    @property
    def new(self) -> list[int]:
        return sorted([*self.now, *(i for i, _ in self.deferred), *self.ignored])


def for_another_bot(update: dict[str, Any], username: str | None) -> bool:
    """A command in a group addressed to another bot (``/x@OtherBot``): not ours to handle."""
    from hnpal.telegram.groups import addressed_to

    body = update.get("message")
    if not isinstance(body, dict) or not isinstance(body.get("chat"), dict):
        return False
    if body["chat"].get("type") == "private" or not isinstance(body.get("text"), str):
        return False
    target = addressed_to(body["text"]) if body["text"].startswith("/") else None
    return target is not None and target != (username or "").casefold()


def store_updates(
    updates: Iterable[dict[str, Any]], *, bot_username: str | None = None, budget: Budget | None = None
) -> Stored:
    """Write updates ahead of handling them. With a ``budget``, each is charged to its sender's (and
    group's) budget first: one over it is stored 'deferred' until its slot (see hnpal/telegram/fairness.py).
    A group command for another bot is stored as processed, with the reason, and not handled."""
    rows, senders, seen = [], [], set()
    for update in updates:
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or not _bigint(update_id) or update_id < 0:
            log.warning("update without a valid update_id ignored: %.200s", json.dumps(update))
            continue
        if update_id in seen:  # the same update twice in one batch: one row (an upsert touches a row once)
            continue
        seen.add(update_id)
        user_id, chat_id = _ids(update)
        row = {
            "update_id": update_id,
            "payload": _storable(update),
            "telegram_user_id": user_id,
            "chat_id": chat_id,
            "status": "received",
            "error": None,
            "delay": 0.0,
        }
        if for_another_bot(update, bot_username):
            row.update(status="processed", error="ignored: a command for another bot")
        else:
            senders.append((row, user_id, chat_id))
        rows.append(row)
    if not rows:
        return Stored()
    stored = Stored()
    if budget is not None and senders:
        from hnpal.state.store import get_redis

        waits = budget.charge(get_redis(), [(u, c) for _, u, c in senders])
        for (row, user_id, chat_id), wait in zip(senders, waits, strict=True):
            if wait > 0:
                row.update(status="deferred", delay=wait, error="deferred: over the sender's update budget")
                if user_id is not None and user_id == chat_id and "message" in row["payload"]:
                    stored.over_budget.add(user_id)  # told when they write (taps on buttons wait quietly)
    # One autocommitted statement (no BEGIN/COMMIT round trips); a batch is all or nothing all the same.
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        new = set(conn.scalars(_store_statement(), rows))
    for row in rows:
        if row["update_id"] not in new:
            continue
        if row["status"] == "processed":
            stored.ignored.append(row["update_id"])
        elif row["status"] == "deferred":
            stored.deferred.append((row["update_id"], row["delay"]))
        else:
            stored.now.append(row["update_id"])
    stored.now.sort()
    return stored


@functools.cache
def _store_statement():
    """The write-ahead insert, built once (executemany-free: one multi-row INSERT per batch). A row with the
    same id is kept (a duplicate) unless it is finished and older than :data:`DEDUP_WINDOW`."""
    values = {
        "update_id": bindparam("update_id"),
        "payload": bindparam("payload", type_=TelegramUpdate.payload.type),
        "telegram_user_id": bindparam("telegram_user_id"),
        "chat_id": bindparam("chat_id"),
        "status": bindparam("status"),
        "error": bindparam("error"),
        "processed_at": case((bindparam("status") == "processed", func.now()), else_=null()),
        "deferred_until": case(
            (bindparam("status") == "deferred", func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("delay"))),
            else_=null(),
        ),
    }
    stmt = insert(TelegramUpdate).values(values)
    replace: dict[str, Any] = {
        k: stmt.excluded[k]
        for k in ("payload", "telegram_user_id", "chat_id", "status", "error", "processed_at", "deferred_until")
    }
    replace.update(attempts=0, received_at=func.now(), expires_at=null())
    return stmt.on_conflict_do_update(
        index_elements=[TelegramUpdate.update_id],
        set_=replace,
        # literal SQL: a batch is one executemany, which takes no expanding IN parameter
        where=text(
            "telegram_updates.status IN ('processed', 'quarantined') AND "
            f"telegram_updates.received_at < now() - interval '{int(DEDUP_WINDOW.total_seconds())} seconds'"
        ),
    ).returning(TelegramUpdate.update_id)


def enqueue_deferred(deferred: list[tuple[int, float]], updates: Iterable[dict[str, Any]] = ()) -> None:
    """Enqueue deferred updates with their countdowns; one further away than the longest countdown a task
    may carry (HNPAL_MAX_COUNTDOWN) is left to the sweep, which enqueues it when it is due."""
    longest = get_settings().max_countdown
    by_id = {u.get("update_id"): u for u in updates}
    for update_id, wait in deferred:
        if wait <= longest:
            jobs.job(_task_for(by_id.get(update_id)), update_id, countdown=wait).send()


def notify_over_budget(senders: set[int]) -> None:
    """Tell each user who just went over their budget, at most once per interval (a Redis key)."""
    from hnpal.state.store import StateStore

    store = StateStore()
    for user_id in sorted(senders):
        if store.once(f"budget-notice:{user_id}", OVER_BUDGET_NOTICE_INTERVAL):
            jobs.enqueue(None, jobs.TELEGRAM_OVER_BUDGET, user_id)


def enqueue(update_ids: list[int], updates: Iterable[dict[str, Any]] = ()) -> None:
    """One task per stored update: ``hnpal.telegram.handle`` on the ``telegram`` queue, except a plain
    text message from a user whom the Redis FSM shows in a discussion: ``hnpal.discussions.message`` on
    the ``llm`` queue handles it and makes the answer in the same task (one queue hop instead of two).
    Both run the same handler, so a stale or missing FSM only changes which worker handles the update."""
    by_id = {u.get("update_id"): u for u in updates}
    for update_id in update_ids:
        jobs.enqueue(None, _task_for(by_id.get(update_id)), update_id)


def _task_for(update: dict[str, Any] | None) -> str:
    """The task that handles ``update``: ``hnpal.discussions.message`` for a message in a discussion,
    else ``hnpal.telegram.handle``."""
    return jobs.DISCUSSIONS_MESSAGE if _in_discussion(update) else jobs.TELEGRAM_HANDLE


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


def stored_maximum() -> int | None:
    """The largest update_id stored (None on a fresh database)."""
    with session_scope() as session:
        return session.scalar(select(func.max(TelegramUpdate.update_id)))


def restarted(highest: int | None, ids: list[int], new: list[int]) -> int:
    """Log when a batch brings new updates whose ids are below the largest seen so far (Telegram restarted
    its sequence, or an earlier id was forged): they are handled all the same. Returns the new largest."""
    if highest is not None:
        below = [i for i in new if i < highest]
        if below:
            log.warning(
                "update ids restarted below the largest seen (%d new updates from id %d; largest so far %d): "
                "handled as usual, duplicates recognised by id within %s",
                len(below), min(below), highest, DEDUP_WINDOW,
            )  # fmt: skip
    return max(ids) if highest is None else max(highest, *ids)


def accept_sync(updates: list[dict[str, Any]], *, bot_username: str | None = None) -> Stored:
    """Store (charging each update to its sender's budget), then enqueue: what is within the budget now,
    the rest with its countdown; tell a user who went over their budget."""
    stored = store_updates(updates, bot_username=bot_username, budget=Budget.from_settings())
    if stored.now:
        enqueue(stored.now, updates)
    if stored.deferred:
        enqueue_deferred(stored.deferred, updates)
        log.info("%d updates deferred (over their sender's budget)", len(stored.deferred))
    if stored.ignored:
        log.info("%d group commands for other bots ignored", len(stored.ignored))
    notify_over_budget(stored.over_budget)
    return stored


async def accept(updates: list[dict[str, Any]], *, bot_username: str | None = None) -> Stored:
    """:func:`accept_sync` off the event loop."""
    return await asyncio.to_thread(functools.partial(accept_sync, updates, bot_username=bot_username))


class BotProcess:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        if self.settings.telegram_token is None:
            raise SystemExit("HNPAL_TELEGRAM_TOKEN is not set: the bot needs a token from @BotFather")
        self.stopping = asyncio.Event()
        self.received = 0
        self.username: str | None = None  # ours, casefolded (known once the application is initialised)
        self.idle_pauses: deque[float] = deque(maxlen=100)  # the last pauses after quick empty answers

    def _application(self):
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
            self.username = me.username.casefold() if me.username else None
            log.info("bot @%s started (%s)", me.username, self.settings.telegram_mode)
            try:
                await bot.set_my_commands(COMMANDS)
            except Exception as exc:  # noqa: BLE001 - the menu is cosmetic
                log.warning("could not set the command menu: %s", exc)
            heartbeat = asyncio.ensure_future(self._heartbeat())
            try:
                if self.settings.telegram_mode == "webhook":
                    await self._webhook(bot)
                else:
                    await self._poll(bot)
            finally:
                heartbeat.cancel()
        log.info("bot stopped after %d updates", self.received)

    async def _heartbeat(self) -> None:
        """The bot's liveness for the metrics (hnpal/ops/heartbeat.py), from this event loop."""
        from hnpal.ops import heartbeat

        while not self.stopping.is_set():
            await asyncio.to_thread(heartbeat.beat, "bot")
            await self._sleep(heartbeat.INTERVAL)

    async def _poll(self, bot) -> None:
        """Long polling. The offset only confirms a batch just stored (the call after it); every other call
        goes without one and gets whatever Telegram has not had confirmed. So nothing depends on update ids
        only growing: after a week without updates Telegram may restart them at a random value, and a
        stored maximum used as the offset would confirm (drop) every update below it."""
        from telegram.error import NetworkError, RetryAfter, TimedOut

        loop = asyncio.get_running_loop()
        await bot.delete_webhook(drop_pending_updates=False)
        highest = await asyncio.to_thread(stored_maximum)
        offset: int | None = None
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
            offset = None  # this call confirmed the last batch
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
                    stored = await accept(updates, bot_username=self.username)
                    break
                except Exception as exc:  # noqa: BLE001 - database or broker down: keep the batch, retry
                    log.error("could not store %d updates (%s); retrying in %.0fs", len(updates), exc, backoff)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            else:
                break
            self.received += len(updates)
            ids = [u["update_id"] for u in updates if _bigint(u.get("update_id")) and u["update_id"] >= 0]
            if ids:
                highest = restarted(highest, ids, stored.new)
                offset = max(ids) + 1  # confirmed by the next call, now that they are stored

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _webhook(self, bot) -> None:
        """Webhook mode. Telegram's secret header is the only proof that a POST comes from Telegram, so the
        webhook never runs without one: the configured HNPAL_TELEGRAM_WEBHOOK_SECRET, else a random one made
        for this run and registered with setWebhook. It is compared in constant time; a POST without it is
        refused (403) before anything is read or stored."""
        import secrets

        import tornado.web

        secret = self.settings.telegram_webhook_secret
        if secret is None:
            expected = secrets.token_urlsafe(48)  # Telegram allows A-Z, a-z, 0-9, _ and -: so does this
            log.warning(
                "HNPAL_TELEGRAM_WEBHOOK_SECRET is not set: a random secret was generated and registered for "
                "this run (set one to keep it across restarts)"
            )
        else:
            expected = secret.get_secret_value()
        expected_bytes = expected.encode()
        process = self
        highest = [await asyncio.to_thread(stored_maximum)]  # of updates that passed the secret only

        class Handler(tornado.web.RequestHandler):
            async def post(self) -> None:
                given = self.request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
                if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected_bytes):
                    log.warning("webhook call without the right secret refused (from %s)", self.request.remote_ip)
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
                    stored = await accept([update], bot_username=process.username)
                except Exception:  # not stored: Telegram must send it again
                    log.exception("webhook update not stored")
                    self.set_status(500)
                    return
                if stored.new:
                    highest[0] = restarted(highest[0], stored.new, stored.new)
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
