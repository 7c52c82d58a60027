"""Validated user data (the data-model document's rules: telegram_id > 0, ≤ 50 interests, enums)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hnpal.crawl.urls import normalize_domain
from hnpal.users.models import USER_STATUSES

UserStatus = Literal["active", "paused", "blocked", "deleted"]
assert set(UserStatus.__args__) == set(USER_STATUSES)  # type: ignore[attr-defined]

Interest = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


SummaryStyle = Literal["basic", "technical", "business", "concise", "personalized"]
Word = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=100)]


def check_timezone(name: str) -> str:
    """An IANA zone name (``Europe/Berlin``), or ValueError with a hint."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or America/New_York"
        ) from None
    return name


class DigestPreferences(BaseModel):
    """A user's digest settings (``users.digest_preferences``). Every field has a default, so rows written
    by older versions keep validating; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    style: Literal["brief", "flat_scroll"] = "flat_scroll"
    summary_style: SummaryStyle = "basic"
    frequency: Literal["daily", "twice_daily", "weekly"] = "daily"
    time: str = "07:00"  # daily and weekly; the morning digest when twice daily
    evening_time: str = "19:00"  # the evening digest when twice daily
    weekday: int = Field(default=0, ge=0, le=6)  # weekly: 0 = Monday
    timezone: str = "UTC"
    max_posts: int = Field(default=10, ge=1, le=30)
    min_score: int = Field(default=0, ge=0, le=100000)
    muted_keywords: list[Word] = Field(default_factory=list, max_length=50)
    muted_domains: list[Word] = Field(default_factory=list, max_length=50)

    @field_validator("time", "evening_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        v = v.strip()
        if re.fullmatch(r"\d:[0-5]\d", v):
            v = "0" + v
        if not _HHMM.match(v):
            raise ValueError("time must be HH:MM (24-hour)")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return check_timezone(v.strip())

    @field_validator("muted_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        # Stored as the registrable domain posts carry, so muting a domain mutes its subdomains.
        return list(dict.fromkeys(normalize_domain(d) for d in v))

    @field_validator("muted_keywords")
    @classmethod
    def _dedupe(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @property
    def times(self) -> list[str]:
        return [self.time, self.evening_time] if self.frequency == "twice_daily" else [self.time]


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
