"""Validated memory items (type enum, content ≤ 5,000 characters, 0 ≤ confidence ≤ 1)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from hnpal.memory.models import MAX_MEMORY_CHARS, MemorySource, MemoryType


class MemoryCreate(BaseModel):
    user_id: int = Field(gt=0)
    type: MemoryType
    content: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    source_type: MemorySource
    source_post_id: int | None = Field(default=None, gt=0)
    source_conversation_id: int | None = Field(default=None, gt=0)
    confidence: Decimal = Field(default=Decimal("1.0"), ge=0, le=1, decimal_places=2)
