"""Sending reserved digests: the lean path used by the ``hnpal.digests.send*`` tasks.

A batch of digests is locked in one statement (session-level advisory locks: one sender per digest; a
digest another sender holds is left to it), then loaded with two (digests, users, reserved deliveries and
posts in one, as tuples; the user-style summaries in the other), rendered in Python, and sent by a small
thread pool (Telegram answers take a round trip), each thread with a connection of its own:

* brief digests waiting for their one message go ``GROUP`` at a time: rendered first, their slots taken
  in one limiter round trip (``SendLimiter.reserve_many``), sent in slot order, and their message ids
  and statuses recorded together in one statement after the group. Each digest of the group has at most
  its one message unrecorded, so a crash repeats at most the message in flight of each digest;
* flat_scroll digests one at a time, their messages in order, each answer recorded at once (the
  delivery's ``message_id``; the digest's status with its last message) before the next is sent.

So a crash can repeat at most the message in flight of each digest, never a whole digest, and a
redelivered or re-sent digest resumes with its unsent posts.

It is the only sending path (one digest per ``hnpal.digests.send`` task, many per ``send_batch``): it
avoids the ORM because at paid-broadcast rates (1000 messages/s) the per-message cost must stay well
under a millisecond.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, text

from config.settings import Settings, get_settings
from hnpal.db.session import get_engine
from hnpal.deliveries.service import SUMMARY_WAIT_ATTEMPTS, digest_heading, preferences
from hnpal.relevance.service import explain
from hnpal.summaries.service import interest_variant
from hnpal.telegram import render
from hnpal.telegram.client import BadRequest, Forbidden, NetworkError, RetryAfter
from hnpal.telegram.outbox import TelegramOutbox
from hnpal.telegram.ratelimit import LimiterTimeout

log = logging.getLogger(__name__)

LOAD_SQL = text(
    """
SELECT g.id AS digest_id, g.status, g.manual, g.batch_id, g.style AS digest_style, g.message_id AS digest_message,
       g.attempts, u.id AS user_id, u.telegram_id, u.status AS user_status,
       CASE WHEN d.id IS NULL OR d.id = min(d.id) OVER (PARTITION BY g.id) THEN u.digest_preferences END
           AS digest_preferences,
       CASE WHEN d.id IS NULL OR d.id = min(d.id) OVER (PARTITION BY g.id) THEN u.interests END AS interests,
       d.id AS delivery_id, d.message_id, d.reaction, d.is_saved,
       p.id AS post_id, p.hn_id, p.title, p.url, p.domain, p.score, p.comment_count,
       CASE WHEN g.style IS DISTINCT FROM 'brief' THEN p.summary END AS summary,  -- a brief lists titles only
       d.reason
