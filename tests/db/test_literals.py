"""Each Literal type of a status column allows exactly what the column's CHECK constraint allows, as the
migrations created it (read back from pg_constraint)."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest
from sqlalchemy import Engine, text

from hnpal.conversations.models import EndReason
from hnpal.deliveries.models import DigestStatus, Reaction
from hnpal.llm.models import ProviderStatus
from hnpal.memory.models import MemorySource, MemoryType
from hnpal.posts.models import CrawlStatus, PostType, SummaryStatus
from hnpal.review.models import QuarantineStatus, ReviewKind, ReviewStatus, SendStatus
from hnpal.telegram.models import UpdateStatus
from hnpal.users.models import UserStatus

# (table, constraint name, Literal type)
CASES: list[tuple[str, str, Any]] = [
    ("posts", "ck_posts_type_valid", PostType),
    ("posts", "ck_posts_crawl_status_valid", CrawlStatus),
    ("posts", "ck_posts_summary_status_valid", SummaryStatus),
    ("digests", "ck_digests_status_valid", DigestStatus),
    ("deliveries", "ck_deliveries_reaction_valid", Reaction),
    ("users", "ck_users_status_valid", UserStatus),
    ("memory", "ck_memory_type_valid", MemoryType),
    ("memory", "ck_memory_source_type_valid", MemorySource),
    ("conversations", "ck_conversations_end_reason_valid", EndReason),
    ("provider_health", "ck_provider_health_status_valid", ProviderStatus),
    ("review_items", "ck_review_items_kind_valid", ReviewKind),
    ("review_items", "ck_review_items_status_valid", ReviewStatus),
    ("review_sends", "ck_review_sends_status_valid", SendStatus),
    ("quarantine_messages", "ck_quarantine_messages_status_valid", QuarantineStatus),
    ("telegram_updates", "ck_telegram_updates_status_valid", UpdateStatus),
]


def allowed(engine: Engine, table: str, name: str) -> set[str]:
    """The quoted values of a CHECK (column IN (...)) constraint, as PostgreSQL stores it."""
    with engine.connect() as conn:
        definition = conn.execute(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = CAST(:table AS regclass) AND conname = :name AND contype = 'c'"
            ),
            {"table": table, "name": name},
        ).scalar_one_or_none()
    assert definition is not None, f"no CHECK constraint {name} on {table}"
    return set(re.findall(r"'([^']*)'", definition))


@pytest.mark.parametrize(("table", "name", "alias"), CASES, ids=[c[1] for c in CASES])
def test_literal_matches_check_constraint(engine: Engine, table: str, name: str, alias: Any) -> None:
    assert allowed(engine, table, name) == set(get_args(alias))
