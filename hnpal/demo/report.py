"""Step 8: the database in brief (users, digests, deliveries, conversations, memory, updates,
summaries)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import text

from hnpal.demo.common import shorten

USERS_SQL = text(
    "SELECT telegram_id, first_name, interests, digest_preferences AS p, status FROM users ORDER BY telegram_id"
)


DIGESTS_SQL = text(
    "SELECT u.first_name, g.batch_id, g.manual, g.status, g.style, g.post_count, g.sent_at "
    "FROM digests g JOIN users u ON u.id = g.user_id ORDER BY u.telegram_id, g.id"
)


DELIVERIES_SQL = text(
    "SELECT u.first_name, count(d.id) AS reserved, count(d.message_id) AS delivered, "
    "count(*) FILTER (WHERE d.reaction = 'up') AS up, count(*) FILTER (WHERE d.reaction = 'down') AS down, "
    "count(*) FILTER (WHERE d.is_saved) AS saved, count(*) FILTER (WHERE d.is_read) AS read "
    "FROM users u LEFT JOIN deliveries d ON d.user_id = u.id GROUP BY u.id, u.first_name ORDER BY u.telegram_id"
)


CONVERSATIONS_SQL = text(
    "SELECT u.first_name, p.hn_id, jsonb_array_length(c.messages) AS messages, c.end_reason, "
    "c.total_input_tokens + c.total_output_tokens AS tokens, c.context_loaded ? 'memory_extraction' AS extracted "
    "FROM conversations c JOIN users u ON u.id = c.user_id JOIN posts p ON p.id = c.post_id ORDER BY c.id"
)


MEMORY_SQL = text(
    "SELECT u.first_name, m.type, m.source_type, m.content, m.confidence FROM memory m "
    "JOIN users u ON u.id = m.user_id WHERE m.active ORDER BY u.telegram_id, m.id"
)


UPDATES_SQL = text("SELECT status, count(*) AS n FROM telegram_updates GROUP BY status ORDER BY status")


SUMMARIES_SQL = text(
    "SELECT style, count(*) AS n, count(DISTINCT model) AS models, sum(output_tokens) AS tokens "
    "FROM summaries GROUP BY style ORDER BY style"
)


def database_summary(console: Console) -> None:
    from hnpal.db.session import session_scope

    with session_scope() as session:
        users = session.execute(USERS_SQL).all()
        digests = session.execute(DIGESTS_SQL).all()
        deliveries = session.execute(DELIVERIES_SQL).all()
        updates = session.execute(UPDATES_SQL).all()
        summaries = session.execute(SUMMARIES_SQL).all()
        conversations = session.execute(CONVERSATIONS_SQL).all()
        memory = session.execute(MEMORY_SQL).all()

    def table(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
        out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAVY)
        for column in columns:
            out.add_column(column, overflow="fold")
        for row in rows:
            out.add_row(*(Text("" if v is None else str(v)) for v in row))
        return out

    console.print(
        table(
            "users",
            ("telegram id", "name", "interests", "digest style", "summary style", "time zone", "at", "posts", "status"),
            [
                (
                    u.telegram_id,
                    u.first_name,
                    ", ".join(u.interests),
                    u.p.get("style", "flat_scroll"),
                    u.p.get("summary_style", "basic"),
                    u.p.get("timezone", "UTC"),
                    u.p.get("time", "07:00"),
                    u.p.get("max_posts", 10),
                    u.status,
                )  # fmt: skip
                for u in users
            ],
        )
    )
    console.print(
        table(
            "digests",
            ("user", "batch", "kind", "status", "style", "posts", "sent at (UTC)"),
            [
                (
                    d.first_name,
                    d.batch_id,
                    "on request" if d.manual else "scheduled",
                    d.status,
                    d.style,
                    d.post_count,
                    f"{d.sent_at:%H:%M:%S}" if d.sent_at else "",
                )  # fmt: skip
                for d in digests
            ],
        )
    )
    console.print(
        table(
            "deliveries per user",
            ("user", "reserved", "delivered", "👍", "👎", "saved", "read"),
            [tuple(d) for d in deliveries],
        )
    )
    console.print(
        table(
            "conversations",
            ("user", "HN id", "messages", "ended", "tokens", "memory extracted"),
            [tuple(c) for c in conversations],
        )
    )
    console.print(
        table(
            "memory (active)",
            ("user", "type", "source", "content", "confidence"),
            [(m.first_name, m.type, m.source_type, shorten(m.content, 90), m.confidence) for m in memory],
        )
    )
    console.print(table("telegram_updates", ("status", "updates"), [tuple(u) for u in updates]))
    console.print(
        table("summaries by style", ("style", "summaries", "models", "output tokens"), [tuple(s) for s in summaries])
    )
