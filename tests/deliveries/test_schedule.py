"""When digests are due: batch ids across time zones and DST, the next delivery, and the scheduler on the
real database (a batch is created once, for active users only, whatever their stored preferences)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from hnpal.deliveries.models import Delivery, Digest
from hnpal.deliveries.schedule import current_batch, next_delivery
from hnpal.deliveries.service import create_due_digests, preferences
from hnpal.users.schemas import DigestPreferences


def prefs(**kw) -> DigestPreferences:
    return DigestPreferences(**kw)


def at(zone: str, *args: int, fold: int = 0) -> datetime:
    """A local wall-clock time in ``zone`` as a UTC instant."""
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def minutes(start: datetime, end: datetime, step: int = 1):
    t = start
    while t <= end:
        yield t
        t += timedelta(minutes=step)


# --- current_batch -----------------------------------------------------------------------------------


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Auckland", "America/St_Johns"]


@pytest.mark.parametrize("zone", ZONES)
def test_daily_batch_is_due_at_the_local_time_of_the_local_day(zone: str) -> None:
    p = prefs(timezone=zone, time="07:30")
    assert current_batch(p, at(zone, 2026, 1, 15, 7, 29, 59)) is None
    assert current_batch(p, at(zone, 2026, 1, 15, 7, 30)) == "2026-01-15-morning"
    assert current_batch(p, at(zone, 2026, 1, 15, 23, 59)) == "2026-01-15-morning"
    assert current_batch(p, at(zone, 2026, 1, 16, 0, 0)) is None  # a new local day, not due yet
    assert current_batch(p, at(zone, 2026, 7, 15, 7, 30)) == "2026-07-15-morning"  # summer time too


@pytest.mark.parametrize(
    ("zone", "instant", "batch"),
    [
        # 06:00 UTC on the 15th is already 19:00 on the 15th in Auckland (+13 in January)...
        ("Pacific/Auckland", utc(2026, 1, 15, 6, 0), "2026-01-15-morning"),
        # ...and 18:00 UTC on the 14th is 07:00 on the 15th there: the UTC date is the day before.
        ("Pacific/Auckland", utc(2026, 1, 14, 18, 0), "2026-01-15-morning"),
        ("Pacific/Auckland", utc(2026, 1, 14, 17, 59), None),
        # Kolkata is +05:30: 07:00 local is 01:30 UTC.
        ("Asia/Kolkata", utc(2026, 1, 15, 1, 29), None),
        ("Asia/Kolkata", utc(2026, 1, 15, 1, 30), "2026-01-15-morning"),
        # St. John's is -03:30: 07:00 local is 10:30 UTC; at 02:00 UTC on the 16th it is still the 15th.
        ("America/St_Johns", utc(2026, 1, 15, 10, 29), None),
        ("America/St_Johns", utc(2026, 1, 15, 10, 30), "2026-01-15-morning"),
        ("America/St_Johns", utc(2026, 1, 16, 2, 0), "2026-01-15-morning"),
        # New York, -05:00: 01:00 UTC on the 16th is 20:00 on the 15th.
        ("America/New_York", utc(2026, 1, 16, 1, 0), "2026-01-15-morning"),
        ("Europe/Berlin", utc(2026, 1, 15, 5, 59), None),
        ("Europe/Berlin", utc(2026, 1, 15, 6, 0), "2026-01-15-morning"),
    ],
)
def test_the_batch_id_carries_the_users_local_date(zone: str, instant: datetime, batch: str | None) -> None:
    assert current_batch(prefs(timezone=zone, time="07:00"), instant) == batch


@pytest.mark.parametrize("zone", ZONES)
def test_twice_daily_has_a_morning_and_an_evening_batch(zone: str) -> None:
    p = prefs(timezone=zone, frequency="twice_daily", time="08:00", evening_time="20:15")
    assert current_batch(p, at(zone, 2026, 3, 2, 7, 59)) is None
    assert current_batch(p, at(zone, 2026, 3, 2, 8, 0)) == "2026-03-02-morning"
    assert current_batch(p, at(zone, 2026, 3, 2, 20, 14)) == "2026-03-02-morning"
    assert current_batch(p, at(zone, 2026, 3, 2, 20, 15)) == "2026-03-02-evening"
    assert current_batch(p, at(zone, 2026, 3, 2, 23, 59)) == "2026-03-02-evening"
    assert current_batch(p, at(zone, 2026, 3, 3, 0, 1)) is None


def test_the_evening_time_means_nothing_for_a_daily_digest() -> None:
    p = prefs(time="08:00", evening_time="20:00")
    assert current_batch(p, utc(2026, 3, 2, 21, 0)) == "2026-03-02-morning"


@pytest.mark.parametrize(
    ("instant", "batch"),
    [
        (utc(2026, 6, 8, 8, 59), None),  # Monday, before the time
        (utc(2026, 6, 8, 9, 0), "2026-W24"),  # Monday 09:00
        (utc(2026, 6, 10, 3, 0), "2026-W24"),  # later that week
        (utc(2026, 6, 14, 23, 59), "2026-W24"),  # Sunday night, still that week
        (utc(2026, 6, 15, 8, 0), None),  # next Monday before 09:00
    ],
)
def test_weekly_batch_is_the_iso_week_once_the_weekday_and_time_have_come(instant: datetime, batch) -> None:
    assert current_batch(prefs(frequency="weekly", weekday=0, time="09:00"), instant) == batch


def test_weekly_on_a_later_weekday_is_not_due_earlier_in_the_week() -> None:
    p = prefs(frequency="weekly", weekday=4, time="18:00", timezone="Europe/Berlin")  # Fridays
    assert current_batch(p, at("Europe/Berlin", 2026, 6, 11, 23, 0)) is None  # Thursday
    assert current_batch(p, at("Europe/Berlin", 2026, 6, 12, 17, 59)) is None
    assert current_batch(p, at("Europe/Berlin", 2026, 6, 12, 18, 0)) == "2026-W24"
    assert current_batch(p, at("Europe/Berlin", 2026, 6, 14, 12, 0)) == "2026-W24"


def test_weekly_week_53_and_the_year_boundary() -> None:
    # 2026 has an ISO week 53 (Mon 28 Dec 2026 - Sun 3 Jan 2027).
    friday = prefs(frequency="weekly", weekday=4, time="09:00", timezone="Pacific/Auckland")
    # Friday 1 January 2027, 09:00 in Auckland is still 31 December in UTC: the week is 2026-W53.
    assert current_batch(friday, utc(2026, 12, 31, 20, 0)) == "2026-W53"
    assert current_batch(friday, utc(2027, 1, 3, 10, 0)) == "2026-W53"  # Sunday 3 Jan (local 23:00)
    assert current_batch(friday, utc(2027, 1, 3, 11, 0)) is None  # Monday 4 Jan local: week 1, not yet
    assert current_batch(friday, utc(2027, 1, 7, 20, 0)) == "2027-W01"
    # Monday 30 December 2024 belongs to ISO week 1 of 2025: the ISO year, not the calendar year.
    monday = prefs(frequency="weekly", weekday=0, time="07:00")
    assert current_batch(monday, utc(2024, 12, 30, 7, 0)) == "2025-W01"
    assert current_batch(monday, utc(2024, 12, 29, 23, 0)) == "2024-W52"
    # Sunday 3 January 2021 is the last day of 2020-W53.
    sunday = prefs(frequency="weekly", weekday=6, time="07:00", timezone="America/New_York")
    assert current_batch(sunday, at("America/New_York", 2021, 1, 3, 7, 0)) == "2020-W53"


def test_spring_forward_delivery_in_the_gap_is_due_right_after_the_jump_and_once() -> None:
    # Europe/Berlin, Sunday 29 March 2026: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never happens.
    p = prefs(timezone="Europe/Berlin", time="02:30")
    assert current_batch(p, utc(2026, 3, 29, 0, 59, 59)) is None  # 01:59:59 CET
    assert current_batch(p, utc(2026, 3, 29, 1, 0)) == "2026-03-29-morning"  # 03:00 CEST, right after the jump
    batches = {current_batch(p, t) for t in minutes(utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 21, 59))}
    assert batches == {"2026-03-28-morning", "2026-03-29-morning", None}
    # every minute of the day maps to at most one batch id, so the scheduler creates the day's digest once
    day = [current_batch(p, t) for t in minutes(utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 21, 59))]
    first = day.index("2026-03-29-morning")
    assert all(b is None for b in day[:first]) and all(b == "2026-03-29-morning" for b in day[first:])
    assert next_delivery(p, utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 29, 1, 0)


def test_spring_forward_in_a_half_hour_zone() -> None:
    # America/St_Johns, Sunday 8 March 2026: 02:00 NST (-03:30) becomes 03:00 NDT (-02:30) at 05:30 UTC.
    p = prefs(timezone="America/St_Johns", time="02:15")
    assert current_batch(p, utc(2026, 3, 8, 5, 29)) is None
    assert current_batch(p, utc(2026, 3, 8, 5, 30)) == "2026-03-08-morning"
    assert next_delivery(p, utc(2026, 3, 8, 0, 0)) == utc(2026, 3, 8, 5, 30)


def test_fall_back_delivery_at_a_repeated_time_is_due_at_the_first_occurrence_only() -> None:
    # America/New_York, Sunday 1 November 2026: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:30 happens twice.
    p = prefs(timezone="America/New_York", time="01:30")
    first, second = at("America/New_York", 2026, 11, 1, 1, 30), at("America/New_York", 2026, 11, 1, 1, 30, fold=1)
    assert (first, second) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30))
    assert current_batch(p, first - timedelta(seconds=1)) is None
    assert current_batch(p, first) == "2026-11-01-morning"
    assert current_batch(p, second) == "2026-11-01-morning"  # the same batch: no second digest
    seen = {current_batch(p, t) for t in minutes(first, utc(2026, 11, 2, 4, 59))}
    assert seen <= {"2026-11-01-morning", None}
    assert next_delivery(p, utc(2026, 11, 1, 4, 0)) == first
    # in the repeated hour, before and after the second 01:30, the next new batch is the next day's
    for now in (utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6, 15), second, utc(2026, 11, 1, 6, 45)):
        assert next_delivery(p, now) == at("America/New_York", 2026, 11, 2, 1, 30), now


def test_auckland_dst_transitions() -> None:
    # Auckland falls back on Sunday 5 April 2026 (03:00 NZDT -> 02:00 NZST) and springs forward on
    # Sunday 27 September 2026 (02:00 NZST -> 03:00 NZDT).
    p = prefs(timezone="Pacific/Auckland", time="02:30")
    assert current_batch(p, at("Pacific/Auckland", 2026, 4, 5, 2, 30)) == "2026-04-05-morning"
    assert current_batch(p, at("Pacific/Auckland", 2026, 4, 5, 2, 30, fold=1)) == "2026-04-05-morning"
    jump = utc(2026, 9, 26, 14, 0)  # 02:00 NZST = 03:00 NZDT
    assert current_batch(p, jump - timedelta(seconds=1)) is None
    assert current_batch(p, jump) == "2026-09-27-morning"
    assert next_delivery(p, utc(2026, 9, 26, 0, 0)) == jump


@pytest.mark.parametrize(
    ("p", "now", "expected"),
    [
        (prefs(time="07:00"), utc(2026, 5, 1, 6, 0), utc(2026, 5, 1, 7, 0)),
        (prefs(time="07:00"), utc(2026, 5, 1, 7, 0), utc(2026, 5, 2, 7, 0)),
        (prefs(time="07:00"), utc(2026, 5, 1, 8, 0), utc(2026, 5, 2, 7, 0)),
        (prefs(time="07:00", timezone="Asia/Kolkata"), utc(2026, 5, 1, 0, 0), utc(2026, 5, 1, 1, 30)),
        (
            prefs(frequency="twice_daily", time="08:00", evening_time="20:00", timezone="Asia/Kolkata"),
            utc(2026, 5, 1, 3, 0),
            utc(2026, 5, 1, 14, 30),
        ),
        (
            prefs(frequency="twice_daily", time="08:00", evening_time="20:00", timezone="Asia/Kolkata"),
            utc(2026, 5, 1, 15, 0),
            utc(2026, 5, 2, 2, 30),
        ),
        (  # Friday 09:00 weekly, asked on a Saturday: next Friday
            prefs(frequency="weekly", weekday=4, time="09:00"),
            utc(2026, 6, 13, 12, 0),
            utc(2026, 6, 19, 9, 0),
        ),
        (  # asked on the Friday, before the time
            prefs(frequency="weekly", weekday=4, time="09:00", timezone="America/St_Johns"),
            utc(2026, 6, 19, 11, 0),
            utc(2026, 6, 19, 11, 30),
        ),
        (prefs(time="23:30", timezone="Pacific/Auckland"), utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 10, 30)),
    ],
)
def test_next_delivery(p: DigestPreferences, now: datetime, expected: datetime) -> None:
    upcoming = next_delivery(p, now)
    assert upcoming == expected and upcoming.tzinfo is not None
    assert upcoming > now
    # it is the instant a new batch becomes due: not before, yes right at it
    assert current_batch(p, upcoming) not in (None, current_batch(p, now))
    assert current_batch(p, upcoming - timedelta(seconds=1)) in (None, current_batch(p, now))


@pytest.mark.parametrize("zone", ZONES)
def test_next_delivery_is_always_in_the_future_and_new_across_a_year(zone: str) -> None:
    for p in (
        prefs(timezone=zone, time="02:30"),
        prefs(timezone=zone, time="01:30", frequency="twice_daily", evening_time="13:45"),
        prefs(timezone=zone, time="02:30", frequency="weekly", weekday=6),
    ):
        for now in minutes(utc(2026, 1, 1, 0, 7), utc(2026, 12, 31, 0, 0), step=17 * 60 + 13):
            upcoming = next_delivery(p, now)
            assert now < upcoming <= now + timedelta(days=8), (p, now)
            assert current_batch(p, upcoming) not in (None, current_batch(p, now)), (p, now)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        current_batch(prefs(), datetime(2026, 1, 1, 8, 0))


# --- create_due_digests on the database ----------------------------------------------------------------


def my_digests(session, user_ids) -> dict[int, list[Digest]]:
    rows = session.scalars(select(Digest).where(Digest.user_id.in_(user_ids)).order_by(Digest.id)).all()
    found: dict[int, list[Digest]] = {u: [] for u in user_ids}
    for digest in rows:
        found[digest.user_id].append(digest)
    return found


def test_create_due_digests_creates_each_due_batch_once(db_session, make) -> None:
    now = utc(2031, 6, 16, 6, 0)  # Monday; 08:00 in Berlin, 02:00 in New York, 11:30 in Kolkata
    berlin = make.user(prefs={"timezone": "Europe/Berlin", "time": "07:45", "style": "brief"})
    new_york = make.user(prefs={"timezone": "America/New_York", "time": "07:00"})
    kolkata = make.user(prefs={"timezone": "Asia/Kolkata", "frequency": "twice_daily", "evening_time": "11:30"})
    auckland = make.user(prefs={"timezone": "Pacific/Auckland", "time": "17:59"})  # local 18:00
    st_johns = make.user(prefs={"timezone": "America/St_Johns", "time": "03:31"})  # local 03:30: a minute early
    weekly = make.user(prefs={"frequency": "weekly", "weekday": 0, "time": "05:00"})
    weekly_later = make.user(prefs={"frequency": "weekly", "weekday": 2, "time": "05:00"})
    paused = make.user(prefs={}, status="paused")
    blocked = make.user(prefs={}, status="blocked")
    users = [berlin, new_york, kolkata, auckland, st_johns, weekly, weekly_later, paused, blocked]
    ids = [u.id for u in users]

    created = create_due_digests(session=db_session, now=now)
    found = my_digests(db_session, ids)
    mine = {d.id for ds in found.values() for d in ds}
    assert mine <= set(created)
    assert {u: [d.batch_id for d in ds] for u, ds in found.items()} == {
        berlin.id: ["2031-06-16-morning"],
        new_york.id: [],
        kolkata.id: ["2031-06-16-evening"],
        auckland.id: ["2031-06-16-morning"],
        st_johns.id: [],
        weekly.id: ["2031-W25"],
        weekly_later.id: [],
        paused.id: [],
        blocked.id: [],
    }
    assert found[berlin.id][0].style == "brief" and found[auckland.id][0].style == "flat_scroll"
    assert all(
        d.status == "pending" and not d.manual for d in db_session.scalars(select(Digest).where(Digest.id.in_(mine)))
    )

    # the same instant again: nothing new (only new ids are returned)
    assert not set(create_due_digests(session=db_session, now=now)) & mine
    assert my_digests(db_session, ids) == found

    # a minute later only St. John's has become due
    later = set(create_due_digests(session=db_session, now=now + timedelta(minutes=1)))
    after = my_digests(db_session, ids)
    assert [d.batch_id for d in after[st_johns.id]] == ["2031-06-16-morning"]
    assert after[st_johns.id][0].id in later and not later & mine
    assert {u: ds for u, ds in after.items() if u != st_johns.id} == {
        u: ds for u, ds in found.items() if u != st_johns.id
    }

    # hours later New York is due; the others get nothing new the same local day
    create_due_digests(session=db_session, now=now + timedelta(hours=6))
    afternoon = my_digests(db_session, ids)
    assert [d.batch_id for d in afternoon[new_york.id]] == ["2031-06-16-morning"]
    assert sum(len(ds) for ds in afternoon.values()) == 6  # Auckland is past midnight: not due again yet

    # the next day each daily user has a second digest, the weekly ones still one and none
    create_due_digests(session=db_session, now=now + timedelta(days=1))
    next_day = my_digests(db_session, ids)
    assert [d.batch_id for d in next_day[berlin.id]] == ["2031-06-16-morning", "2031-06-17-morning"]
    assert [d.batch_id for d in next_day[auckland.id]] == ["2031-06-16-morning", "2031-06-17-morning"]
    assert [d.batch_id for d in next_day[new_york.id]] == ["2031-06-16-morning"]  # 02:00 there again
    assert len(next_day[weekly.id]) == 1 and not next_day[weekly_later.id]
    assert not next_day[paused.id] and not next_day[blocked.id]


@pytest.mark.parametrize(
    ("stored", "effective"),
    [
        # nothing valid: daily at 07:00 UTC
        ({"timezone": "Mars/Base", "time": "25:99", "frequency": "hourly", "bogus": 1}, {}),
        # the valid fields stay, the bad ones fall back
        ({"timezone": "Asia/Kolkata", "time": "7 am", "max_posts": 500}, {"timezone": "Asia/Kolkata"}),
        (
            {"style": 42, "weekday": "monday", "muted_keywords": "rust", "frequency": "weekly"},
            {"frequency": "weekly"},
        ),
        ({"frequency": "weekly", "weekday": 9, "time": "09:15"}, {"frequency": "weekly", "time": "09:15"}),
        ({"time": None, "evening_time": [], "timezone": "", "frequency": "twice_daily"}, {"frequency": "twice_daily"}),
        ({"muted_domains": [1, None], "min_score": -5, "style": "brief"}, {"style": "brief"}),
    ],
)
def test_invalid_stored_preferences_fall_back_to_defaults(db_session, make, stored, effective) -> None:
    expected = DigestPreferences(**effective)
    assert preferences(stored) == expected
    user = make.user(prefs=stored)
    start = utc(2031, 6, 16, 0, 0)  # a Monday
    due_at = next_delivery(expected, start)
    assert create_due_digests(session=db_session, now=start) is not None  # does not raise
    assert my_digests(db_session, [user.id])[user.id] == []
    create_due_digests(session=db_session, now=due_at - timedelta(minutes=1))
    assert my_digests(db_session, [user.id])[user.id] == []
    create_due_digests(session=db_session, now=due_at)
    [digest] = my_digests(db_session, [user.id])[user.id]
    assert digest.batch_id == current_batch(expected, due_at) and digest.style == expected.style


def test_preferences_fall_back_field_by_field() -> None:
    p = preferences({"timezone": "Asia/Kolkata", "time": "7 am", "max_posts": 500, "style": "brief", "x": 1})
    assert (p.timezone, p.time, p.max_posts, p.style) == ("Asia/Kolkata", "07:00", 10, "brief")
    assert preferences(None) == DigestPreferences()
    assert preferences({"muted_keywords": ["Rust", "rust"]}).muted_keywords == ["rust"]


# --- the schedule task, under frozen time ------------------------------------------------------------


def test_schedule_task_creates_prepares_and_fans_out_once(committed, monkeypatch) -> None:
    """The beat's task body under frozen time. Its jobs are recorded instead of queued (the preparation
    jobs are run here, as their worker would), so only what this test created is sent anywhere."""
    from hnpal import jobs
    from hnpal.db.session import session_scope
    from hnpal.deliveries import service
    from tasks import digests

    frozen = utc(2031, 6, 16, 6, 0)  # 08:00 in Berlin, 02:00 in New York
    with committed() as make:
        due = make.user(prefs={"timezone": "Europe/Berlin", "time": "08:00", "style": "brief"})
        not_due = make.user(prefs={"timezone": "America/New_York", "time": "07:00"})
        paused = make.user(prefs={}, status="paused")
        # a post summarized "later" than any digest's window start: every due digest may take it
        post = make.post("A post for the scheduled digest", summarized_at=make.epoch)
    created: list[int] = []
    real_create = service.create_due_digests

    def recording_create(**kw):
        ids = real_create(**kw)
        created.extend(ids)
        return ids

    monkeypatch.setattr(service, "create_due_digests", recording_create)
    enqueued: list[int] = []
    try:
        with jobs.recording() as sent:
            with time_machine.travel(frozen, tick=False):
                assert datetime.now(UTC) == frozen
                first = digests.schedule()
                again = digests.schedule()
            with time_machine.travel(frozen + timedelta(minutes=1), tick=False):
                a_minute_later = digests.schedule()
            prepares = [job for job in sent if job.name == jobs.DIGESTS_PREPARE]
            assert len(prepares) == -(-first // 500)  # one preparation job per 500 digests, as the batches
            with time_machine.travel(frozen, tick=False):
                for job in prepares:
                    digests.prepare(*job.args)
        for job in sent:
            if job.name == jobs.DIGESTS_SEND:
                enqueued.append(job.args[0])
            elif job.name == jobs.DIGESTS_SEND_BATCH:
                enqueued.extend(job.args[0])
        assert {job.name for job in sent} <= {jobs.DIGESTS_PREPARE, jobs.DIGESTS_SEND, jobs.DIGESTS_SEND_BATCH}
        assert first == len(created) and again == 0 and a_minute_later == 0
        with session_scope() as session:
            mine = my_digests(session, [due.id, not_due.id, paused.id])
            assert [d.batch_id for d in mine[due.id]] == ["2031-06-16-morning"]
            assert not mine[not_due.id] and not mine[paused.id]
            digest = mine[due.id][0]
            assert enqueued.count(digest.id) == 1  # one send, fanned out once
            # prepared before the fan-out: the post is reserved, nothing is sent yet
            assert digest.status == "sending" and digest.post_count >= 1
            reserved = session.execute(
                select(Delivery.post_id, Delivery.message_id).where(
                    Delivery.user_id == due.id, Delivery.batch_id == digest.batch_id
                )
            ).all()
            assert (post.id, None) in reserved and all(m is None for _, m in reserved)
    finally:
        # other tests' committed users may have been due as well: remove what this test created
        with session_scope() as session:
            for digest in session.scalars(select(Digest).where(Digest.id.in_(created))):
                session.execute(
                    Delivery.__table__.delete().where(
                        Delivery.user_id == digest.user_id, Delivery.batch_id == digest.batch_id
                    )
                )
                session.delete(digest)


def test_a_new_user_waits_for_the_first_delivery_time_after_joining(db_session, make) -> None:
    joined = utc(2031, 6, 16, 9, 0)  # 11:00 in Berlin: today's 07:45 batch fell due before the account existed
    user = make.user(prefs={"timezone": "Europe/Berlin", "time": "07:45"}, created_at=joined)
    create_due_digests(session=db_session, now=joined + timedelta(minutes=5))
    assert not my_digests(db_session, [user.id])[user.id]
    # a delivery time later today (set in /settings) is the first one after joining
    user.digest_preferences = {"timezone": "Europe/Berlin", "time": "11:10"}
    db_session.flush()
    create_due_digests(session=db_session, now=utc(2031, 6, 16, 9, 10))
    assert [d.batch_id for d in my_digests(db_session, [user.id])[user.id]] == ["2031-06-16-morning"]
    # and the next day's batch comes as usual
    create_due_digests(session=db_session, now=utc(2031, 6, 17, 9, 10))
    assert [d.batch_id for d in my_digests(db_session, [user.id])[user.id]] == [
        "2031-06-16-morning",
        "2031-06-17-morning",
    ]
