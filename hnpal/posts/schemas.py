"""Validated post data (hn_id > 0, title ≤ 500 characters, type enum, counts ≥ 0)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from hnpal.posts.models import POST_TYPES

INT_MAX = 2**31 - 1  # PostgreSQL integer columns (score, comment_count)
BIGINT_MAX = 2**63 - 1  # hn_id
PostType = Literal["story", "ask_hn", "show_hn", "poll", "job"]
assert set(PostType.__args__) == set(POST_TYPES)  # type: ignore[attr-defined]


class PostBase(BaseModel):
    hn_id: int = Field(gt=0, le=BIGINT_MAX)
    type: PostType
    title: str = Field(min_length=1, max_length=500)
    url: HttpUrl | None = None
    domain: str | None = Field(default=None, max_length=255)
    author: str | None = Field(default=None, max_length=255)
    score: int = Field(default=0, ge=0, le=INT_MAX)
    comment_count: int = Field(default=0, ge=0, le=INT_MAX)


class PostCreate(PostBase):
    hn_published_at: datetime | None = None


class PostRead(PostBase):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str | None = None  # stored as given; validated on the way in
    hn_published_at: datetime | None = None
    has_html: bool = False
    has_text: bool = False
    has_markdown: bool = False
    is_crawl_success: bool = False
    crawl_retry_count: int = Field(default=0, ge=0)
    crawl_error: str | None = None
    summary: str | None = None
    summarized_at: datetime | None = None
    fetched_at: datetime
    created_at: datetime
