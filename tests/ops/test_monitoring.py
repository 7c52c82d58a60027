"""The operator's metrics (spend today, budget, users, deliveries, failures, liveness) against rows in
the real database and heartbeats in the real Redis; and the shipped alert rules and Grafana dashboard:
well-formed, and using only metrics our endpoint exports (``promtool check rules`` too, where installed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import delete

from hnpal.db.session import session_scope
from hnpal.deliveries.models import Delivery, Digest
from hnpal.ops import heartbeat
from hnpal.ops.metrics import render
from hnpal.posts.models import Post
from hnpal.usage.models import AgentCall
from hnpal.users.models import User
from tests.ops.test_metrics import samples, value

MONITORING = Path(__file__).resolve().parents[2] / "config" / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
METRIC = re.compile(r"\bhnpal_[a-z0-9_]+\b")


def exported_names(exposition: str) -> set[str]:
    """Every metric the endpoint declares (a family without samples too: hnpal_llm_provider_up has none
    without a key) and every sample name (counters' ``_total``)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {family.name for family in text_string_to_metric_families(exposition)}
    return families | {name for name, _labels in samples(exposition)}


def test_operator_metrics_follow_the_rows(redis_client, key_prefix: str) -> None:
    before = samples(render(redis_client=redis_client, prefix=key_prefix))
    tid = int(uuid.uuid4().int % 10**9) + 3_000_000_000
    with session_scope() as session:
        users = [User(telegram_id=tid + i, status=s) for i, s in enumerate(("active", "active", "paused", "blocked"))]
        post = Post(hn_id=tid, type="story", title="metrics", crawl_status="failed", crawl_error="HTTP 404")
        session.add_all([*users, post])
        session.flush()
        ids = [u.id for u in users]
        post_id = post.id
        session.add_all([
            AgentCall(agent_type="summarization", model="m-today", input_tokens=10, output_tokens=5,
                      cost_usd=Decimal("0.25"), latency_ms=1, success=True, post_id=post_id),
            Digest(user_id=ids[0], batch_id="metrics-today", status="sent", sent_at=None),
            Delivery(user_id=ids[0], post_id=post_id, batch_id="metrics-today", message_id=7),
        ])  # fmt: skip
        session.flush()
        session.execute(
            Digest.__table__.update().where(Digest.batch_id == "metrics-today").values(sent_at=Digest.created_at)
        )
    heartbeat.beat("bot", client=redis_client, prefix=key_prefix)
    try:
        after = samples(render(redis_client=redis_client, prefix=key_prefix))

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert grew("hnpal_llm_spent_today_usd") == pytest.approx(0.25)
        assert value(after, "hnpal_llm_daily_budget_usd") == 5.0  # the default
        assert (grew("hnpal_users", status="active"), grew("hnpal_users", status="paused")) == (2, 1)
        assert grew("hnpal_users", status="blocked") == 1 and ("hnpal_users", (("status", "deleted"),)) in after
        assert grew("hnpal_delivered_today", what="digests") == 1
        assert grew("hnpal_delivered_today", what="posts") == 1
        assert grew("hnpal_failures", kind="crawl") == 1
        assert {k for (n, labels) in after if n == "hnpal_failures" for _, k in labels} == {
            "update", "crawl", "digest", "summary"
        }  # fmt: skip
        assert value(after, "hnpal_process_alive", process="bot") == 1
        assert 0 <= value(after, "hnpal_heartbeat_age_seconds", process="bot") < 60
        assert value(after, "hnpal_process_alive", process="beat") == 0  # no beat in this prefix
        assert ("hnpal_heartbeat_age_seconds", (("process", "beat"),)) not in after
        # a stale heartbeat counts as down
        redis_client.set(f"{key_prefix}{heartbeat.KEY}bot", f"{time.time() - 600:.3f}")
        stale = samples(render(redis_client=redis_client, prefix=key_prefix))
        assert value(stale, "hnpal_process_alive", process="bot") == 0
    finally:
        with session_scope() as session:
            session.execute(delete(AgentCall).where(AgentCall.post_id == post_id))
            session.execute(delete(User).where(User.id.in_(ids)))
            session.execute(delete(Post).where(Post.id == post_id))


def test_beat_writes_its_heartbeat_at_each_tick(redis_client, key_prefix: str, settings_env, tmp_path: Path) -> None:
    """Beat's scheduler (configured in celeryconfig.py) beats from its tick, so a wedged scheduler stops."""
    import celeryconfig
    from hnpal.celery import app

    assert celeryconfig.beat_scheduler == "hnpal.ops.heartbeat:BeatScheduler"
    settings_env(redis_key_prefix=key_prefix)
    heartbeat._last.clear()
    scheduler = heartbeat.BeatScheduler(app=app, schedule_filename=str(tmp_path / "schedule"), lazy=True)
    try:
        scheduler.setup_schedule()
        scheduler.tick()
    finally:
        scheduler.close()
    assert float(redis_client.get(f"{key_prefix}{heartbeat.KEY}beat")) > time.time() - 60


def test_alert_rules_are_well_formed_and_use_exported_metrics(redis_client, key_prefix: str) -> None:
    rules = yaml.safe_load(RULES.read_text())
    [group] = rules["groups"]
    names = {rule["alert"] for rule in group["rules"]}
    # the alerts an operator needs: a bad key, the budget, a backlog, the bot (and beat) down
    assert {"HnpalModelKeyRefused", "HnpalDailyBudgetReached", "HnpalQueueBacklog", "HnpalBotDown",
            "HnpalBeatDown"} <= names  # fmt: skip
    exported = exported_names(render(redis_client=redis_client, prefix=key_prefix))
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        used = set(METRIC.findall(rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not installed: the rules were checked by structure and metric names only")
        return
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_dashboard_shows_only_exported_metrics(redis_client, key_prefix: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    exported = exported_names(render(redis_client=redis_client, prefix=key_prefix))
    used: set[str] = set()
    ids = set()
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids and panel["type"] in ("timeseries", "stat") and panel["targets"], panel
        ids.add(panel["id"])
        for target in panel["targets"]:
            used |= set(METRIC.findall(target["expr"]))
    assert used <= exported, used - exported
    wanted = {"hnpal_llm_spent_today_usd", "hnpal_llm_daily_budget_usd", "hnpal_users", "hnpal_delivered_today",
              "hnpal_failures", "hnpal_queue_depth", "hnpal_process_alive", "hnpal_llm_provider_up"}  # fmt: skip
    assert wanted <= used
