from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

Reaction = Literal["up", "down"]
REACTIONS: tuple[Reaction, ...] = get_args(Reaction)


class Delivery(Base):
    """A post delivered (or reserved for delivery) to a user.

    ``message_id`` is NULL between the reservation and Telegram's answer: the row is written first,
    so a crash can repeat at most the one message in flight, never a whole digest.

    ``user_id`` and ``post_id`` name a user and a post without foreign keys (a check per reserved row
    cost a quarter of the selection): the selection locks the rows it reads instead, and triggers on
    ``users`` and ``posts`` delete a deleted row's deliveries (migration 0006). Only
    ``hnpal.deliveries.selection`` inserts rows here.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("user_id", "post_id"),
        CheckConstraint(f"reaction IS NULL OR reaction IN {REACTIONS!r}", name="reaction_valid"),
        CheckConstraint("(reaction IS NULL) = (reacted_at IS NULL)", name="reacted_at_matches_reaction"),
        CheckConstraint("NOT is_saved OR saved_at IS NOT NULL", name="saved_at_when_saved"),
        Index("ix_deliveries_user_batch", "user_id", "batch_id"),
        Index("ix_deliveries_saved", "user_id", "is_saved", postgresql_where=text("is_saved")),
        Index("ix_deliveries_reaction", "user_id", "reaction", postgresql_where=text("reaction IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)  # users.id, see above
    post_id: Mapped[int] = mapped_column(Integer, nullable=False)  # posts.id, see above

    message_id: Mapped[int | None] = mapped_column(BigInteger)
    batch_id: Mapped[str | None] = mapped_column(String(50))

    reaction: Mapped[Reaction | None] = mapped_column(String(10))
    # Why the selection picked the post: "topic:<t>", "learned:<t>", "word:<w>", "top" or NULL (by score).
    reason: Mapped[str | None] = mapped_column(String(120))
    is_saved: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    is_read: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    delivered_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    reacted_at: Mapped[datetime | None]
    saved_at: Mapped[datetime | None]


DigestStatus = Literal["pending", "sending", "sent", "empty", "failed"]
DIGEST_STATUSES: tuple[DigestStatus, ...] = get_args(DigestStatus)


class Digest(Base):
    """One digest of one user for one batch (``YYYY-MM-DD-morning|evening``, or ``YYYY-Www`` weekly).

    UNIQUE (user_id, batch_id) makes "no digest yet for this batch" a constraint: the scheduler inserts
    the row and fans out only what it inserted, so two beats or a re-run never send a batch twice. The
    posts chosen for it are the ``deliveries`` rows with its batch_id (reserved before sending).
    """

    __tablename__ = "digests"
    __table_args__ = (
        UniqueConstraint("user_id", "batch_id"),
        CheckConstraint(f"status IN {DIGEST_STATUSES!r}", name="status_valid"),
        CheckConstraint("post_count >= 0", name="post_count_nonnegative"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        Index("ix_digests_user_created", "user_id", text("created_at DESC")),
        Index("ix_digests_unfinished", "status", postgresql_where=text("status IN ('pending', 'sending')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    batch_id: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[DigestStatus] = mapped_column(String(20), nullable=False, server_default="pending")
    style: Mapped[str | None] = mapped_column(String(20))
    post_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    manual: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    message_id: Mapped[int | None] = mapped_column(BigInteger)  # the brief digest's one message
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    sent_at: Mapped[datetime | None]


class UserAffinity(Base):
    """A user's net 👍/👎 for a domain or a title word (``kind`` domain | topic): +1 per 👍 and -1 per 👎 on
    delivered posts with that domain or word. Kept by row triggers on ``deliveries`` (migration 0007), so
    the digest selection reads these few rows instead of summing every reaction of the user's history."""

    __tablename__ = "user_affinity"
    __table_args__ = (
        CheckConstraint("kind IN ('domain', 'topic')", name="kind_valid"),
        # the rows the selection counts (a reacted domain; a title word with two or more net reactions), with
        # their values: a long history's many words at +-1 are not read (migration 0008)
        Index(
            "ix_user_affinity_counted",
            "user_id",
            postgresql_include=["kind", "key", "weight"],
            postgresql_where=text("weight <> 0 AND (kind = 'domain' OR abs(weight) >= 2)"),
        ),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    weight: Mapped[int] = mapped_column(Integer, nullable=False)
