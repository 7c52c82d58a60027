from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base


class Delivery(Base):
    """A post delivered (or reserved for delivery) to a user.

    ``message_id`` is NULL between the reservation and Telegram's answer: the row is written first,
    so a crash can repeat at most the one message in flight, never a whole digest.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("user_id", "post_id"),
        CheckConstraint("reaction IS NULL OR reaction IN ('up', 'down')", name="reaction_valid"),
        CheckConstraint("(reaction IS NULL) = (reacted_at IS NULL)", name="reacted_at_matches_reaction"),
        CheckConstraint("NOT is_saved OR saved_at IS NOT NULL", name="saved_at_when_saved"),
        Index("ix_deliveries_user_batch", "user_id", "batch_id"),
        Index("ix_deliveries_post_id", "post_id"),
        Index("ix_deliveries_saved", "user_id", "is_saved", postgresql_where=text("is_saved")),
        Index("ix_deliveries_reaction", "user_id", "reaction", postgresql_where=text("reaction IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False)

    message_id: Mapped[int | None] = mapped_column(BigInteger)
    batch_id: Mapped[str | None] = mapped_column(String(50))

    reaction: Mapped[str | None] = mapped_column(String(10))
    is_saved: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    is_read: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    delivered_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    reacted_at: Mapped[datetime | None]
    saved_at: Mapped[datetime | None]
