"""The pipeline's Prometheus metrics, checked against rows inserted into the real database.

The metrics are read through their own connection (as a scrape does), so the rows are committed; each
test compares the figures before and after its inserts, and deletes its rows at the end.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, text
from typer.testing import CliRunner

from hnpal.deliveries.models import Delivery, Digest
from hnpal.ops.metrics import TELEGRAM_429_KEY, count_telegram_429, render
from hnpal.posts.models import Post
from hnpal.summaries.models import Summary
from hnpal.telegram.models import TelegramUpdate
from hnpal.usage.models import AgentCall
from hnpal.users.models import User

_ids = itertools.count(int(uuid.uuid4().int % 10_000_000) * 100 + 900_000_000)


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(figures: dict, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def committed(engine) -> Iterator[list]:
    """Rows added here are committed, and deleted at the end (children first)."""
    from sqlalchemy.orm import Session

    rows: list = []
    yield rows
    with Session(engine) as session, session.begin():
        for row in reversed(rows):
            session.execute(
                delete(type(row)).where(*[c == getattr(row, c.key) for c in type(row).__mapper__.primary_key])
            )


def test_metrics_count_inserted_rows(engine, committed: list, redis_client, key_prefix: str) -> None:
    from sqlalchemy.orm import Session

    before = samples(render(engine=engine, redis_client=redis_client, prefix=key_prefix))
    assert value(before, "hnpal_metrics_up") == 1
    with Session(engine, expire_on_commit=False) as session, session.begin():
        posts = [
            Post(hn_id=next(_ids), type="story", title=f"post {status}", crawl_status=status,
                 is_crawl_success=status in ("success", "reused"))
            for status in ("success", "success", "failed", "pending", "reused")
        ]  # fmt: skip
        session.add_all(posts)
        session.flush()
        summaries = [
            Summary(post_id=posts[0].id, style="basic", text="s", model="offline-extractive"),
            Summary(post_id=posts[1].id, style="basic", text="s", model="gpt-4o-mini"),
            Summary(post_id=posts[1].id, style="technical", text="s", model="gpt-4o-mini"),
        ]
        user = User(telegram_id=next(_ids))
        session.add_all([*summaries, user])
        session.flush()
        sent = Digest(user_id=user.id, batch_id="2026-01-01-morning", status="sent")
        failed = Digest(user_id=user.id, batch_id="2026-01-01-evening", status="failed", error="refused")
        sending = Digest(user_id=user.id, batch_id="2026-01-02-morning", status="sending")
        session.add_all([sent, failed, sending])
        deliveries = [
            Delivery(user_id=user.id, post_id=posts[0].id, batch_id=sent.batch_id, message_id=11),
            Delivery(user_id=user.id, post_id=posts[1].id, batch_id=sent.batch_id, message_id=12),
            Delivery(user_id=user.id, post_id=posts[2].id, batch_id=failed.batch_id),  # never sent: failed
            Delivery(user_id=user.id, post_id=posts[3].id, batch_id=sending.batch_id),  # still to send
        ]
        calls = [
            AgentCall(agent_type="summarizer", model="gpt-4o-mini", input_tokens=1000, output_tokens=200,
                      cost_usd=Decimal("0.000270"), post_id=posts[1].id),
            AgentCall(agent_type="summarizer", model="gpt-4o-mini", input_tokens=500, output_tokens=0,
                      cost_usd=Decimal("0.000075"), success=False, error_message="429"),
            AgentCall(agent_type="summarizer", model="offline-extractive", input_tokens=300, output_tokens=50,
                      cost_usd=Decimal("0")),
        ]  # fmt: skip
        update = TelegramUpdate(update_id=next(_ids), payload={}, status="quarantined", error="boom",
                                expires_at=text("now() + interval '7 days'"))  # fmt: skip
        session.add_all([*deliveries, *calls, update])
    committed += [*posts, user, *summaries, sent, failed, sending, *deliveries, *calls, update]
    count_telegram_429(redis_client, prefix=key_prefix)
    count_telegram_429(redis_client, prefix=key_prefix)
    redis_client.rpush(f"{key_prefix}crawl", "{}", "{}", "{}")

    after = samples(render(engine=engine, redis_client=redis_client, prefix=key_prefix))

    def delta(name: str, **labels: str) -> float:
        return round(value(after, name, **labels) - value(before, name, **labels), 6)

    assert delta("hnpal_posts_fetched") == 5
    assert delta("hnpal_posts", crawl_status="success") == 2
    assert delta("hnpal_posts", crawl_status="failed") == 1
    assert delta("hnpal_posts", crawl_status="reused") == 1
    assert delta("hnpal_summaries", provider="offline", model="offline-extractive") == 1
    assert delta("hnpal_summaries", provider="openai", model="gpt-4o-mini") == 2
    assert delta("hnpal_deliveries", state="sent") == 2
    assert delta("hnpal_deliveries", state="failed") == 1
    assert delta("hnpal_deliveries", state="pending") == 1
    assert delta("hnpal_digests", status="failed") == 1
    assert delta("hnpal_telegram_updates", status="quarantined") == 1
    assert delta("hnpal_llm_calls", model="gpt-4o-mini", success="true") == 1
    assert delta("hnpal_llm_calls", model="gpt-4o-mini", success="false") == 1
    assert delta("hnpal_llm_tokens", model="gpt-4o-mini", direction="input") == 1500
    assert delta("hnpal_llm_tokens", model="gpt-4o-mini", direction="output") == 200
    assert delta("hnpal_llm_tokens", model="offline-extractive", direction="input") == 300
    assert delta("hnpal_llm_cost_usd", model="gpt-4o-mini") == pytest.approx(0.000345)
    assert value(after, "hnpal_telegram_429_total") == 2  # a private prefix: counted from zero
    assert value(after, "hnpal_queue_depth", queue="crawl") == 3
    assert int(redis_client.get(f"{key_prefix}{TELEGRAM_429_KEY}")) == 2
    print(f"metrics: {len(after)} samples; deltas checked against 5 posts, 3 summaries, 4 deliveries, 3 calls")


def test_metrics_report_an_unreachable_database_instead_of_failing(redis_client, key_prefix: str) -> None:
    from sqlalchemy import create_engine

    dead = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    figures = samples(render(engine=dead, redis_client=redis_client, prefix=key_prefix))
    assert value(figures, "hnpal_metrics_up") == 0
    assert ("hnpal_queue_depth", (("queue", "default"),)) in figures  # Redis figures still there


def test_hnpal_metrics_prints_the_text_format() -> None:
    from hnpal.cli.main import app

    result = CliRunner().invoke(app, ["metrics"])
    assert result.exit_code == 0, result.output
    figures = samples(result.stdout)
    assert value(figures, "hnpal_metrics_up") == 1
    assert ("hnpal_posts_fetched", ()) in figures