FROM digests g
JOIN users u ON u.id = g.user_id
LEFT JOIN deliveries d ON d.user_id = g.user_id AND d.batch_id = g.batch_id
LEFT JOIN posts p ON p.id = d.post_id
WHERE g.id = ANY(:ids)
ORDER BY g.id, d.id
"""
)
# LOAD_SQL's columns, by position (read as tuples)
(_DIGEST, _STATUS, _MANUAL, _BATCH, _STYLE, _DIGEST_MESSAGE, _ATTEMPTS, _USER, _CHAT, _USER_STATUS, _PREFS) = range(11)
(_INTERESTS, _DELIVERY, _MESSAGE, _REACTION, _SAVED, _POST, _HN_ID, _TITLE) = range(11, 19)
(_URL, _DOMAIN, _SCORE, _COMMENTS, _SUMMARY, _REASON) = range(19, 25)
# The users' summary styles, and each post's comment summary ("What HN says": only lively threads have one).
STYLED_SQL = text(
    "SELECT post_id, style, variant, text FROM summaries WHERE post_id = ANY(:posts) "
    "AND ((style = ANY(:styles) AND variant = ANY(:variants)) OR (style = 'comments' AND variant = ''))"
)
MARK_DELIVERY = text("UPDATE deliveries SET message_id = :message_id WHERE id = ANY(:ids)")
MARK_SENT = text(
    "UPDATE digests SET status = 'sent', sent_at = now(), message_id = coalesce(:message_id, message_id) "
    "WHERE id = :digest_id"
)
MARK_LAST = text(
    "WITH d AS (UPDATE deliveries SET message_id = :message_id WHERE id = ANY(:ids)) "
    "UPDATE digests SET status = 'sent', sent_at = now(), message_id = coalesce(:digest_message, message_id) "
    "WHERE id = :digest_id"
)
MARK_EMPTY = text("UPDATE digests SET status = 'empty' WHERE id = :digest_id")
MARK_WAITING = text("UPDATE digests SET attempts = attempts + 1 WHERE id = :digest_id")
MARK_BLOCKED = text(
    "WITH u AS (UPDATE users SET status = 'blocked' WHERE id = :user_id AND status <> 'deleted') "
    "UPDATE digests SET status = 'failed', error = :error WHERE id = :digest_id"
)
MARK_FAILED = text("UPDATE digests SET status = 'failed', error = :error WHERE id = :digest_id")
MARK_FAILED_RAW = MARK_FAILED
MARK_ERROR = text("UPDATE digests SET error = :error WHERE id = :digest_id")


@dataclass
class Work:
    digest_id: int
    user_id: int
    chat_id: int
    style: str  # brief | flat_scroll
    heading: str
    cards: list[render.PostCard]
    sent: set[int]  # delivery ids with a message already
    digest_message: int | None


@dataclass
class Outcome:
    sent: dict[int, int] = field(default_factory=dict)  # digest id -> messages sent now
    done: list[int] = field(default_factory=list)  # sent, empty, failed or skipped: nothing more to do
    blocked: list[int] = field(default_factory=list)
    waiting: dict[int, list[int]] = field(default_factory=dict)  # digest id -> posts missing a summary
    retry: dict[int, float] = field(default_factory=dict)  # digest id -> seconds to wait
    busy: list[int] = field(default_factory=list)  # another sender holds the digest right now
    refused: list[int] = field(default_factory=list)  # Telegram refused it for good (also in done)


def _load(conn: Connection, digest_ids: list[int], settings: Settings, outcome: Outcome) -> list[Work]:
    # Through the DBAPI cursor, as tuples: at paid-broadcast rates the result layers would cost more
    # than the rows (ten per digest).
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(_LOAD, {"ids": list(digest_ids)})
    digests: dict[int, list[tuple]] = {}
    for row in cursor.fetchall():
        digests.setdefault(row[0], []).append(row)
    wanted: dict[int, tuple[str, str]] = {}  # digest id -> (summary style, variant)
    styles_of: dict[int, str] = {}  # digest id -> digest style
    for digest_id, group in digests.items():
        prefs = preferences(group[0][_PREFS])
        variant = interest_variant(group[0][_INTERESTS]) if prefs.summary_style == "personalized" else ""
        wanted[digest_id] = (prefs.summary_style, variant)
        styles_of[digest_id] = group[0][_STYLE] or prefs.style
    posts = sorted({r[_POST] for group in digests.values() for r in group if r[_POST] is not None})
    styles = sorted({s for s, _ in wanted.values()})
    variants = sorted({v for _, v in wanted.values()})
    styled: dict[tuple[int, str, str], str] = {}
    if posts:
        for r in conn.execute(STYLED_SQL, {"posts": posts, "styles": styles, "variants": variants}):
            styled[(r.post_id, r.style, r.variant)] = r.text
    work = []
    for digest_id, group in digests.items():
        head = group[0]
        if head[_STATUS] in ("sent", "empty", "failed"):
            outcome.done.append(digest_id)
            continue
        if head[_USER_STATUS] in ("blocked", "deleted"):
            conn.execute(MARK_FAILED, {"digest_id": digest_id, "error": f"user {head[_USER_STATUS]}"})
            outcome.done.append(digest_id)
            continue
        reserved = [r for r in group if r[_DELIVERY] is not None]
        if not reserved:
            conn.execute(MARK_EMPTY, {"digest_id": digest_id})
            outcome.done.append(digest_id)
            continue
        style, variant = wanted[digest_id]
        missing = [r[_POST] for r in reserved if (r[_POST], style, variant) not in styled]
        if missing and style != settings.summary_default_style and head[_ATTEMPTS] < SUMMARY_WAIT_ATTEMPTS:
            conn.execute(MARK_WAITING, {"digest_id": digest_id})
            outcome.waiting[digest_id] = missing
            continue
        total = len(reserved)
        cards = [
            render.PostCard(
                delivery_id=r[_DELIVERY],
                hn_id=r[_HN_ID],
                title=r[_TITLE],
                url=r[_URL],
                domain=r[_DOMAIN],
                score=r[_SCORE],
                comments=r[_COMMENTS],
                summary=styled.get((r[_POST], style, variant)) or r[_SUMMARY],
                position=n,
                total=total,
                reaction=r[_REACTION],
                saved=r[_SAVED],
                why=explain(r[_REASON]),
                hn_says=styled.get((r[_POST], "comments", "")) if r[_SUMMARY] is not None else None,
            )
            for n, r in enumerate(reserved, start=1)
        ]
        heading = digest_heading(SimpleNamespace(manual=head[_MANUAL], batch_id=head[_BATCH]), total)  # type: ignore[arg-type]
        work.append(
            Work(
                digest_id=digest_id,
                user_id=head[_USER],
                chat_id=head[_CHAT],
                style=styles_of[digest_id],
                heading=heading,
                cards=cards,
                sent={r[_DELIVERY] for r in reserved if r[_MESSAGE] is not None},
                digest_message=head[_DIGEST_MESSAGE],
            )
        )
    return work


class _Writer:
    """One autocommit connection per sending thread, written through the DBAPI cursor: at a thousand
    messages a second the ORM/Core layers would cost more than the statement."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def execute(self, statement: Any, params: dict[str, Any]) -> None:
        self.cursor.execute(_PYFORMAT[statement], params)

    def execute_raw(self, sql: str, params: dict[str, Any]) -> None:
        self.cursor.execute(sql, params)


