"""The sender's ``users`` row as updates arrive: created on first contact, profile refreshed, blocked when
they block the bot and active again when they come back."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from hnpal.users.models import User


def touch_user(session: Session, sender: dict[str, Any]) -> User:
    """The sender's user row: created on first contact, profile refreshed, back from 'blocked'."""
    values = {
        "telegram_id": sender["id"],
        "username": (sender.get("username") or None) and str(sender["username"])[:255],
        "first_name": (sender.get("first_name") or None) and str(sender["first_name"])[:255],
        "last_name": (sender.get("last_name") or None) and str(sender["last_name"])[:255],
        "last_interaction_at": datetime.now(UTC),
    }
    # One round trip: the row as it is after the upsert, loaded as the session's User.
    return session.scalars(_touch_statement(), values, execution_options={"populate_existing": True}).one()


@functools.cache
def _touch_statement() -> Any:
    """The upsert of :func:`touch_user`, built once (its parameters bound per call)."""
    columns = ("telegram_id", "username", "first_name", "last_name", "last_interaction_at")
    stmt = insert(User).values({c: bindparam(c) for c in columns})
    return stmt.on_conflict_do_update(
        index_elements=[User.telegram_id],
        set_={
            **{k: stmt.excluded[k] for k in columns[1:]},
            # writing to the bot again means they unblocked it (a paused user comes back paused)
            "status": _unblocked(),
        },
    ).returning(User)


def _unblocked() -> Any:
    """The status of a user who unblocked the bot: 'paused' if they had paused their digests, else
    'active'; any other status is kept."""
    return case(
        (User.status != "blocked", User.status),
        (User.paused_at.is_not(None), "paused"),
        else_="active",
    )


def membership(session: Session, member: dict[str, Any]) -> None:
    """The user blocked (kicked) or unblocked the bot in their private chat."""
    if (member.get("chat") or {}).get("type") != "private":
        return
    user_id = (member.get("from") or {}).get("id")
    status = (member.get("new_chat_member") or {}).get("status")
    if not isinstance(user_id, int):
        return
    if status == "kicked":
        session.execute(
            update(User).where(User.telegram_id == user_id, User.status != "deleted").values(status="blocked")
        )
    elif status == "member":
        session.execute(
            update(User).where(User.telegram_id == user_id, User.status == "blocked").values(status=_unblocked())
        )
