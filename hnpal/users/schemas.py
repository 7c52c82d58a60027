"""Validated user data (the data-model document's rules: telegram_id > 0, ≤ 50 interests, enums)."""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hnpal.crawl.urls import normalize_domain
from hnpal.users.models import UserStatus

Interest = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


SummaryStyle = Literal["basic", "technical", "business", "concise", "personalized"]
Word = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=100)]


# Files of the zone database that are not zones a person lives in: the host's own zone (whatever the server
# is set to), the POSIX rules template, and the "Factory" placeholder (its abbreviation reads "-00").
NOT_ZONES = frozenset({"localtime", "posixrules", "factory", "leapseconds", "zone.tab", "zone1970.tab", "tzdata.zi"})


@functools.cache
def _zones() -> dict[str, str]:
    """The real IANA zones, by casefolded name (``europe/berlin`` → ``Europe/Berlin``)."""
    return {
        name.casefold(): name
        for name in zoneinfo.available_timezones()
        if name.casefold() not in NOT_ZONES and not name.startswith(("posix/", "right/"))
    }


def check_timezone(name: str) -> str:
    """An IANA zone name (``Europe/Berlin``; any case), as the database spells it, or ValueError with a
    hint. Only real zones: not the host's ``localtime``, ``posixrules`` or ``Factory``."""
    canonical = _zones().get(name.strip().casefold()) if len(name) <= 64 else None
    if canonical is None:
        raise ValueError(f"unknown time zone {name[:64]!r}; use an IANA name such as Europe/Berlin or America/New_York")
    try:
        ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"time zone {canonical!r} cannot be loaded on this server") from None
    return canonical


_POSIX_OFFSET = re.compile(r"^(?:Etc/)?GMT[+-]\d{1,2}$")


def zone_label(name: str, now: datetime | None = None) -> str:
    """How a zone is shown: its name, and for the POSIX-style ``Etc/GMT±N`` zones the real offset too.
    Their sign is the POSIX one, the opposite of what it looks like: ``Etc/GMT+3`` is three hours *behind*
    UTC, shown as ``Etc/GMT+3 (UTC−03:00)``."""
    if not _POSIX_OFFSET.match(name):
        return name
    from datetime import UTC

    offset = (now or datetime.now(UTC)).astimezone(ZoneInfo(name)).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "\u2212"
    return f"{name}, UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


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
        # NFKC, case-folded, single spaces: how the selection compares them with titles
        folded = (" ".join(unicodedata.normalize("NFKC", k).casefold().split()) for k in v)
        return list(dict.fromkeys(k for k in folded if k))

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
