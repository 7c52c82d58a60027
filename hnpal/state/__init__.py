"""Ephemeral per-user state in Redis: FSM state, session cache, discussion context cache.

Redis holds nothing that cannot be rebuilt: PostgreSQL is the source of truth, and every caller
degrades (logs a warning, rebuilds from PostgreSQL) when Redis is unreachable.
"""

from hnpal.state.store import (
    CONTEXT_TTL,
    FSM_TTL,
    SESSION_TTL,
    BotState,
    FsmState,
    StateStore,
    get_redis,
)

__all__ = [
    "CONTEXT_TTL",
    "FSM_TTL",
    "SESSION_TTL",
    "BotState",
    "FsmState",
    "StateStore",
    "get_redis",
]
