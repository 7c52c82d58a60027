"""Privacy: the audit trail, account deletion with a grace period, restore, purge and export.

* Every data action writes one ``audit_log`` row (:func:`audit`). ``actor_id`` is the internal user id
  and ``subject_ref`` a keyed hash (HMAC-SHA256) of the Telegram id; no Telegram id, name or memory
  content is ever written to an audit row, so what stays after a purge is anonymous (the internal id
  no longer names anyone once the row is gone; the hash can only be matched by someone who holds the
  key *and* is given the Telegram id, which is how an operator answers "was my data deleted?").
* :func:`delete_account` (``/deletemydata``) marks the user deleted at once: no digest goes out any
  more (unfinished ones are failed here, the sender and the scheduler skip deleted users), an active
  discussion ends, and every Redis key of the user is removed. :func:`restore_account` (``/start``
  within the grace period) undoes it. :func:`purge` (the ``hnpal.privacy.purge`` beat task) hard-deletes
  users deleted more than ``privacy_grace_days`` ago; PostgreSQL cascades the rest.
* :func:`collect` gathers everything HN Pal holds about a user; :func:`render` writes it as JSON or
  Markdown (``/export`` and ``hnpal user export``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.audit.models import AuditLog
from hnpal.conversations.models import Conversation, EndReason
from hnpal.db.session import rowcount
from hnpal.deliveries.models import Delivery, Digest
from hnpal.memory.models import Memory
from hnpal.posts.models import Post
from hnpal.review.models import QuarantinedMessage, ReviewItem, UserProtocol
from hnpal.state.store import StateStore
from hnpal.telegram.models import TelegramUpdate
from hnpal.usage.models import UserTokenUsage
from hnpal.users.models import User

log = logging.getLogger(__name__)

ExportFormat = Literal["json", "md"]
EXPORT_FORMATS: tuple[str, ...] = ("json", "md")
DELETED_DIGEST_ERROR = "stopped: the user deleted their account (/deletemydata)"
PURGE_BATCH = 200


# --- audit ------------------------------------------------------------------------------------------


def _salt(settings: Settings) -> bytes:
    if settings.privacy_audit_salt is not None:
        return settings.privacy_audit_salt.get_secret_value().encode()
    token = settings.telegram_token.get_secret_value() if settings.telegram_token else "hnpal-unconfigured"
    return hashlib.sha256(b"hnpal-audit:" + token.encode()).digest()


def subject_ref(telegram_id: int, settings: Settings | None = None) -> str:
    """The anonymized reference of a user in ``audit_log``: 64 hex characters of an HMAC of the id."""
    settings = settings or get_settings()
    return hmac.new(_salt(settings), str(int(telegram_id)).encode(), hashlib.sha256).hexdigest()


def audit(
    *,
    session: Session,
    action: str,
    user: User,
    actor_type: str = "user",
    details: dict[str, Any] | None = None,
    operator: str | None = None,
) -> None:
    """One audit row about ``user``. ``details`` must hold no personal data (counts, ids, formats).
    ``operator``: the console operator who acted (actor_type ``operator``)."""
    session.add(
        AuditLog(
            actor_type=actor_type,
            actor_id=user.id if actor_type == "user" else None,
            operator=operator,
            action=action,
            subject_user_id=user.id,
            subject_ref=subject_ref(user.telegram_id),
            details=details or {},
        )
    )


# --- deletion, restore, purge -----------------------------------------------------------------------


def deletion_date(user: User, settings: Settings | None = None) -> datetime | None:
    """When a deleted account is purged (None for an account that is not deleted)."""
    settings = settings or get_settings()
    if user.deleted_at is None:
        return None
    deleted_at = user.deleted_at if user.deleted_at.tzinfo else user.deleted_at.replace(tzinfo=UTC)
    return deleted_at + timedelta(days=settings.privacy_grace_days)


def end_active_discussion(*, session: Session, user: User, reason: EndReason) -> int:
    """End the user's open conversations and clear the PostgreSQL mirror of the DISCUSSION state (the
    caller clears the Redis key). Returns how many conversations were ended."""
    now = datetime.now(UTC)
    ended = rowcount(
        session.execute(
            update(Conversation)
            .where(Conversation.user_id == user.id, Conversation.ended_at.is_(None))
            .values(ended_at=func.greatest(Conversation.started_at, now), end_reason=reason)
        )
    )
    user.active_discussion_post_id = None
    return int(ended or 0)


def stop_deliveries(*, session: Session, user_id: int) -> int:
    """Fail the user's unfinished digests at once (a sender that picks one up finds it failed), and
    release their reserved but unsent posts, so a restored account still gets them in a later digest."""
    batches = list(
        session.scalars(
            update(Digest)
            .where(Digest.user_id == user_id, Digest.status.in_(("pending", "sending")))
            .values(status="failed", error=DELETED_DIGEST_ERROR)
            .returning(Digest.batch_id)
        )
    )
    if batches:
        session.execute(
            delete(Delivery).where(
                Delivery.user_id == user_id, Delivery.batch_id.in_(batches), Delivery.message_id.is_(None)
            )
        )
    return len(batches)


def forget_redis_keys(store: StateStore, telegram_id: int) -> int | None:
    """Delete every Redis key of the user (SCAN). None when Redis is down: every such key has a TTL of an
    hour at most, so it goes anyway; the failure is logged."""
    try:
        return store.delete_user_keys(telegram_id)
    except (redis.RedisError, OSError) as exc:
        log.warning("redis unavailable: keys of a deleted user are left to expire (at most 60 min): %s", exc)
        return None


def delete_account(*, session: Session, store: StateStore, user: User, operator: str | None = None) -> datetime:
    """``/deletemydata``: mark the account deleted now; returns the date it will be purged."""
    now = datetime.now(UTC)
    ended = end_active_discussion(session=session, user=user, reason="deleted")
    stopped = stop_deliveries(session=session, user_id=user.id)
    user.status = "deleted"
    user.deleted_at = now
    session.flush()
    keys = forget_redis_keys(store, user.telegram_id)
    audit(
        session=session,
        action="account.delete",
        user=user,
        actor_type="operator" if operator else "user",
        operator=operator,
        details={"digests_stopped": stopped, "discussions_ended": ended, "redis_keys_deleted": keys},
    )
    purge_on = deletion_date(user)
    assert purge_on is not None
    return purge_on


def restore_account(*, session: Session, user: User) -> None:
    """``/start`` within the grace period: the account is active again, with everything it had."""
    if user.status != "deleted":
        return
    deleted_at = user.deleted_at
    user.status = "active"
    user.deleted_at = None
    session.flush()
    audit(
        session=session,
        action="account.restore",
        user=user,
        details={"deleted_at": deleted_at.isoformat() if deleted_at else None},
    )


@dataclass
class Purged:
    users: int
    rows: dict[str, int]


def purge(*, session: Session, now: datetime | None = None, settings: Settings | None = None) -> Purged:
    """Hard-delete users deleted more than the grace period ago (a batch per call). The foreign keys
    cascade to deliveries, digests, conversations, memory and token usage; agent_calls and earlier audit
    rows keep their numbers with the user reference set to NULL. The user's handled Telegram updates go
    too (one still being handled stays; the sweep drops it after 7 days). One anonymized audit row per
    purged user stays."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=settings.privacy_grace_days)
    users = session.scalars(
        select(User)
        .where(User.status == "deleted", User.deleted_at < cutoff)
        .order_by(User.deleted_at)
        .limit(PURGE_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    totals: dict[str, int] = {}
    for user in users:
        for name, count in purge_user(session=session, user=user, settings=settings).items():
            totals[name] = totals.get(name, 0) + count
    session.flush()
    if users:
        log.info("purged %d deleted accounts past the %d-day grace period", len(users), settings.privacy_grace_days)
    return Purged(users=len(users), rows=totals)


def purge_user(*, session: Session, user: User, settings: Settings | None = None) -> dict[str, int]:
    """Hard-delete one user now (the database cascades) and leave one anonymized audit row. Returns how
    many rows of each kind went with them."""
    settings = settings or get_settings()
    counts = {
        name: int(session.scalar(select(func.count()).select_from(model).where(model.user_id == user.id)) or 0)
        for name, model in (
            ("deliveries", Delivery),
            ("digests", Digest),
            ("conversations", Conversation),
            ("memory", Memory),
            ("usage_days", UserTokenUsage),
        )
    }
    counts["telegram_updates"] = int(
        rowcount(
            session.execute(
                delete(TelegramUpdate).where(
                    TelegramUpdate.telegram_user_id == user.telegram_id,
                    TelegramUpdate.status.in_(("processed", "quarantined")),  # not one being handled (this one)
                )
            )
        )
        or 0
    )
    session.add(
        AuditLog(
            actor_type="system",
            actor_id=None,
            action="account.purge",
            subject_user_id=None,  # the row outlives the user
            subject_ref=subject_ref(user.telegram_id, settings),
            details={
                "deleted_at": user.deleted_at.isoformat() if user.deleted_at else None,
                "grace_days": settings.privacy_grace_days,
                "rows": counts,
            },
        )
    )
    session.delete(user)
    session.flush()
    return counts


# --- export -----------------------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def collect(*, session: Session, user: User) -> dict[str, Any]:
    """Everything HN Pal holds about ``user``, as plain JSON-able data."""
    deliveries = session.execute(
        select(Delivery, Post).join(Post, Post.id == Delivery.post_id).where(Delivery.user_id == user.id)
        .order_by(Delivery.delivered_at, Delivery.id)
    ).all()  # fmt: skip
    posts_by_id = {post.id: post for _, post in deliveries}
    conversations = session.scalars(
        select(Conversation).where(Conversation.user_id == user.id).order_by(Conversation.started_at, Conversation.id)
    ).all()
    # answers a person read before they went out (or instead), and messages kept while the user was silenced
    reviewed = session.scalars(
        select(ReviewItem).where(ReviewItem.user_id == user.id).order_by(ReviewItem.created_at, ReviewItem.id)
    ).all()
    quarantined = session.scalars(
        select(QuarantinedMessage)
        .where(QuarantinedMessage.user_id == user.id)
        .order_by(QuarantinedMessage.received_at, QuarantinedMessage.id)
    ).all()
    protocol = session.get(UserProtocol, user.id)
    missing = ({c.post_id for c in conversations} | {r.post_id for r in reviewed if r.post_id}) - set(posts_by_id)
    if missing:
        posts_by_id.update({p.id: p for p in session.scalars(select(Post).where(Post.id.in_(missing)))})
    memory = session.scalars(select(Memory).where(Memory.user_id == user.id).order_by(Memory.created_at, Memory.id))
    usage = session.scalars(
        select(UserTokenUsage).where(UserTokenUsage.user_id == user.id).order_by(UserTokenUsage.date)
    )

    def post_ref(post_id: int) -> dict[str, Any]:
        post = posts_by_id.get(post_id)
        if post is None:
            return {"hn_id": None, "title": None, "url": None}
        return {"hn_id": post.hn_id, "title": post.title, "url": post.url}

    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "profile": {
            "telegram_id": user.telegram_id,
            "username": user.username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "status": user.status,
            "joined_at": _iso(user.created_at),
            "last_interaction_at": _iso(user.last_interaction_at),
            "deleted_at": _iso(user.deleted_at),
            "memory_enabled": user.memory_enabled,
        },
        "preferences": {"interests": list(user.interests), "digest": dict(user.digest_preferences)},
        "saved_posts": [
            {**post_ref(d.post_id), "saved_at": _iso(d.saved_at)}
            for d, _ in sorted(
                (row for row in deliveries if row[0].is_saved), key=lambda row: row[0].saved_at or row[0].delivered_at
            )
        ],
        "deliveries": [
            {
                **post_ref(d.post_id),
                "delivered_at": _iso(d.delivered_at),
                "batch": d.batch_id,
                "reaction": d.reaction,
                "reacted_at": _iso(d.reacted_at),
                "saved": d.is_saved,
                "read": d.is_read,
            }
            for d, _ in deliveries
        ],
        "conversations": [
            {
                "post": post_ref(c.post_id),
                "started_at": _iso(c.started_at),
                "ended_at": _iso(c.ended_at),
                "end_reason": c.end_reason,
                "summary": c.summary,
                "messages": list(c.messages or []),
            }
            for c in conversations
        ],
        "memory": [
            {
                "type": m.type,
                "content": m.content,
                "source": m.source_type,
                "active": m.active,
                "confidence": float(m.confidence),
                "created_at": _iso(m.created_at),
                "post": post_ref(m.source_post_id) if m.source_post_id in posts_by_id else None,
            }
            for m in memory
        ],
        "reviewed_answers": [
            {
                "post": post_ref(r.post_id) if r.post_id else None,
                "question": r.question,
                "draft": r.draft,  # what the model wrote
                "held_because": r.reason,
                "status": r.status,  # pending, approved, edited or rejected
                "sent": r.final_text,  # what went out once a person decided
                "held_at": _iso(r.created_at),
                "decided_at": _iso(r.decided_at),
            }
            for r in reviewed
        ],
        "quarantined_messages": [
            {
                "text": q.text,
                "received_at": _iso(q.received_at),
                "status": q.status,  # held, processed, dropped or expired
                "expires_at": _iso(q.expires_at),
                "decided_at": _iso(q.decided_at),
            }
            for q in quarantined
        ],
        "protocol": None
        if protocol is None
        else {
            "under_review": protocol.under_review,
            "review_reason": protocol.review_reason,
            "silenced": protocol.silenced,
            "silence_reason": protocol.silence_reason,
            "silenced_until": _iso(protocol.silenced_until),
        },
        "llm_usage": [
            {
                "date": u.date.isoformat(),
                "input_tokens": u.total_input_tokens,
                "output_tokens": u.total_output_tokens,
                "cost_usd": str(u.total_cost_usd),
            }
            for u in usage
        ],
    }


def _md(value: Any) -> str:
    """Text safe to put in a Markdown line (no line breaks; markup characters escaped)."""
    text = " ".join(str(value).split()) if value is not None else "—"
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text or "—"


def _md_post(ref: dict[str, Any] | None) -> str:
    if not ref or ref.get("hn_id") is None:
        return "(a post no longer stored)"
    return f"{_md(ref['title'])} (https://news.ycombinator.com/item?id={ref['hn_id']})"


def render_markdown(data: dict[str, Any]) -> str:
    profile, prefs = data["profile"], data["preferences"]
    lines = [
        "# Your data at HN Pal",
        "",
        f"Exported {data['exported_at']}.",
        "",
        "## Profile",
        "",
        *(f"- {key.replace('_', ' ')}: {_md(value)}" for key, value in profile.items()),
        "",
        "## Preferences",
        "",
        f"- interests: {_md(', '.join(prefs['interests']) or '—')}",
        *(f"- {key.replace('_', ' ')}: {_md(value)}" for key, value in prefs["digest"].items()),
        "",
        f"## Saved posts ({len(data['saved_posts'])})",
        "",
        *(f"- {_md_post(s)}, saved {_md(s['saved_at'])}" for s in data["saved_posts"]),
        "",
        f"## Delivered posts and reactions ({len(data['deliveries'])})",
        "",
    ]
    for d in data["deliveries"]:
        marks = [m for m, on in (("👍", d["reaction"] == "up"), ("👎", d["reaction"] == "down"),
                                 ("saved", d["saved"]), ("read", d["read"])) if on]  # fmt: skip
        lines.append(f"- {_md(d['delivered_at'])}: {_md_post(d)}{' · ' + ', '.join(marks) if marks else ''}")
    lines += ["", f"## Conversations ({len(data['conversations'])})", ""]
    for c in data["conversations"]:
        lines += [f"### {_md_post(c['post'])}", "", f"Started {_md(c['started_at'])}, ended {_md(c['ended_at'])}."]
        if c["summary"]:
            lines += ["", f"Summary of the earlier part: {_md(c['summary'])}"]
        lines.append("")
        for message in c["messages"]:
            who = "You" if message.get("role") == "user" else "HN Pal"
            body = message.get("content", message.get("text", ""))
            lines.append(f"- **{who}**: {_md(body)}")
        lines.append("")
    lines += [f"## Memory ({len(data['memory'])})", ""]
    for m in data["memory"]:
        state = "" if m["active"] else " (forgotten)"
        lines.append(f"- {m['type']} (from {m['source'] or '—'}, {_md(m['created_at'])}){state}: {_md(m['content'])}")
    lines += ["", f"## Answers a person reviewed ({len(data['reviewed_answers'])})", ""]
    for r in data["reviewed_answers"]:
        lines += [
            f"### {_md_post(r['post']) if r['post'] else 'An answer'}, held {_md(r['held_at'])} ({_md(r['status'])})",
            "",
            f"- **You**: {_md(r['question'])}",
            f"- **The model's draft**: {_md(r['draft'])}",
            f"- **Held because**: {_md(r['held_because'])}",
            f"- **Sent**: {_md(r['sent'])}",
            "",
        ]
    lines += [f"## Messages kept while you were silenced ({len(data['quarantined_messages'])})", ""]
    lines += [f"- {_md(q['received_at'])} ({_md(q['status'])}): {_md(q['text'])}" for q in data["quarantined_messages"]]
    if data["protocol"]:
        lines += ["", "## Review and silence", ""]
        lines += [f"- {key.replace('_', ' ')}: {_md(value)}" for key, value in data["protocol"].items()]
    lines += ["", "## LLM usage per day", ""]
    lines += [
        f"- {u['date']}: {u['input_tokens']} input + {u['output_tokens']} output tokens, ${u['cost_usd']}"
        for u in data["llm_usage"]
    ]
    return "\n".join(lines).rstrip() + "\n"


def render(data: dict[str, Any], fmt: str) -> tuple[str, bytes]:
    """(file name, content) of an export in ``fmt`` (json or md)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use json or md")
    stamp = data["exported_at"][:10]
    if fmt == "json":
        body = json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"
    else:
        body = render_markdown(data)
    return f"hnpal-export-{stamp}.{fmt}", body.encode("utf-8")


def export(
    *, session: Session, user: User, fmt: str, actor_type: str = "user", operator: str | None = None
) -> tuple[str, bytes]:
    """The user's data as a file (name, bytes); the export is audited."""
    data = collect(session=session, user=user)
    filename, body = render(data, fmt)
    audit(
        session=session,
        action="data.export",
        user=user,
        actor_type=actor_type,
        operator=operator,
        details={
            "format": fmt,
            "bytes": len(body),
            **{
                key: len(data[key])
                for key in ("deliveries", "conversations", "memory", "reviewed_answers", "quarantined_messages")
            },
        },
    )
    return filename, body


PURGE_ROUNDS = 50  # batches per run of the beat's purge; the next run (hourly) goes on


def purge_expired() -> dict[str, Any]:
    """Hard-delete users deleted more than the grace period ago, batch by batch (each its own
    transaction), for at most PURGE_ROUNDS batches. Returns how many and what went with them."""
    from hnpal.db.session import session_scope

    users = 0
    rows: dict[str, int] = {}
    for _ in range(PURGE_ROUNDS):
        with session_scope() as session:
            done = purge(session=session)
        users += done.users
        for name, count in done.rows.items():
            rows[name] = rows.get(name, 0) + count
        if done.users < PURGE_BATCH:
            break
    return {"users": users, "rows": rows}
