"""Rows for memory and privacy tests, written through the real database (ids of their own ranges)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from hnpal.db.session import session_scope
from tests.conftest import execute, one, rows  # noqa: F401  (one and execute: re-exported for the memory and privacy tests)

_telegram_ids = itertools.count(8_600_001)
_hn_ids = itertools.count(960_000_001)


class Factory:
    """Users, posts, deliveries, conversations and memory rows."""

    def user(self, *, telegram_id: int | None = None, first_name: str = "Ada", interests: list[str] | None = None,
             memory_enabled: bool = True) -> dict[str, Any]:  # fmt: skip
        telegram_id = telegram_id or next(_telegram_ids)
        with session_scope() as session:
            user_id = session.execute(
                text(
                    "INSERT INTO users (telegram_id, first_name, username, interests, memory_enabled) "
                    "VALUES (:t, :f, :u, CAST(:i AS jsonb), :m) RETURNING id"
                ),
                {
                    "t": telegram_id,
                    "f": first_name,
                    "u": f"user{telegram_id}",
                    "i": json.dumps(interests or []),
                    "m": memory_enabled,
                },  # fmt: skip
            ).scalar_one()
        return {"id": user_id, "telegram_id": telegram_id, "first_name": first_name}

    def post(self, title: str = "A post about storage engines", *, domain: str | None = None) -> dict[str, Any]:
        hn_id = next(_hn_ids)
        domain = domain or f"example{hn_id}.com"
        with session_scope() as session:
            post_id = session.execute(
                text(
                    "INSERT INTO posts (hn_id, type, title, url, domain, score, summary, summary_status, "
                    "summarized_at) VALUES (:h, 'story', :t, :u, :d, 100, 'A summary.', 'done', now()) RETURNING id"
                ),
                {"h": hn_id, "t": title, "u": f"https://{domain}/{hn_id}", "d": domain},
            ).scalar_one()
        return {"id": post_id, "hn_id": hn_id, "title": title, "domain": domain}

    def delivery(self, user: dict, post: dict, *, reaction: str | None = None, saved: bool = False,
                 reacted_days_ago: float = 0, message_id: int | None = 1) -> int:  # fmt: skip
        reacted_at = datetime.now(UTC) - timedelta(days=reacted_days_ago) if reaction else None
        with session_scope() as session:
            return session.execute(
                text(
                    "INSERT INTO deliveries (user_id, post_id, message_id, batch_id, reaction, reacted_at, is_saved, "
                    "saved_at) VALUES (:u, :p, :m, 'manual-1', :r, :ra, :s, CASE WHEN :s THEN now() END) RETURNING id"
                ),
                {"u": user["id"], "p": post["id"], "m": message_id, "r": reaction, "ra": reacted_at, "s": saved},
            ).scalar_one()

    def conversation(self, user: dict, post: dict, messages: list[tuple[str, str]], *, ended: bool = True,
                     summary: str | None = None) -> int:  # fmt: skip
        body = [{"role": role, "content": content, "timestamp": datetime.now(UTC).isoformat()}
                for role, content in messages]  # fmt: skip
        with session_scope() as session:
            return session.execute(
                text(
                    "INSERT INTO conversations (user_id, post_id, messages, summary, started_at, ended_at, "
                    "end_reason, context_loaded) VALUES (:u, :p, CAST(:m AS jsonb), :s, now() - interval '5 minutes', "
                    "CASE WHEN :e THEN now() END, CASE WHEN :e THEN 'done' END, CAST(:c AS jsonb)) RETURNING id"
                ),
                {
                    "u": user["id"],
                    "p": post["id"],
                    "m": json.dumps(body),
                    "s": summary,
                    "e": ended,
                    "c": json.dumps({"article": True}),
                },  # fmt: skip
            ).scalar_one()

    def memory(self, user: dict, content: str, *, type: str = "interest", source: str = "onboarding",
               active: bool = True, confidence: float = 1.0) -> int:  # fmt: skip
        with session_scope() as session:
            return session.execute(
                text(
                    "INSERT INTO memory (user_id, type, content, source_type, active, confidence) "
                    "VALUES (:u, :t, :c, :s, :a, :f) RETURNING id"
                ),
                {"u": user["id"], "t": type, "c": content, "s": source, "a": active, "f": confidence},
            ).scalar_one()


@pytest.fixture
def make() -> Factory:
    return Factory()


def memory_rows(user_id: int) -> list[dict[str, Any]]:
    return rows("SELECT * FROM memory WHERE user_id = :u ORDER BY id", u=user_id)
