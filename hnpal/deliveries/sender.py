"""Sending reserved digests: the lean path used by the ``hnpal.digests.send*`` tasks.

A batch of digests is loaded with two statements (digests, users, reserved deliveries and posts in one;
the user-style summaries in the other), rendered in Python, and sent by a small thread pool (Telegram
answers take a round trip; one thread per digest keeps a digest's own messages in order). Each answer
is recorded at once, in autocommit: the delivery's ``message_id`` for every message, and the digest's
status with its last message. So a crash can repeat at most the message in flight of each digest, and a
redelivered or re-sent digest resumes with its unsent posts.

It is the only sending path (one digest per ``hnpal.digests.send`` task, many per ``send_batch``): it
avoids the ORM because at paid-broadcast rates (1000 messages/s) the per-message cost must stay near a
millisecond.
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
from hnpal.deliveries.service import SUMMARY_WAIT_ATTEMPTS, digest_heading, make_card, preferences
from hnpal.summaries.service import interest_variant
from hnpal.telegram import render
from hnpal.telegram.client import BadRequest, Forbidden, NetworkError, RetryAfter
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
       p.id AS post_id, p.hn_id, p.title, p.url, p.domain, p.score, p.comment_count, p.summary
FROM digests g
JOIN users u ON u.id = g.user_id
LEFT JOIN deliveries d ON d.user_id = g.user_id AND d.batch_id = g.batch_id
LEFT JOIN posts p ON p.id = d.post_id
WHERE g.id = ANY(:ids)
ORDER BY g.id, d.id
"""
)
STYLED_SQL = text(
    "SELECT post_id, style, variant, text FROM summaries "
    "WHERE post_id = ANY(:posts) AND style = ANY(:styles) AND variant = ANY(:variants)"
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


def _load(conn: Connection, digest_ids: list[int], settings: Settings, outcome: Outcome) -> list[Work]:
    rows = conn.execute(LOAD_SQL, {"ids": digest_ids}).mappings().all()
    digests: dict[int, list[Any]] = {}
    for row in rows:
        digests.setdefault(row["digest_id"], []).append(row)
    wanted: dict[int, tuple[str, str]] = {}  # digest id -> (summary style, variant)
    for digest_id, group in digests.items():
        prefs = preferences(group[0]["digest_preferences"])
        variant = interest_variant(group[0]["interests"]) if prefs.summary_style == "personalized" else ""
        wanted[digest_id] = (prefs.summary_style, variant)
    posts = sorted({r["post_id"] for r in rows if r["post_id"] is not None})
    styles = sorted({s for s, _ in wanted.values()})
    variants = sorted({v for _, v in wanted.values()})
    styled: dict[tuple[int, str, str], str] = {}
    if posts:
        for r in conn.execute(STYLED_SQL, {"posts": posts, "styles": styles, "variants": variants}):
            styled[(r.post_id, r.style, r.variant)] = r.text
    work = []
    for digest_id, group in digests.items():
        head = group[0]
        if head["status"] in ("sent", "empty", "failed"):
            outcome.done.append(digest_id)
            continue
        if head["user_status"] in ("blocked", "deleted"):
            conn.execute(MARK_FAILED, {"digest_id": digest_id, "error": f"user {head['user_status']}"})
            outcome.done.append(digest_id)
            continue
        reserved = [r for r in group if r["delivery_id"] is not None]
        if not reserved:
            conn.execute(MARK_EMPTY, {"digest_id": digest_id})
            outcome.done.append(digest_id)
            continue
        style, variant = wanted[digest_id]
        missing = [r["post_id"] for r in reserved if (r["post_id"], style, variant) not in styled]
        if missing and style != settings.summary_default_style and head["attempts"] < SUMMARY_WAIT_ATTEMPTS:
            conn.execute(MARK_WAITING, {"digest_id": digest_id})
            outcome.waiting[digest_id] = missing
            continue
        cards = [
            make_card(
                SimpleNamespace(id=r["delivery_id"], reaction=r["reaction"], is_saved=r["is_saved"]),
                SimpleNamespace(
                    **{k: r[k] for k in ("hn_id", "title", "url", "domain", "score", "comment_count")},
                    summary=r["summary"],
                ),
                styled.get((r["post_id"], style, variant)),
                position=n,
                total=len(reserved),
            )  # fmt: skip
            for n, r in enumerate(reserved, start=1)
        ]
        prefs_style = head["digest_style"] or preferences(head["digest_preferences"]).style
        heading = digest_heading_for(head, len(cards))
        work.append(
            Work(
                digest_id=digest_id,
                user_id=head["user_id"],
                chat_id=head["telegram_id"],
                style=prefs_style,
                heading=heading,
                cards=cards,
                sent={r["delivery_id"] for r in reserved if r["message_id"] is not None},
                digest_message=head["digest_message"],
            )
        )
    return work


def digest_heading_for(head: Any, count: int) -> str:
    class _D:  # the attributes digest_heading reads
        manual = head["manual"]
        batch_id = head["batch_id"]

    return digest_heading(_D, count)  # type: ignore[arg-type]


class _Writer:
    """One autocommit connection per sending thread, written through the DBAPI cursor: at a thousand
    messages a second the ORM/Core layers would cost more than the statement."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def execute(self, statement: Any, params: dict[str, Any]) -> None:
        self.cursor.execute(_PYFORMAT[statement], params)


def _pyformat(statement: Any) -> str:
    import re

    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", str(statement.text))


_PYFORMAT: dict[Any, str] = {}


def _register() -> None:
    for statement in (MARK_DELIVERY, MARK_SENT, MARK_LAST, MARK_BLOCKED, MARK_FAILED, MARK_ERROR):
        _PYFORMAT[statement] = _pyformat(statement)


_register()


LOCK_SPACE = 0x6469  # "di": advisory locks of digest sends (summaries use (post id, style hash))
RELOAD = (
    "SELECT g.status, g.message_id, "
    "ARRAY(SELECT id FROM deliveries WHERE id = ANY(%(ids)s) AND message_id IS NOT NULL) "
    "FROM digests g WHERE g.id = %(digest_id)s"
)


def _locked_send(work: Work, send: Callable[..., dict], outcome: Outcome, conn: _Writer) -> None:
    """One sender per digest at a time: a redelivered or swept task that starts while another is still
    sending the same digest backs off (the other one finishes it). The lock is session-level on this
    connection and released at the end (or with the connection, if the process dies)."""
    cursor = conn.cursor
    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, work.digest_id))
    if not cursor.fetchone()[0]:
        outcome.busy.append(work.digest_id)
        return
    try:
        # Re-read (in a statement that starts after the lock is ours) what is sent: the previous holder
        # may have sent more.
        cursor.execute(RELOAD, {"ids": [c.delivery_id for c in work.cards], "digest_id": work.digest_id})
        status, digest_message, sent = cursor.fetchone()
        work.sent |= set(sent or ())
        if status in ("sent", "empty", "failed"):
            outcome.done.append(work.digest_id)
            return
        work.digest_message = digest_message
        _send_one(work, send, outcome, conn)
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, work.digest_id))


def _send_one(work: Work, send: Callable[..., dict], outcome: Outcome, conn: _Writer) -> None:
    try:
        if work.style == "brief":
            if work.digest_message is None:
                message = send(
                    work.chat_id,
                    render.brief_message(work.cards, work.heading),
                    reply_markup=render.brief_keyboard(work.digest_id, len(work.cards), work.chat_id),
                )
                ids = [c.delivery_id for c in work.cards]
                mid = message["message_id"]
                conn.execute(
                    MARK_LAST, {"message_id": mid, "ids": ids, "digest_message": mid, "digest_id": work.digest_id}
                )
                outcome.sent[work.digest_id] = 1
            else:
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
    except Forbidden as exc:
        conn.execute(MARK_BLOCKED, {"user_id": work.user_id, "digest_id": work.digest_id,
                                    "error": f"blocked: {exc.description}"[:2000]})  # fmt: skip
        outcome.blocked.append(work.digest_id)
    except RetryAfter as exc:
        outcome.retry[work.digest_id] = max(1.0, exc.retry_after or 1.0)
    except (NetworkError, LimiterTimeout) as exc:
        log.warning("digest %s: %s; it will be retried", work.digest_id, exc)
        outcome.retry[work.digest_id] = float(getattr(exc, "retry_after", None) or 5.0)
    except BadRequest as exc:  # the brief message itself was refused: nothing to retry
        log.error("digest %s refused: %s", work.digest_id, exc)
        conn.execute(MARK_FAILED_RAW, {"digest_id": work.digest_id, "error": f"refused: {exc}"[:2000]})
        outcome.done.append(work.digest_id)
    except Exception:  # a bug or an outage we did not foresee: the digest stays half-sent, the sweep retries
        log.exception("digest %s: sending failed", work.digest_id)
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


def send_digests(
    *,
    digest_ids: list[int],
    send: Callable[..., dict],
    threads: int = 8,
    settings: Settings | None = None,
) -> Outcome:
    """Send the given digests (reserved beforehand by ``service.prepare``; pending ones are prepared
    here). Returns what happened to each; nothing raises for one digest's trouble."""
    settings = settings or get_settings()
    outcome = Outcome()
    engine = get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
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
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        work = _load(conn, digest_ids, settings, outcome)
    queue = list(reversed(work))
    lock = threading.Lock()

    def drain() -> None:
        conn = None
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    item = queue.pop()
                try:  # one connection per sending thread, opened again if it broke
                    if conn is None:
                        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                        writer = _Writer(conn)
                    _locked_send(item, send, outcome, writer)
                except Exception:  # no connection (database down, pool exhausted): try this digest later
                    log.exception("digest %s: could not be sent now", item.digest_id)
                    outcome.retry[item.digest_id] = 30.0
                    if conn is not None:
                        conn.invalidate()
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()

    count = max(1, min(threads, len(work)))
    if count == 1:
        drain()
    else:
        pool = [threading.Thread(target=drain, name=f"digest-send-{n}") for n in range(count)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    log.debug("sent %s at %s", outcome.sent, datetime.now(UTC))
    return outcome