def _pyformat(statement: Any) -> str:
    import re

    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", str(statement.text))


_PYFORMAT: dict[Any, str] = {}


def _register() -> None:
    for statement in (MARK_DELIVERY, MARK_SENT, MARK_LAST, MARK_BLOCKED, MARK_FAILED, MARK_ERROR):
        _PYFORMAT[statement] = _pyformat(statement)


_register()
_LOAD = _pyformat(LOAD_SQL)


LOCK_SPACE = 0x6469  # "di": advisory locks of digest sends (summaries use (post id, style hash))
LOCK_ALL = "SELECT id FROM unnest(%(ids)s::int[]) AS id WHERE pg_try_advisory_lock(%(space)s, id)"
UNLOCK_ALL = "SELECT count(pg_advisory_unlock(%(space)s, id)) FROM unnest(%(ids)s::int[]) AS id"
# A group of brief digests, one message each: their message ids and statuses in one statement.
MARK_BRIEFS = (
    "WITH x AS (UPDATE deliveries SET message_id = v.m "
    "FROM unnest(%(deliveries)s::int[], %(delivery_messages)s::bigint[]) AS v(id, m) WHERE deliveries.id = v.id) "
    "UPDATE digests SET status = 'sent', sent_at = now(), message_id = v.m "
    "FROM unnest(%(digests)s::int[], %(messages)s::bigint[]) AS v(id, m) WHERE digests.id = v.id"
)
# Sending threads per send_batch task: each thread sends brief digests GROUP at a time, holding a pooled
# connection; two per task keep pace at 1000 messages/s with less thread switching than four.
SEND_THREADS = 2
GROUP = 8  # brief digests sent per limiter round trip and recorded per statement, by one sending thread


