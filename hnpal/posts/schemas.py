"""Validated post data (hn_id > 0, title ≤ 500 characters, type enum, counts ≥ 0)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, HttpUrl

from hnpal.posts.models import PostType

INT_MAX = 2**31 - 1  # PostgreSQL integer columns (score, comment_count)
BIGINT_MAX = 2**63 - 1  # hn_id


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
