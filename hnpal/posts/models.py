from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from hnpal.db.base import Base

PostType = Literal["story", "ask_hn", "show_hn", "poll", "job"]
POST_TYPES: tuple[PostType, ...] = get_args(PostType)
# pending: not crawled yet; queued: a crawl task is on its way; retrying: a transient failure, retry
# scheduled; fetched: content handed to the content writer; success: content stored; reused: a repost
# whose content was copied from an earlier post; failed: permanent (crawl_error says why); skipped:
# nothing to crawl (no URL and no text).
CrawlStatus = Literal["pending", "queued", "retrying", "fetched", "success", "reused", "failed", "skipped"]
CRAWL_STATUSES: tuple[CrawlStatus, ...] = get_args(CrawlStatus)
# pending: not summarized yet (or a transient failure, retried); done; failed: MAX_ATTEMPTS failures;
# skipped: nothing to summarize, or set aside by an operator; offline: made by the offline summarizer
# while the model refused the key; held: waiting for review; rejected: refused at review.
SummaryStatus = Literal["pending", "done", "failed", "skipped", "offline", "held", "rejected"]
SUMMARY_STATUSES: tuple[SummaryStatus, ...] = get_args(SummaryStatus)
MAX_CRAWL_ATTEMPTS = 3
MAX_SUMMARY_ATTEMPTS = 5  # failed runs of a post's default summary after which the sweep stops (hnpal quarantine)
# The words of a title (lower case; letters, digits, + and # kept, so "C++" and "C#" survive) and the
# post's domain: what interests, mutes and learned topics match against. PostgreSQL computes it.
KEYWORDS_SQL = (
    "array_remove(regexp_split_to_array(lower(title), '[^a-z0-9+#]+'), '') || ARRAY[coalesce(lower(domain), '')]"
)


class Post(Base):
    """One HN item. Content blobs live in RocksDB under key ``str(hn_id)``; the has_* flags say which."""

    __tablename__ = "posts"
    __table_args__ = (
        CheckConstraint("hn_id > 0", name="hn_id_positive"),
        CheckConstraint(f"type IN {POST_TYPES!r}", name="type_valid"),
        CheckConstraint("char_length(title) <= 500", name="title_length"),
        CheckConstraint("score >= 0", name="score_nonnegative"),
        CheckConstraint("comment_count >= 0", name="comment_count_nonnegative"),
        CheckConstraint("crawl_retry_count >= 0", name="crawl_retry_count_nonnegative"),
        CheckConstraint("summary_tokens IS NULL OR summary_tokens >= 0", name="summary_tokens_nonnegative"),
        CheckConstraint(f"crawl_status IN {CRAWL_STATUSES!r}", name="crawl_status_valid"),
        CheckConstraint(
            "is_crawl_success = (crawl_status IN ('success', 'reused'))", name="crawl_success_matches_status"
        ),
        CheckConstraint("repost_of_post_id IS NULL OR repost_of_post_id <> id", name="repost_not_self"),
        CheckConstraint(
            f"summary_status IN {SUMMARY_STATUSES!r}",
            name="summary_status_valid",
        ),
        CheckConstraint(
            "(topics IS NULL) = (topic_weights IS NULL) AND "
            "coalesce(cardinality(topics), 0) = coalesce(cardinality(topic_weights), 0)",
            name="topics_match_weights",
        ),
        # Posts whose topics are not computed yet (hnpal.relevance fills them in).
        Index("ix_posts_topics_missing", "id", postgresql_where=text("topics IS NULL")),
        # hn_id is UNIQUE, which already indexes it: the document's idx_hn_id would be a duplicate.
        Index("ix_posts_type", "type"),
        Index("ix_posts_crawl_status", "is_crawl_success", "crawl_retry_count"),
        Index("ix_posts_summarized_at", "summarized_at"),
        Index("ix_posts_hn_published_at", text("hn_published_at DESC")),
        Index("ix_posts_score", text("score DESC")),
        # Crawl dispatch and the content sweep read only the posts still in flight.
        Index(
            "ix_posts_crawl_pending",
            "crawl_status",
            "crawl_enqueued_at",
            postgresql_where=text("crawl_status IN ('pending', 'queued', 'retrying', 'fetched')"),
        ),
        # Repost detection: an earlier successful crawl of the same canonical URL.
        Index(
            "ix_posts_canonical_url",
            "canonical_url",
            "crawled_at",
            postgresql_where=text("is_crawl_success AND canonical_url IS NOT NULL"),
        ),
        Index("ix_posts_repost_of_post_id", "repost_of_post_id"),
        Index("ix_posts_keywords", "keywords", postgresql_using="gin"),
        # The summary sweep reads posts with content whose summary failed or never ran.
        Index(
            "ix_posts_summary_pending",
            "summary_status",
            postgresql_where=text("is_crawl_success AND summary_status IN ('pending', 'failed')"),
        ),
        # Posts summarized offline while the model refused its key: re-summarized once it works.
        Index("ix_posts_summary_offline", "id", postgresql_where=text("summary_status = 'offline'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hn_id: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    url: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(String(255))
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), Computed(KEYWORDS_SQL, persisted=True), nullable=False)
    author: Mapped[str | None] = mapped_column(String(255))
    score: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    comment_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    hn_published_at: Mapped[datetime | None]

    has_html: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    has_text: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    has_markdown: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # The submitter's own text of a post that also has a URL (RocksDB ``hn_text``): a Show HN's words.
    has_hn_text: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    is_crawl_success: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    crawl_retry_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    crawl_error: Mapped[str | None] = mapped_column(Text)
    crawled_at: Mapped[datetime | None]
    crawl_status: Mapped[CrawlStatus] = mapped_column(String(20), nullable=False, server_default="pending")
    crawl_enqueued_at: Mapped[datetime | None]
    canonical_url: Mapped[str | None] = mapped_column(Text)
    repost_of_post_id: Mapped[int | None] = mapped_column(ForeignKey("posts.id", ondelete="SET NULL"))
    # How the stored text was obtained: trafilatura, trafilatura_recall, body_text, pdf, hn_text, reused.
    extraction_method: Mapped[str | None] = mapped_column(String(30))
    comments_fetched_at: Mapped[datetime | None]

    summary: Mapped[str | None] = mapped_column(Text)
    summarized_at: Mapped[datetime | None]
    summary_model: Mapped[str | None] = mapped_column(String(50))
    summary_tokens: Mapped[int | None] = mapped_column(Integer)
    summary_prompt_type: Mapped[str | None] = mapped_column(String(50))
    # pending | done | failed (after the last retry; a sweep tries again) | skipped (nothing to summarize)
    summary_status: Mapped[SummaryStatus] = mapped_column(String(20), nullable=False, server_default="pending")
    summary_basis: Mapped[str | None] = mapped_column(String(30))
    summary_error: Mapped[str | None] = mapped_column(Text)
    # failed runs of the default summary; at MAX_SUMMARY_ATTEMPTS the sweep stops (hnpal quarantine)
    summary_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")

    # What the post is about (hnpal.relevance): topics with their probabilities, computed once per post;
    # NULL until then. topics_model names the model that computed them.
    topics: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    topic_weights: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    topics_model: Mapped[str | None] = mapped_column(String(40))
    # What the configured model (an OpenAI-compatible one) said the post is about, when it was summarized
    # with a key: at most three of the same topics, most important first; NULL when never asked, empty when
    # none fits. topics / topic_weights blend them in (hnpal.relevance.service), and keep them when a new
    # offline model recomputes the post.
    llm_topics: Mapped[list[str] | None] = mapped_column(ARRAY(Text))

    fetched_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)
