"""Validated memory items (type enum, content ≤ 5,000 characters, 0 ≤ confidence ≤ 1)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hnpal.memory.models import MAX_MEMORY_CHARS, MEMORY_SOURCES, MEMORY_TYPES

MemoryType = Literal[
    "interest",
    "preference",
    "work_context",
    "personal_context",
    "discussion_note",
    "fact",
    "opinion",
    "connection",
]
MemorySource = Literal["onboarding", "discussion", "reaction", "explicit"]
assert set(MemoryType.__args__) == set(MEMORY_TYPES)  # type: ignore[attr-defined]
assert set(MemorySource.__args__) == set(MEMORY_SOURCES)  # type: ignore[attr-defined]


class MemoryCreate(BaseModel):
    user_id: int = Field(gt=0)
    type: MemoryType
    content: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    source_type: MemorySource
    source_post_id: int | None = Field(default=None, gt=0)
    source_conversation_id: int | None = Field(default=None, gt=0)
    confidence: Decimal = Field(default=Decimal("1.0"), ge=0, le=1, decimal_places=2)


class MemoryRead(MemoryCreate):
    model_config = ConfigDict(from_attributes=True)

    id: int
    source_type: MemorySource | None = None  # type: ignore[assignment]
    active: bool = True
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime | None = None


class MemoryUpdate(BaseModel):
    active: bool | None = None
    content: str | None = Field(default=None, min_length=1, max_length=MAX_MEMORY_CHARS)
    confidence: Decimal | None = Field(default=None, ge=0, le=1, decimal_places=2)
