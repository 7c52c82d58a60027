"""One chat's updates are handled in the order they were sent: a later update waits for an earlier one.

``hnpal.telegram.updates.CLAIM`` counts an attempt only when no earlier update of the same chat is still open
(and the update itself is not final); these tests run it on the test transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hnpal.telegram.models import TelegramUpdate
from hnpal.telegram.updates import CLAIM


def row(update_id: int, chat_id: int, status: str = "received", age: timedelta = timedelta()) -> TelegramUpdate:
    return TelegramUpdate(
        update_id=update_id,
        payload={"update_id": update_id},
        chat_id=chat_id,
        status=status,
        received_at=datetime.now(UTC) - age,
    )


def claim(db_session, update: TelegramUpdate, *, check_order: bool = True) -> int | None:  # type: ignore[no-untyped-def]
    """The attempt number the claim gives, or None when it claims nothing."""
    claimed = db_session.execute(CLAIM, {"update_id": update.update_id, "check_order": check_order}).first()
    return None if claimed is None else claimed.attempts


def test_a_later_update_waits_for_an_earlier_one_of_the_same_chat(db_session) -> None:
    first, second, other_chat = row(9_000_001, 77), row(9_000_002, 77), row(9_000_003, 78)
    db_session.add_all([first, second, other_chat])
    db_session.flush()
    assert claim(db_session, second) is None  # waits: the first is still open
    assert claim(db_session, first) == 1
    assert claim(db_session, other_chat) == 1  # another chat does not wait
    assert claim(db_session, second, check_order=False) == 1  # after its waits, it goes anyway

    db_session.execute(TelegramUpdate.__table__.update().where(TelegramUpdate.update_id == first.update_id)
                       .values(status="processed"))  # fmt: skip
    assert claim(db_session, second) == 2
    assert claim(db_session, first) is None  # a final update is never claimed again


def test_an_old_stuck_update_does_not_hold_the_chat_forever(db_session) -> None:
    stuck, later = row(9_100_001, 79, status="failed", age=timedelta(minutes=10)), row(9_100_002, 79)
    db_session.add_all([stuck, later])
    db_session.flush()
    assert claim(db_session, later) == 1
