"""Validated user data (the data-model document's rules: telegram_id > 0, ≤ 50 interests, enums)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hnpal.users.models import USER_STATUSES

UserStatus = Literal["active", "paused", "blocked", "deleted"]
assert set(UserStatus.__args__) == set(USER_STATUSES)  # type: ignore[attr-defined]

Interest = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class DigestPreferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: Literal["brief", "flat_scroll"] = "flat_scroll"
    frequency: Literal["daily", "twice_daily", "weekly"] = "daily"
    time: str = "07:00"
    max_posts: int = Field(default=10, ge=1, le=30)

    @field_validator("time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("time must be HH:MM (24-hour)")
        return v


class UserBase(BaseModel):
    telegram_id: int = Field(gt=0, description="Telegram user ids are always positive.")
    username: str | None = Field(default=None, max_length=255)
    first_name: str | None = Field(default=None, max_length=255)
    last_name: str | None = Field(default=None, max_length=255)


class UserCreate(UserBase):
    interests: list[Interest] = Field(default_factory=list, max_length=50)

    @field_validator("interests")
    @classmethod
    def _dedupe(cls, v: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for item in v:
            seen.setdefault(item.casefold(), item)
        return list(seen.values())


class UserRead(UserBase):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: UserStatus
    active_discussion_post_id: int | None = None
    memory_enabled: bool = True
    interests: list[str] = Field(default_factory=list, max_length=50)
    digest_preferences: DigestPreferences = Field(default_factory=DigestPreferences)
    created_at: datetime
    updated_at: datetime
    last_interaction_at: datetime | None = None
