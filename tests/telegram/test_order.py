"""One chat's updates are handled in the order they were sent: a later update waits for an earlier one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hnpal.telegram.models import TelegramUpdate
from tasks.telegram import _earlier_pending


def row(update_id: int, chat_id: int, status: str = "received", age: timedelta = timedelta()) -> TelegramUpdate:
    return TelegramUpdate(
        update_id=update_id,
        payload={"update_id": update_id},
        chat_id=chat_id,
        status=status,
        received_at=datetime.now(UTC) - age,
    )


def test_a_later_update_waits_for_an_earlier_one_of_the_same_chat(db_session) -> None:
    first, second, other_chat = row(9_000_001, 77), row(9_000_002, 77), row(9_000_003, 78)
    db_session.add_all([first, second, other_chat])
    db_session.flush()
    assert _earlier_pending(db_session, second)
    assert not _earlier_pending(db_session, first)
    assert not _earlier_pending(db_session, other_chat)  # another chat does not wait

    first.status = "processed"
    db_session.flush()
    assert not _earlier_pending(db_session, second)


def test_an_old_stuck_update_does_not_hold_the_chat_forever(db_session) -> None:
    stuck, later = row(9_100_001, 79, status="failed", age=timedelta(minutes=10)), row(9_100_002, 79)
    db_session.add_all([stuck, later])
    db_session.flush()
    assert not _earlier_pending(db_session, later)
