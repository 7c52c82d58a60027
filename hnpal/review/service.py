"""Human review and the silence protocol.

Review:

* :func:`answer_hold_reason` / :func:`summary_hold_reason` say whether a fresh model text is held, by the
  policies ``HNPAL_REVIEW_ANSWERS`` (off | protocol | all) and ``HNPAL_REVIEW_SUMMARIES`` (off | flagged |
  all). A held answer is stored as a ``review_items`` row (one per conversation message: UNIQUE) and the
  reader gets :data:`HOLD_NOTICE`; a held summary is stored, but its post is not ``summarized_at`` (so no
  digest selects it) until someone decides.
* :func:`decide` records a decision (approve, edit with tags, reject) in one transaction with the message
  it sends (a ``review_sends`` row) and an ``audit_log`` row naming the operator. The caller enqueues
  ``hnpal.review.send`` after the commit; :func:`send` claims the row (one sender at a time; a claim older
  than ``HNPAL_REVIEW_SEND_STALE`` is taken over) and records it sent, so the reader gets it once.
* :func:`sweep` (beat, every minute) decides items past ``HNPAL_REVIEW_TIMEOUT`` by the policy's default,
  re-enqueues sends left pending or claimed too long, and expires quarantined messages after 7 days.

Silence protocol: a silenced user's private messages are kept in ``quarantine_messages`` for 7 days
(:func:`quarantine`), no model is called for them, and they hear one fixed notice per silence
(:data:`SILENCED_NOTICE`). :func:`unsilence` drops them or has them handled in order
(``hnpal.review.release``). Every change is audited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.audit.models import AuditLog
from hnpal.db.session import rowcount
from hnpal.errors import HNPalError
from hnpal.review.models import EditTag, QuarantinedMessage, ReviewItem, ReviewSend, ReviewStatus, UserProtocol
from hnpal.users.models import User

log = logging.getLogger(__name__)

HOLD_NOTICE = "⏳ I'm checking this answer before I send it; it will arrive here shortly."
REJECT_FALLBACK = (
    "Sorry, I couldn't give you a good answer to that one. Try asking it another way, or pick another post to discuss."
)
SILENCED_NOTICE = (
    "Your messages are on hold for now: the HN Pal team will look at them. Your digests continue as usual."
)
QUARANTINE_DAYS = 7
MAX_TEXT = 4000
ALLOWED_WHILE_SILENCED = ("deletemydata", "export")  # privacy rights are never held


class ReviewError(HNPalError, ValueError):
    """A decision that cannot be made (the message says why, for the operator)."""


# --- policies -----------------------------------------------------------------------------------------


def protocol(conn: Connection | Session, user_id: int) -> UserProtocol | None:
    return conn.execute(select(UserProtocol).where(UserProtocol.user_id == user_id)).scalar_one_or_none()


def answer_hold_reason(conn: Connection | Session, user_id: int, settings: Settings | None = None) -> str | None:
    """Why an answer to this user is held, or None when it goes out at once."""
    settings = settings or get_settings()
    if settings.review_answers == "off":
        return None
    if settings.review_answers == "all":
        return "policy: every answer is reviewed"
    row = conn.execute(
        select(UserProtocol.under_review, UserProtocol.review_reason).where(UserProtocol.user_id == user_id)
    ).first()
    if row is not None and row.under_review:
        return f"user under review: {row.review_reason or 'no reason given'}"
    return None


def summary_hold_reason(
    conn: Connection, *, basis: str, text_: str, score: int, model: str, settings: Settings | None = None
) -> str | None:
    """Why a post's default summary is held, or None. Flagged: an honest-summary flag (made from the title
    and comments only: no article, a paywall or a failed extraction), a score above the threshold, or a
    model none of whose summaries a person has approved yet."""
    settings = settings or get_settings()
    if settings.review_summaries == "off":
        return None
    if settings.review_summaries == "all":
        return "policy: every summary is reviewed"
    reasons = []
    if basis == "title_and_comments":
        reasons.append("no article text (title-only, paywall or failed extraction)")
    if score > settings.review_score_threshold:
        reasons.append(f"score {score} above {settings.review_score_threshold}")
    seen = conn.execute(SEEN_MODEL, {"m": model[:64]}).scalar()
    if not seen:
        reasons.append(f"model {model} not seen before (no summary of it approved yet)")
    return "; ".join(reasons) or None


# A model is "seen" once a person approved (or edited) one of its summaries.
SEEN_MODEL = text(
    "SELECT EXISTS (SELECT 1 FROM review_items WHERE kind = 'summary' AND model = :m "
    "AND status IN ('approved', 'edited'))"
)


def _due(settings: Settings) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=settings.review_timeout)


# --- holding ------------------------------------------------------------------------------------------


def hold_answer(
    conn: Connection, *, user_id: int, chat_id: int, reason: str, draft: str, question: str, prompt: list[Any],
    results: list[Any], conversation_id: int | None = None, message_index: int | None = None,
    post_id: int | None = None, settings: Settings | None = None,
) -> int | None:  # fmt: skip
    """Store a held answer; its id, or None when this message already has one (a redelivered task)."""
    settings = settings or get_settings()
    values = {
        "kind": "answer", "reason": reason[:2000], "user_id": user_id, "chat_id": chat_id, "post_id": post_id,
        "conversation_id": conversation_id, "message_index": message_index, "question": question[:MAX_TEXT],
        "draft": draft, "prompt": _prompt_json(prompt), "model": (results[-1].model if results else None),
        "input_tokens": sum(r.input_tokens for r in results), "output_tokens": sum(r.output_tokens for r in results),
        "cost_usd": sum((r.cost_usd for r in results), Decimal(0)), "due_at": _due(settings),
    }  # fmt: skip
    stmt = insert(ReviewItem).values(values).on_conflict_do_nothing().returning(ReviewItem.id)
    item_id = conn.execute(stmt).scalar()
    if item_id is not None:
        log.info("answer to user %s held for review (item %s): %s", user_id, item_id, reason)
    return item_id


def held_answer_exists(conn: Connection, conversation_id: int, message_index: int) -> bool:
    return bool(
        conn.execute(
            select(func.count())
            .select_from(ReviewItem)
            .where(ReviewItem.conversation_id == conversation_id, ReviewItem.message_index >= message_index)
        ).scalar()
    )


def hold_summary(
    conn: Connection, *, post_id: int, summary_id: int, reason: str, draft: str, prompt: list[Any], model: str,
    input_tokens: int, output_tokens: int, cost_usd: Decimal, settings: Settings | None = None,
) -> int | None:  # fmt: skip
    settings = settings or get_settings()
    values = {
        "kind": "summary", "reason": reason[:2000], "post_id": post_id, "summary_id": summary_id, "draft": draft,
        "prompt": _prompt_json(prompt), "model": model[:64], "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cost_usd": cost_usd, "due_at": _due(settings),
    }  # fmt: skip
    stmt = insert(ReviewItem).values(values).on_conflict_do_nothing().returning(ReviewItem.id)
    return conn.execute(stmt).scalar()


def _prompt_json(prompt: list[Any]) -> list[dict[str, str]]:
    out = []
    for message in prompt or []:
        if isinstance(message, dict):
            out.append({"role": str(message.get("role", "")), "content": str(message.get("content", ""))[:100_000]})
    return out


# --- deciding -----------------------------------------------------------------------------------------


@dataclass
class Decision:
    item_id: int
    status: ReviewStatus
    send_id: int | None


def tag_names(session: Session) -> list[str]:
    return list(session.scalars(select(EditTag.name).order_by(EditTag.id)))


def decide(
    session: Session, *, item_id: int, operator: str, action: str, edited: str | None = None,
    tags: list[str] | None = None, actor_type: str = "operator",
) -> Decision:  # fmt: skip
    """Approve, edit or reject a pending item, in the caller's transaction, with the send it causes and
    the audit row. Raises ReviewError for a decision that cannot be made (already decided, no tag...)."""
    if action not in ("approve", "edit", "reject"):
        raise ReviewError(f"unknown action {action!r}")
    item = session.execute(select(ReviewItem).where(ReviewItem.id == item_id).with_for_update()).scalar_one_or_none()
    if item is None:
        raise ReviewError("no such review item")
    if item.status != "pending":
        raise ReviewError(f"this item was already decided ({item.status} by {item.decided_by})")
    tags = [t for t in dict.fromkeys(tags or []) if t]
    final: str | None
    status: ReviewStatus
    if action == "edit":
        final = (edited or "").replace("\r\n", "\n").strip()
        if not final:
            raise ReviewError("an edit needs the corrected text")
        if len(final) > MAX_TEXT:
            raise ReviewError(f"the text is longer than {MAX_TEXT} characters")
        if not tags:
            raise ReviewError("choose at least one edit tag")
        known = set(tag_names(session))
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise ReviewError(f"unknown edit tag(s): {', '.join(unknown)}")
        status = "edited"
    elif action == "approve":
        final, status, tags = item.draft, "approved", []
    else:
        final, status, tags = None, "rejected", []
    item.status, item.final_text, item.tags = status, final, tags
    item.decided_at, item.decided_by = datetime.now(UTC), operator
    send_id = None
    if item.kind == "answer":
        outgoing = final if final is not None else REJECT_FALLBACK
        send_id = session.execute(
            insert(ReviewSend)
            .values(review_id=item.id, chat_id=item.chat_id, text=outgoing)
            .on_conflict_do_nothing()
            .returning(ReviewSend.id)
        ).scalar()
        if item.conversation_id is not None and item.message_index is not None:
            _record_answer(session, item, outgoing)
    else:
        _publish_summary(session, item, final)
    session.add(
        AuditLog(
            actor_type=actor_type, action=f"review.{status}", subject_user_id=item.user_id, operator=operator,
            details={"item": item.id, "kind": item.kind, "tags": tags, "model": item.model},
        )
    )  # fmt: skip
    session.flush()
    return Decision(item.id, status, send_id)


@dataclass
class _Spent:
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


def _record_answer(session: Session, item: ReviewItem, outgoing: str) -> None:
    """What the reader gets goes in the conversation (the next answer's history), with the draft's cost."""
    from hnpal.conversations.messages import append_assistant_message

    assert item.conversation_id is not None and item.message_index is not None  # the caller checked
    spent = _Spent(item.model or "", item.input_tokens, item.output_tokens, item.cost_usd)
    append_assistant_message(
        conn=session.connection(), conversation_id=item.conversation_id, text=outgoing,
        reply_to=item.message_index, results=[spent],
    )  # fmt: skip


def _publish_summary(session: Session, item: ReviewItem, final: str | None) -> None:
    """Approved or edited: the summary (and the post's copy) take the final text and the post becomes
    selectable (``summarized_at`` now: the next digests pick it). Rejected: the post is not delivered."""
    if final is None:
        session.execute(
            text("UPDATE posts SET summary_status = 'rejected' WHERE id = :p AND summary_status = 'held'"),
            {"p": item.post_id},
        )
        return
    if item.summary_id is not None:
        session.execute(
            text("UPDATE summaries SET text = :t, updated_at = now() WHERE id = :s"), {"t": final, "s": item.summary_id}
        )
    session.execute(
        text(
            "UPDATE posts SET summary = :t, summarized_at = now(), summary_status = 'done' "
            "WHERE id = :p AND summary_status = 'held'"
        ),
        {"t": final, "p": item.post_id},
    )


# --- sending --------------------------------------------------------------------------------------------

CLAIM = text(
    """
    UPDATE review_sends SET status = 'sending', claimed_at = now(), attempts = attempts + 1
    WHERE id = :id AND (status = 'pending'
                        OR (status = 'sending' AND claimed_at < now() - make_interval(secs => :stale)))
    RETURNING chat_id, text
    """
)


def send(send_id: int, *, outbox: Any = None, settings: Settings | None = None) -> str:
    """Send one decided text, once: claim the row, send, record. Returns sent, taken (another sender holds
    it, or it was sent) or failed (Telegram refused it for good)."""
    from hnpal.db.session import get_engine
    from hnpal.telegram.client import Forbidden

    settings = settings or get_settings()
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        claimed = conn.execute(CLAIM, {"id": send_id, "stale": settings.review_send_stale}).first()
        if claimed is None:
            return "taken"
        if outbox is None:
            from hnpal.telegram.outbox import TelegramOutbox

            outbox = TelegramOutbox(reply=True)
        from hnpal.conversations.window import split_message
        from hnpal.telegram.render import esc

        message_id = None
        try:
            for part in split_message(claimed.text or "…"):
                answer = outbox.send(claimed.chat_id, esc(part))
                if message_id is None and isinstance(answer, dict):
                    message_id = answer.get("message_id")
        except Forbidden as exc:
            conn.execute(
                update(ReviewSend).where(ReviewSend.id == send_id).values(status="failed", error=str(exc)[:2000])
            )
            return "failed"
        except Exception:
            # Nothing went out (a 429 or network error before the first part): back to pending at once.
            conn.execute(
                update(ReviewSend).where(ReviewSend.id == send_id, ReviewSend.status == "sending")
                .values(status="pending")
            )  # fmt: skip
            raise
        conn.execute(
            update(ReviewSend)
            .where(ReviewSend.id == send_id)
            .values(status="sent", sent_at=func.now(), message_id=message_id, error=None)
        )
    return "sent"


# --- sweeps ------------------------------------------------------------------------------------------


@dataclass
class Swept:
    decided: list[int]
    sends: list[int]
    expired: int


def sweep(session: Session, *, settings: Settings | None = None, limit: int = 500) -> Swept:
    """Decide items past their time by the policy's default; list sends to enqueue again; expire old
    quarantined messages. The caller enqueues ``hnpal.review.send`` for ``sends`` after commit."""
    settings = settings or get_settings()
    due = list(
        session.execute(
            select(ReviewItem.id, ReviewItem.kind)
            .where(ReviewItem.status == "pending", ReviewItem.due_at < func.now())
            .order_by(ReviewItem.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    decided, sends = [], []
    for item_id, kind in due:
        action = settings.review_timeout_summary if kind == "summary" else settings.review_timeout_answer
        decision = decide(session, item_id=item_id, operator="timeout", action=action, actor_type="system")
        decided.append(item_id)
        if decision.send_id is not None:
            sends.append(decision.send_id)
    sends += session.scalars(
        select(ReviewSend.id)
        .where(
            ((ReviewSend.status == "pending") & (ReviewSend.created_at < func.now() - timedelta(seconds=30)))
            | (
                (ReviewSend.status == "sending")
                & (ReviewSend.claimed_at < func.now() - timedelta(seconds=settings.review_send_stale))
            )
        )
        .order_by(ReviewSend.id)
        .limit(limit)
    ).all()
    expired = rowcount(
        session.execute(
            update(QuarantinedMessage)
            .where(QuarantinedMessage.status == "held", QuarantinedMessage.expires_at < func.now())
            .values(status="expired", decided_at=func.now())
        )
    )
    return Swept(decided, sorted(set(sends)), int(expired or 0))


# --- the silence protocol ------------------------------------------------------------------------------


def _protocol_row(session: Session, user_id: int) -> UserProtocol:
    session.execute(insert(UserProtocol).values(user_id=user_id).on_conflict_do_nothing())
    return session.execute(select(UserProtocol).where(UserProtocol.user_id == user_id).with_for_update()).scalar_one()


def _audit(session: Session, *, action: str, user_id: int, operator: str, details: dict[str, Any]) -> None:
    session.add(
        AuditLog(actor_type="operator", action=action, subject_user_id=user_id, operator=operator, details=details)
    )


def set_review(session: Session, *, user_id: int, operator: str, on: bool, reason: str = "") -> None:
    row = _protocol_row(session, user_id)
    row.under_review, row.review_reason = on, (reason.strip()[:500] or None) if on else None
    row.updated_by, row.updated_at = operator, datetime.now(UTC)
    _audit(session, action="protocol.review_on" if on else "protocol.review_off", user_id=user_id,
           operator=operator, details={"reason": row.review_reason})  # fmt: skip


def silence(session: Session, *, user_id: int, operator: str, reason: str, until: datetime | None = None) -> None:
    reason = reason.strip()
    if not reason:
        raise ReviewError("silencing needs a reason")
    if until is not None and until <= datetime.now(UTC):
        raise ReviewError("the end of a silence must be in the future")
    row = _protocol_row(session, user_id)
    row.silenced, row.silence_reason, row.silenced_until, row.notice_sent = True, reason[:500], until, False
    row.updated_by, row.updated_at = operator, datetime.now(UTC)
    _audit(session, action="protocol.silence", user_id=user_id, operator=operator,
           details={"reason": row.silence_reason, "until": until.isoformat() if until else None})  # fmt: skip


def unsilence(session: Session, *, user_id: int, operator: str, held: str) -> int:
    """End a silence; ``held`` is ``process`` (the caller enqueues ``hnpal.review.release`` after commit)
    or ``drop``. Returns how many quarantined messages that concerns."""
    if held not in ("process", "drop"):
        raise ReviewError("choose whether to process or drop the held messages")
    row = _protocol_row(session, user_id)
    row.silenced, row.silenced_until, row.notice_sent = False, None, False
    row.updated_by, row.updated_at = operator, datetime.now(UTC)
    count = session.scalar(
        select(func.count())
        .select_from(QuarantinedMessage)
        .where(QuarantinedMessage.user_id == user_id, QuarantinedMessage.status == "held")
    )
    if held == "drop":
        session.execute(
            update(QuarantinedMessage)
            .where(QuarantinedMessage.user_id == user_id, QuarantinedMessage.status == "held")
            .values(status="dropped", decided_by=operator, decided_at=func.now())
        )
    _audit(session, action="protocol.unsilence", user_id=user_id, operator=operator,
           details={"held": held, "messages": int(count or 0)})  # fmt: skip
    return int(count or 0)


def silenced(session: Session, user_id: int) -> UserProtocol | None:
    """The user's protocol row when they are silenced now (a silence past its end is over)."""
    return session.execute(
        select(UserProtocol).where(
            UserProtocol.user_id == user_id,
            UserProtocol.silenced,
            (UserProtocol.silenced_until.is_(None)) | (UserProtocol.silenced_until > func.now()),
        )
    ).scalar_one_or_none()


def quarantine(session: Session, *, user: User, update_id: int | None, message: dict[str, Any]) -> bool:
    """Keep a silenced user's message; True when the one notice of this silence should be sent now."""
    text_ = message.get("text") if isinstance(message.get("text"), str) else None
    session.execute(
        insert(QuarantinedMessage)
        .values(
            user_id=user.id, update_id=update_id, payload={"update_id": update_id, "message": message},
            text=text_[:MAX_TEXT] if text_ else None,
            expires_at=datetime.now(UTC) + timedelta(days=QUARANTINE_DAYS),
        )
        .on_conflict_do_nothing()
    )  # fmt: skip
    notice = session.execute(
        update(UserProtocol)
        .where(UserProtocol.user_id == user.id, UserProtocol.notice_sent.is_(False))
        .values(notice_sent=True)
        .returning(UserProtocol.user_id)
    ).scalar()
    log.info("message of silenced user %s quarantined", user.id)
    return notice is not None


def next_held(session: Session, user_id: int) -> QuarantinedMessage | None:
    """The user's oldest held message, locked (one releaser at a time)."""
    return session.execute(
        select(QuarantinedMessage)
        .where(QuarantinedMessage.user_id == user_id, QuarantinedMessage.status == "held")
        .order_by(QuarantinedMessage.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
