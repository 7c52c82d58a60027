"""When a user's digest is due: pure functions of their preferences and the current instant.

A digest belongs to a *batch*: ``YYYY-MM-DD-morning`` or ``YYYY-MM-DD-evening`` (the user's local date)
for daily and twice-daily digests, ``YYYY-Www`` (ISO week) for weekly ones. The batch that is due is
the latest one whose local delivery time has come; the scheduler creates a digest for it unless one
exists (UNIQUE user_id, batch_id), so a beat that runs late, twice, or after downtime sends each batch
once.

Local time is wall-clock time in the user's IANA zone. On a spring-forward day a delivery time that does
not exist (02:30 in Europe/Berlin) is reached as soon as the clock jumps past it; on a fall-back day a
time that happens twice is delivered at the first occurrence, and the second finds the batch done.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hnpal.users.schemas import DigestPreferences


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def local_now(prefs: DigestPreferences, now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(ZoneInfo(prefs.timezone))


def current_batch(prefs: DigestPreferences, now: datetime) -> str | None:
    """The batch whose delivery time has most recently come (None before the first one of the period)."""
    local = local_now(prefs, now)
    wall = local.time().replace(tzinfo=None)
    if prefs.frequency == "weekly":
        monday = local.date() - timedelta(days=local.weekday())
        year, week, _ = monday.isocalendar()
        if local.weekday() > prefs.weekday or (local.weekday() == prefs.weekday and wall >= _clock(prefs.time)):
            return f"{year}-W{week:02d}"
        return None
    day = local.date().isoformat()
    if prefs.frequency == "twice_daily" and wall >= _clock(prefs.evening_time):
        return f"{day}-evening"
    if wall >= _clock(prefs.time):
        return f"{day}-morning"
    return None


def batch_due_at(prefs: DigestPreferences, now: datetime) -> datetime | None:
    """The instant (UTC) the current batch became due, or None when none is due yet."""
    batch = current_batch(prefs, now)
    if batch is None:
        return None
    zone = ZoneInfo(prefs.timezone)
    local = local_now(prefs, now)
    if prefs.frequency == "weekly":
        day = local.date() - timedelta(days=local.weekday() - prefs.weekday)
        return _reached(datetime.combine(day, _clock(prefs.time)), zone)
    clock = prefs.evening_time if batch.endswith("-evening") else prefs.time
    return _reached(datetime.combine(local.date(), _clock(clock)), zone)


def period(prefs: DigestPreferences) -> timedelta:
    """How much news one digest covers when there is no earlier digest to start from."""
    return {"daily": timedelta(days=1), "twice_daily": timedelta(hours=12), "weekly": timedelta(days=7)}[
        prefs.frequency
    ]


def _reached(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the local clock in ``zone`` reads ``wall`` (naive) or later: the
    first occurrence of a repeated time, the instant the clock jumps for a time in a DST gap."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if second >= first:  # an ordinary time (equal) or a repeated one (fall-back)
        return first
    # A gap: fold=1 reads the time with the offset after the jump (an instant before it), fold=0 with the
    # offset before (an instant after it). Find the jump, to the second, in between.
    lo, hi = int(second.timestamp()), int(first.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def next_delivery(prefs: DigestPreferences, now: datetime) -> datetime:
    """The next instant (UTC) a new batch becomes due; shown in /settings."""
    zone = ZoneInfo(prefs.timezone)
    local = local_now(prefs, now)
    current = current_batch(prefs, now)
    for days in range(0, 9):
        day = local.date() + timedelta(days=days)
        for clock in prefs.times:
            # Compared in UTC: aware datetimes of one zone compare by wall clock, which is wrong in the
            # repeated hour of a fall-back day.
            candidate = _reached(datetime.combine(day, _clock(clock)), zone)
            if candidate <= now:
                continue
            probe = candidate + timedelta(seconds=1)
            batch = current_batch(prefs, probe)
            if batch is not None and batch != current:
                return candidate
    raise AssertionError("a digest is due within nine days")  # pragma: no cover
