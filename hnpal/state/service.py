"""FSM state with PostgreSQL as the source of truth.

``users.active_discussion_post_id`` mirrors the DISCUSSION state, so when Redis lost the key (expiry,
restart, outage) the state is rebuilt from PostgreSQL, and nothing raises into the bot.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from hnpal.state.store import BotState, FsmState, StateStore
from hnpal.users.models import User

log = logging.getLogger(__name__)


def current_state(*, session: Session, store: StateStore, telegram_id: int) -> FsmState:
    """The user's FSM state: Redis when it has it, otherwise rebuilt from PostgreSQL (and re-cached)."""
    cached = store.get_fsm(telegram_id)
    if cached is not None:
        return cached
    row = session.execute(
        select(User.id, User.active_discussion_post_id).where(User.telegram_id == telegram_id)
    ).one_or_none()
    if row is None:
        state = FsmState(state=BotState.ONBOARDING)
    elif row.active_discussion_post_id is not None:
        state = FsmState(state=BotState.DISCUSSION, data={"active_post_id": row.active_discussion_post_id})
    else:
        state = FsmState(state=BotState.IDLE)
    log.info("fsm state for %s rebuilt from PostgreSQL: %s", telegram_id, state.state)
    store.set_fsm(telegram_id, state)
    return state


def set_state(*, session: Session, store: StateStore, telegram_id: int, state: FsmState) -> None:
    """Write the state to PostgreSQL first (durable), then to Redis (best effort)."""
    post_id = state.data.get("active_post_id") if state.state == BotState.DISCUSSION else None
    session.execute(
        User.__table__.update().where(User.telegram_id == telegram_id).values(active_discussion_post_id=post_id)
    )
    session.flush()
    store.set_fsm(telegram_id, state)
