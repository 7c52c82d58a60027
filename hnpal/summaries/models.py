from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

SUMMARY_STYLES = ("basic", "technical", "business", "concise", "personalized", "comments")
# What a summary was made from: the article, the post's own text (Ask/Show HN...), or only the title and
# the comments (content missing, paywalled or unusable: the summary says so).
SUMMARY_BASES = ("article", "post_text", "title_and_comments", "comments")
# Summaries read from the thread besides a comment summary: any style made for a post with no readable article
# (an Ask HN's text beside its thread, or the title and the thread). They are made again as the thread grows.
THREAD_BASES = ("title_and_comments", "post_text")


class Summary(Base):
    """A generated summary.

    ``variant`` is '' for every style but ``personalized``, whose input is an interest set: there it is
    the hash of that set, so a personalized summary is cached per interest set, not per user.
    """

    __tablename__ = "summaries"
    __table_args__ = (
        UniqueConstraint("post_id", "style", "variant"),
        CheckConstraint(f"style IN {SUMMARY_STYLES!r}", name="style_valid"),
        CheckConstraint("(style = 'personalized') = (variant <> '')", name="variant_only_personalized"),
        CheckConstraint("input_tokens >= 0 AND output_tokens >= 0", name="tokens_nonnegative"),
        CheckConstraint("char_length(text) > 0", name="text_not_empty"),
        CheckConstraint(f"basis IN {SUMMARY_BASES!r}", name="basis_valid"),
        CheckConstraint("refresh_count >= 0", name="refresh_count_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), nullable=False)
    style: Mapped[str] = mapped_column(String(20), nullable=False)
    variant: Mapped[str] = mapped_column(String(64), nullable=False, server_default="")
    text: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(String(50), nullable=False)
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    basis: Mapped[str] = mapped_column(String(30), nullable=False, server_default="article")
    # comments style: the post's comment count when summarized, and how often it was refreshed since.
    source_comment_count: Mapped[int | None] = mapped_column(Integer)
    refresh_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