def _lock(conn: Connection, digest_ids: list[int], outcome: Outcome) -> list[int]:
    """One sender per digest at a time: the digests another sender holds right now (a redelivered or
    swept task that starts while the first is still sending) are left to it (``outcome.busy``). The locks
    are session-level on ``conn``, held while sending and released at the end (or with the connection,
    if the process dies); what is sent is read after they are taken."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(LOCK_ALL, {"ids": list(digest_ids), "space": LOCK_SPACE})
    locked = {row[0] for row in cursor.fetchall()}
    outcome.busy.extend(d for d in digest_ids if d not in locked)
    return [d for d in digest_ids if d in locked]


def _unlock(conn: Connection, digest_ids: list[int]) -> None:
    if digest_ids:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(UNLOCK_ALL, {"ids": list(digest_ids), "space": LOCK_SPACE})


def _send_briefs(
    group: list[Work], send: Callable[..., dict], outcome: Outcome, conn: _Writer, outbox: TelegramOutbox | None
) -> None:
    """Brief digests, one message each (to distinct chats): rendered first, their slots taken in one
    limiter round trip (with the outbox), sent in slot order, and recorded together in one statement.
    Each digest has at most its one message unrecorded at any time, so a crash repeats at most the
    message in flight of each digest, never a whole digest."""
    messages = [
        (
            work.chat_id,
            render.brief_message(work.cards, work.heading),
            render.brief_keyboard(work.digest_id, len(work.cards), work.chat_id),
        )
        for work in group
    ]
    reservations: list[Any] = [None] * len(group)
    if outbox is not None and len({w.chat_id for w in group}) == len(group):
        try:
            reservations = outbox.limiter.reserve_many([w.chat_id for w in group], max_wait=outbox.max_wait)
        except Exception:  # Redis trouble: each send then asks on its own (and fails alike)
            log.warning("limiter: group reservation failed; sending one by one", exc_info=True)
    sent: list[tuple[Work, int]] = []
    stop: float | None = None  # Telegram asked every sender to wait: the rest of the group waits too
    try:
        for work, (chat_id, text, markup), reservation in zip(group, messages, reservations, strict=True):
            if stop is not None:
                outcome.retry[work.digest_id] = stop
                continue
            try:
                if reservation is not None:
                    message = outbox.send_reserved(reservation, text, reply_markup=markup)  # type: ignore[union-attr]
                else:
                    message = send(chat_id, text, reply_markup=markup)
            except RetryAfter as exc:
                stop = max(1.0, exc.retry_after or 1.0)
                outcome.retry[work.digest_id] = stop
                continue
            except Exception as exc:  # noqa: BLE001 - one digest's trouble, settled as _send_one does
                _settle(work, exc, outcome, conn)
                continue
            sent.append((work, message["message_id"]))
    finally:
        if sent:
            conn.execute_raw(
                MARK_BRIEFS,
                {
                    "deliveries": [c.delivery_id for work, _ in sent for c in work.cards],
                    "delivery_messages": [mid for work, mid in sent for _ in work.cards],
                    "digests": [work.digest_id for work, _ in sent],
                    "messages": [mid for _, mid in sent],
                },
            )
            for work, _ in sent:
                outcome.sent[work.digest_id] = 1


def _send_one(work: Work, send: Callable[..., dict], outcome: Outcome, conn: _Writer) -> None:
    """A flat_scroll digest, its unsent posts in order, each recorded before the next is sent (or a
    brief one whose message went out before a crash: only its status is left to write)."""
    try:
        if work.style == "brief":  # its message is out (brief digests waiting for one go to _send_briefs)
            conn.execute(MARK_SENT, {"message_id": None, "digest_id": work.digest_id})
            return
        todo = [c for c in work.cards if c.delivery_id not in work.sent]
        count = 0
        for n, card in enumerate(todo):
            try:
                message = send(
                    work.chat_id, render.post_message(card), reply_markup=render.post_keyboard(card, work.chat_id)
                )
            except BadRequest as exc:  # this one post cannot be shown (Telegram refused it): skip it
                log.error("digest %s: post of delivery %s refused: %s", work.digest_id, card.delivery_id, exc)
                conn.execute(MARK_ERROR, {"digest_id": work.digest_id, "error": f"refused: {exc}"[:2000]})
                message = None
            count += message is not None
            params = {"message_id": message["message_id"] if message else None, "ids": [card.delivery_id]}
            if n == len(todo) - 1:
                conn.execute(MARK_LAST, {**params, "digest_message": None, "digest_id": work.digest_id})
            elif message is not None:
                conn.execute(MARK_DELIVERY, params)
        if not todo:
            conn.execute(MARK_SENT, {"message_id": None, "digest_id": work.digest_id})
        outcome.sent[work.digest_id] = count
    except Exception as exc:  # noqa: BLE001 - settled by kind
        _settle(work, exc, outcome, conn)


def _settle(work: Work, exc: Exception, outcome: Outcome, conn: _Writer) -> None:
    """What a failed send means for its digest."""
    if isinstance(exc, Forbidden):
        conn.execute(MARK_BLOCKED, {"user_id": work.user_id, "digest_id": work.digest_id,
                                    "error": f"blocked: {exc.description}"[:2000]})  # fmt: skip
        outcome.blocked.append(work.digest_id)
    elif isinstance(exc, RetryAfter):
        outcome.retry[work.digest_id] = max(1.0, exc.retry_after or 1.0)
    elif isinstance(exc, NetworkError | LimiterTimeout):
        log.warning("digest %s: %s; it will be retried", work.digest_id, exc)
        outcome.retry[work.digest_id] = float(getattr(exc, "retry_after", None) or 5.0)
    elif isinstance(exc, BadRequest):  # the brief message itself was refused: nothing to retry
        log.error("digest %s refused: %s", work.digest_id, exc)
        conn.execute(MARK_FAILED_RAW, {"digest_id": work.digest_id, "error": f"refused: {exc}"[:2000]})
        outcome.done.append(work.digest_id)
        outcome.refused.append(work.digest_id)
    else:  # a bug or an outage we did not foresee: the digest stays half-sent, the sweep retries
        log.error("digest %s: sending failed", work.digest_id, exc_info=exc)
        outcome.retry[work.digest_id] = 60.0


EMPTY_NOTE = "Nothing new since your last digest. I will send the next one at your delivery time."


def _tell_empty(digest_ids: list[int], send: Callable[..., dict]) -> None:
    """A digest asked for with /digest that found nothing: say so (a scheduled one stays silent)."""
    if not digest_ids:
        return
    with get_engine().connect() as conn:
        chats = (
            conn.execute(
                text(
                    "SELECT u.telegram_id FROM digests g JOIN users u ON u.id = g.user_id "
                    "WHERE g.id = ANY(:ids) AND g.manual"
                ),
                {"ids": digest_ids},
            )
            .scalars()
            .all()
        )
    for chat_id in chats:
        try:
            send(chat_id, EMPTY_NOTE)
        except Exception as exc:  # noqa: BLE001 - a courtesy message; the digest itself is settled
            log.info("empty-digest note to %s not sent: %s", chat_id, exc)


def _send_all(
    work: list[Work],
    send: Callable[..., dict],
    outcome: Outcome,
    threads: int,
    outbox: TelegramOutbox | None,
    shared: Connection,
) -> None:
    """Send the loaded digests from ``threads`` threads, each with a connection of its own for the
    records (one thread alone writes on ``shared``, the connection holding the locks): brief digests
    waiting for their message go ``GROUP`` at a time (:func:`_send_briefs`), the others (flat_scroll: a
    digest's messages in order, each recorded before the next) one by one."""
    briefs = [w for w in work if w.style == "brief" and w.digest_message is None]
    singles = [w for w in work if not (w.style == "brief" and w.digest_message is None)]
    batches: list[list[Work]] = [briefs[i : i + GROUP] for i in range(0, len(briefs), GROUP)]
    batches += [[w] for w in singles]
    batches.reverse()
    lock = threading.Lock()
    engine = get_engine()

    def drain(conn: Connection | None = None) -> None:
        own = conn is None
        writer = None if own else _Writer(conn)  # type: ignore[arg-type]
        try:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop()
                try:  # one connection per sending thread, opened again if it broke
                    if writer is None:
                        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                        writer = _Writer(conn)
                    if len(batch) > 1 or (batch[0].style == "brief" and batch[0].digest_message is None):
                        _send_briefs(batch, send, outcome, writer, outbox)
                    else:
                        _send_one(batch[0], send, outcome, writer)
                except Exception:  # no connection (database down, pool exhausted): try these digests later
                    log.exception("digests %s: could not be sent now", [w.digest_id for w in batch])
                    for item in batch:
                        if item.digest_id not in outcome.sent:
                            outcome.retry[item.digest_id] = 30.0
                    if own and conn is not None:  # a shared one is dropped by the caller if broken
                        conn.invalidate()
                        conn.close()
                        conn, writer = None, None
        finally:
            if own and conn is not None:
                conn.close()

    count = max(1, min(threads, len(batches)))
    if count == 1:
        drain(shared)
    else:
        pool = [threading.Thread(target=drain, name=f"digest-send-{n}") for n in range(count)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()


def warm_up(settings: Settings | None = None) -> None:
    """Open what the first send would: the Bot API client of the configured bot, and the shared limiter
    with its Redis connection and scripts loaded. Telegram workers call it before consuming."""
    from hnpal.telegram.client import BotAPI
    from hnpal.telegram.ratelimit import SendLimiter

    settings = settings or get_settings()
    limiter = SendLimiter.from_settings(settings)
    limiter.load_scripts()
    BotAPI.from_settings(settings)  # raises when no token is configured: the first send would too


def send_digests(
    *,
    digest_ids: list[int],
    send: Callable[..., dict] | None = None,
    threads: int = 8,
    settings: Settings | None = None,
) -> Outcome:
    """Send the given digests (reserved beforehand by ``service.prepare``; pending ones are prepared
    here) through ``send`` (default: a :class:`TelegramOutbox`'s). Returns what happened to each; nothing
    raises for one digest's trouble."""
    settings = settings or get_settings()
    send = send or TelegramOutbox().send
    outcome = Outcome()
    outbox = getattr(send, "__self__", None)
    if not (isinstance(outbox, TelegramOutbox) and getattr(send, "__func__", None) is TelegramOutbox.send):
        outbox = None  # a plain callable (tests wrap the outbox's send): one limiter call per message
    # one connection for the whole call: the pending check, the locks, the load (and the records, with one
    # sending thread)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        pending = list(
            conn.scalars(
                text("SELECT id FROM digests WHERE id = ANY(:ids) AND status = 'pending'"), {"ids": digest_ids}
            )
        )
        if pending:
            from hnpal.db.session import session_scope
            from hnpal.deliveries.service import prepare

            with session_scope() as session:
                reserved = prepare(session=session, digest_ids=pending, settings=settings)
            _tell_empty([d for d in pending if reserved.get(d) == 0], send)
        locked = _lock(conn, list(dict.fromkeys(digest_ids)), outcome)
        try:
            work = _load(conn, locked, settings, outcome) if locked else []
            _send_all(work, send, outcome, threads, outbox, conn)
        finally:
            try:
                _unlock(conn, locked)
            except Exception:  # the locks go with the connection
                log.warning("digest locks not released; dropping the connection", exc_info=True)
                conn.invalidate()
    log.debug("sent %s at %s", outcome.sent, datetime.now(UTC))
    return outcome
