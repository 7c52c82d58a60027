"""Migrations on a real, empty database: up, down to base, up again; models and migrations agree."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from hnpal.db import migrate
from hnpal.models import Base

TABLES = {
    "users",
    "posts",
    "deliveries",
    "digests",
    "conversations",
    "memory",
    "user_token_usage",
    "agent_calls",
    "llm_reservations",
    "provider_health",
    "audit_log",
    "telegram_updates",
    "operators",
    "console_sessions",
    "edit_tags",
    "review_items",
    "review_sends",
    "user_protocol",
    "quarantine_messages",
    "llm_cost_daily",
    "summaries",
    "user_affinity",
    "user_topic_affinity",
    "interest_topics",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(fresh_database: str) -> None:
    assert migrate.current_revision(fresh_database) is None
    migrate.upgrade(fresh_database)
    assert migrate.current_revision(fresh_database) == migrate.head_revision()
    assert _tables(fresh_database) == TABLES

    migrate.downgrade(fresh_database, "base")
    assert migrate.current_revision(fresh_database) is None
    assert _tables(fresh_database) == set()

    migrate.upgrade(fresh_database)
    assert _tables(fresh_database) == TABLES


def test_autogenerate_finds_no_difference(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_partial_indexes_exist(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").all()
    finally:
        engine.dispose()
    defs = dict(rows)
    assert "WHERE is_saved" in defs["ix_deliveries_saved"]
    assert "WHERE (reaction IS NOT NULL)" in defs["ix_deliveries_reaction"]
    assert "WHERE (ended_at IS NULL)" in defs["ix_conversations_active"]
    assert "WHERE active" in defs["ix_memory_user_active"]
    assert "DESC" in defs["ix_posts_score"]
    assert "INCLUDE (kind, key, weight) WHERE ((weight <> 0)" in defs["ix_user_affinity_counted"]


def test_registrable_domain_migration_recomputes_stored_domains(fresh_database: str) -> None:
    """Posts, domain affinities and muted domains written with whole hosts come out as registrable domains."""
    from sqlalchemy import text

    migrate.upgrade(fresh_database, "0008")
    engine = create_engine(fresh_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO posts (hn_id, type, title, url, domain) VALUES"
                    " (1, 'story', 'a', 'https://en.wikipedia.org/wiki/A', 'en.wikipedia.org'),"
                    " (2, 'story', 'b', 'https://de.wikipedia.org/wiki/B', 'de.wikipedia.org'),"
                    " (3, 'story', 'c', 'https://someone.github.io/c', 'someone.github.io'),"
                    " (4, 'story', 'd', NULL, NULL)"
                )
            )
            user_id = conn.execute(
                text(
                    "INSERT INTO users (telegram_id, digest_preferences) VALUES"
                    ' (7, \'{"muted_domains": ["old.reddit.com", "reddit.com"]}\') RETURNING id'
                )
            ).scalar()
            conn.execute(
                text(
                    "INSERT INTO user_affinity (user_id, kind, key, weight) VALUES"
                    " (:u, 'domain', 'en.wikipedia.org', 2), (:u, 'domain', 'de.wikipedia.org', -1),"
                    " (:u, 'topic', 'en.wikipedia.org', 5)"
                ),
                {"u": user_id},
            )
        migrate.upgrade(fresh_database, "head")
        with engine.connect() as conn:
            domains = dict(conn.execute(text("SELECT hn_id, domain FROM posts")).all())
            keywords = conn.execute(text("SELECT keywords FROM posts WHERE hn_id = 1")).scalar()
            affinity = set(conn.execute(text("SELECT kind, key, weight FROM user_affinity")).all())
            muted = conn.execute(text("SELECT digest_preferences->'muted_domains' FROM users")).scalar()
    finally:
        engine.dispose()
    assert domains == {1: "wikipedia.org", 2: "wikipedia.org", 3: "someone.github.io", 4: None}
    assert keywords[-1] == "wikipedia.org"  # the computed keywords follow the new domain
    assert affinity == {("domain", "wikipedia.org", 1), ("topic", "en.wikipedia.org", 5)}
    assert muted == ["reddit.com"]
