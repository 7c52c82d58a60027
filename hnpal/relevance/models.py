from __future__ import annotations

from datetime import datetime

from sqlalchemy import REAL, CheckConstraint, ForeignKey, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base


class InterestTopics(Base):
    """The topics an interest phrase means (computed once per distinct phrase, shared by every user)."""

    __tablename__ = "interest_topics"
    __table_args__ = (
        CheckConstraint("cardinality(topics) = cardinality(weights)", name="same_length"),
        CheckConstraint("char_length(phrase) <= 200", name="phrase_length"),
    )

    phrase: Mapped[str] = mapped_column(Text, primary_key=True)
    topics: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    weights: Mapped[list[float]] = mapped_column(ARRAY(REAL), nullable=False)
    model: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


class UserTopicAffinity(Base):
    """A user's 👍/👎 per topic, each weighted by the square of how much the reacted post is about it:
    ``liked`` and ``disliked`` apart, ``weight`` their difference (kept by triggers on ``deliveries``,
    migrations 0009, 0016 and 0017)."""

    __tablename__ = "user_topic_affinity"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    weight: Mapped[float] = mapped_column(REAL, nullable=False)
    liked: Mapped[float] = mapped_column(REAL, server_default="0", nullable=False)
    disliked: Mapped[float] = mapped_column(REAL, server_default="0", nullable=False)
    # the log-likelihood ratio that this is the topic the user reads for (migration 0017)
    evidence: Mapped[float] = mapped_column(REAL, server_default="0", nullable=False)
