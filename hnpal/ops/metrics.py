"""The pipeline's own Prometheus metrics, computed at each scrape from PostgreSQL (the source of truth)
and Redis (queue depths, the 429 counter).

Flower's ``/metrics`` has the Celery side (tasks by state, worker liveness, runtimes); these are the
pipeline's figures. Counts read from tables are gauges: rows are pruned (agent_calls) and hard-deleted
(a deleted account's deliveries), so they are not monotonic counters.

=========================================  ==========================================================
metric                                     meaning
=========================================  ==========================================================
``hnpal_posts_fetched``                    posts stored (every HN item fetched once)
``hnpal_posts{crawl_status}``              posts by crawl outcome (success, reused, failed, ...)
``hnpal_summaries{provider,model}``        summaries stored, by provider (openai, offline) and model
``hnpal_deliveries{state}``                posts delivered (sent), refused or never sent (failed),
                                           reserved and not sent yet (pending)
``hnpal_digests{status}``                  digests by status
``hnpal_telegram_updates{status}``         stored Telegram updates by status (quarantined included)
``hnpal_llm_calls{model,success}``         agent_calls rows
``hnpal_llm_tokens{model,direction}``      LLM tokens, input and output
``hnpal_llm_cost_usd{model}``              LLM spend in USD
``hnpal_llm_spent_today_usd``              LLM spend since midnight UTC (what the daily budget counts)
``hnpal_llm_daily_budget_usd``             HNPAL_LLM_DAILY_BUDGET_USD
``hnpal_llm_provider_up{provider}``        1 while the model accepts the key, 0 once it refused it
                                           (only with a key configured; see hnpal/llm/health.py)
``hnpal_summaries_offline``                posts summarized offline while the model refused the key,
                                           waiting to be re-summarized
``hnpal_users{status}``                    users by status (active, paused, blocked, deleted)
``hnpal_delivered_today{what}``            digests sent and posts delivered since midnight UTC
``hnpal_failures{kind}``                   work that failed for good, by ``hnpal quarantine`` kind
                                           (update, crawl, digest, summary)
``hnpal_telegram_429_total``               Telegram 429 answers counted in Redis (a real counter)
``hnpal_queue_depth{queue}``               messages waiting in each Celery queue
``hnpal_heartbeat_age_seconds{process}``   seconds since the bot's / beat's last heartbeat
``hnpal_process_alive{process}``           1 when that heartbeat is recent (bot 120 s, beat 330 s)
``hnpal_metrics_up``                       1 when PostgreSQL answered this scrape, else 0
=========================================  ==========================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from hnpal.ops import heartbeat
from hnpal.posts.models import MAX_SUMMARY_ATTEMPTS as SUMMARY_ATTEMPTS
from hnpal.queues import QUEUES
from hnpal.users.models import USER_STATUSES

if TYPE_CHECKING:
    import redis

    from config.settings import Settings

log = logging.getLogger(__name__)

TELEGRAM_429_KEY = "ops:counter:telegram_429"
OFFLINE_MODEL = "offline-extractive"
# kombu's Redis transport keeps priority levels in sibling lists named "<queue>\x06\x16<priority>".
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

POSTS_SQL = text("SELECT crawl_status, count(*) FROM posts GROUP BY crawl_status")
SUMMARIES_SQL = text("SELECT model, count(*) FROM summaries GROUP BY model")
DELIVERIES_SQL = text(
    "SELECT CASE WHEN d.message_id IS NOT NULL THEN 'sent' "
    "WHEN g.status IN ('sent', 'empty', 'failed') THEN 'failed' ELSE 'pending' END AS state, count(*) "
    "FROM deliveries d LEFT JOIN digests g ON g.user_id = d.user_id AND g.batch_id = d.batch_id "
    "GROUP BY 1"
)
DIGESTS_SQL = text("SELECT status, count(*) FROM digests GROUP BY status")
UPDATES_SQL = text("SELECT status, count(*) FROM telegram_updates GROUP BY status")
TODAY_SQL = text(
    "SELECT coalesce((SELECT sum(cost_usd) FROM agent_calls WHERE called_at >= date_trunc('day', now() AT TIME "
    "ZONE 'UTC') AT TIME ZONE 'UTC'), 0), "
    "(SELECT count(*) FROM digests WHERE status = 'sent' AND sent_at >= date_trunc('day', now() AT TIME ZONE "
    "'UTC') AT TIME ZONE 'UTC'), "
    "(SELECT count(*) FROM deliveries WHERE message_id IS NOT NULL AND delivered_at >= date_trunc('day', now() "
    "AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), "
    "(SELECT count(*) FROM posts WHERE summary_status = 'offline')"
)
USERS_SQL = text("SELECT status, count(*) FROM users GROUP BY status")
FAILURES_SQL = text(
    "SELECT 'update', count(*) FROM telegram_updates WHERE status = 'quarantined' UNION ALL "
    "SELECT 'crawl', count(*) FROM posts WHERE crawl_status = 'failed' AND (crawl_error IS NULL OR crawl_error "
    "NOT LIKE 'dropped by operator: %') UNION ALL "
    "SELECT 'digest', count(*) FROM digests WHERE status = 'failed' AND (error IS NULL OR error NOT LIKE "
    "'dropped by operator: %') UNION ALL "
    "SELECT 'summary', count(*) FROM posts WHERE summary_status IN ('failed', 'offline') AND summary_attempts >= "
    ":attempts"
)
CALLS_SQL = text(
    "SELECT model, success, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
    "coalesce(sum(cost_usd), 0) FROM agent_calls GROUP BY model, success"
)


def provider_of(model: str) -> str:
    return "offline" if model == OFFLINE_MODEL else "openai"


def count_telegram_429(client: redis.Redis | None = None, *, prefix: str | None = None) -> None:
    """Count one 429 from Telegram (best effort: a Redis failure is logged, never raised)."""
    import redis

    try:
        if client is None:
            from hnpal.state.store import get_redis

            client = get_redis()
        if prefix is None:
            from config.settings import get_settings

            prefix = get_settings().redis_key_prefix
        client.incr(f"{prefix}{TELEGRAM_429_KEY}")
    except (redis.RedisError, OSError) as exc:
        log.warning("429 not counted (redis unavailable): %s", exc)


class PipelineCollector(Collector):
    """Computes every metric above at each scrape (a handful of GROUP BY queries)."""

    def __init__(
        self, *, engine: Engine | None = None, redis_client: redis.Redis | None = None, prefix: str | None = None
    ) -> None:
        self._engine = engine
        self._redis = redis_client
        self._prefix = prefix

    def _db(self) -> Engine:
        if self._engine is None:
            from hnpal.db.session import get_engine

            self._engine = get_engine()
        return self._engine

    def _client(self) -> redis.Redis:
        if self._redis is None:
            from hnpal.state.store import get_redis

            self._redis = get_redis()
        return self._redis

    def _key_prefix(self) -> str:
        if self._prefix is None:
            from config.settings import get_settings

            self._prefix = get_settings().redis_key_prefix
        return self._prefix

    def describe(self) -> list[Metric]:
        return []  # computed at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hnpal_metrics_up", "1 when PostgreSQL answered this scrape")
        try:
            yield from self._from_database()
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage instead of failing
            log.warning("metrics: PostgreSQL unavailable: %s", exc)
            up.add_metric([], 0)
        yield up
        yield from self._from_redis()

    def _from_database(self) -> Iterator[Metric]:
        with self._db().connect() as conn:
            posts = conn.execute(POSTS_SQL).all()
            summaries = conn.execute(SUMMARIES_SQL).all()
            deliveries = conn.execute(DELIVERIES_SQL).all()
            digests = conn.execute(DIGESTS_SQL).all()
            updates = conn.execute(UPDATES_SQL).all()
            calls = conn.execute(CALLS_SQL).all()
            spent, digests_today, posts_today, offline = conn.execute(TODAY_SQL).one()
            users = conn.execute(USERS_SQL).all()
            failures = conn.execute(FAILURES_SQL, {"attempts": SUMMARY_ATTEMPTS}).all()
            provider_up = self._provider_up()
        fetched = GaugeMetricFamily("hnpal_posts_fetched", "Posts stored (HN items fetched)")
        fetched.add_metric([], sum(n for _, n in posts))
        yield fetched
        by_status = GaugeMetricFamily("hnpal_posts", "Posts by crawl outcome", labels=["crawl_status"])
        for status, n in posts:
            by_status.add_metric([status], n)
        yield by_status
        summ = GaugeMetricFamily("hnpal_summaries", "Summaries by provider and model", labels=["provider", "model"])
        for model, n in summaries:
            summ.add_metric([provider_of(model), model], n)
        yield summ
        deliv = GaugeMetricFamily(
            "hnpal_deliveries", "Posts delivered (sent), not sent by a finished digest (failed), or pending",
            labels=["state"],
        )  # fmt: skip
        found: dict[str, int] = dict(deliveries)
        for state in ("sent", "failed", "pending"):
            deliv.add_metric([state], found.get(state, 0))
        yield deliv
        dig = GaugeMetricFamily("hnpal_digests", "Digests by status", labels=["status"])
        for status, n in digests:
            dig.add_metric([status], n)
        yield dig
        upd = GaugeMetricFamily("hnpal_telegram_updates", "Stored Telegram updates by status", labels=["status"])
        for status, n in updates:
            upd.add_metric([status], n)
        yield upd
        n_calls = GaugeMetricFamily("hnpal_llm_calls", "LLM calls (agent_calls rows)", labels=["model", "success"])
        tokens = GaugeMetricFamily("hnpal_llm_tokens", "LLM tokens", labels=["model", "direction"])
        cost = GaugeMetricFamily("hnpal_llm_cost_usd", "LLM spend in USD", labels=["model"])
        per_model: dict[str, list[float]] = {}
        for model, success, n, tin, tout, usd in calls:
            n_calls.add_metric([model, "true" if success else "false"], n)
            acc = per_model.setdefault(model, [0, 0, 0.0])
            acc[0] += int(tin)
            acc[1] += int(tout)
            acc[2] += float(usd)
        for model, (tin, tout, usd) in sorted(per_model.items()):
            tokens.add_metric([model, "input"], tin)
            tokens.add_metric([model, "output"], tout)
            cost.add_metric([model], usd)
        yield n_calls
        yield tokens
        yield cost
        settings = self._settings()
        today = GaugeMetricFamily("hnpal_llm_spent_today_usd", "LLM spend since midnight UTC (the daily budget's)")
        today.add_metric([], float(spent))
        yield today
        budget = GaugeMetricFamily("hnpal_llm_daily_budget_usd", "The daily LLM budget (HNPAL_LLM_DAILY_BUDGET_USD)")
        budget.add_metric([], float(settings.llm_daily_budget_usd))
        yield budget
        up = GaugeMetricFamily("hnpal_llm_provider_up", "1 while the model accepts the key, 0 once it refused it",
                               labels=["provider"])  # fmt: skip
        if provider_up is not None:
            up.add_metric(["openai"], 1 if provider_up else 0)
        yield up
        waiting = GaugeMetricFamily("hnpal_summaries_offline", "Posts summarized offline while the model refused the "
                                    "key, waiting to be re-summarized")  # fmt: skip
        waiting.add_metric([], offline)
        yield waiting
        by_user = GaugeMetricFamily("hnpal_users", "Users by status", labels=["status"])
        found_users: dict[str, int] = dict(users)
        for status in USER_STATUSES:
            by_user.add_metric([status], found_users.get(status, 0))
        yield by_user
        delivered = GaugeMetricFamily("hnpal_delivered_today", "Digests sent and posts delivered since midnight UTC",
                                      labels=["what"])  # fmt: skip
        delivered.add_metric(["digests"], digests_today)
        delivered.add_metric(["posts"], posts_today)
        yield delivered
        failed = GaugeMetricFamily("hnpal_failures", "Work that failed for good, by hnpal quarantine kind",
                                   labels=["kind"])  # fmt: skip
        for kind, n in failures:
            failed.add_metric([kind], n)
        yield failed

    def _settings(self) -> Settings:
        from config.settings import get_settings

        return get_settings()

    def _provider_up(self) -> bool | None:
        """The stored health of the configured key (None without a key), on this collector's engine."""
        from hnpal.llm import health

        settings = self._settings()
        fingerprint = health.fingerprint(settings)
        if fingerprint is None:
            return None
        with self._db().connect() as conn:
            row = conn.execute(
                text("SELECT status FROM provider_health WHERE name = :name AND fingerprint = :fp"),
                {"name": health.PROVIDER, "fp": fingerprint},
            ).first()
        return row is None or row.status == "up"

    def _from_redis(self) -> Iterator[Metric]:
        import redis

        try:
            client = self._client()
            prefix = self._key_prefix()
            raw = client.get(f"{prefix}{TELEGRAM_429_KEY}")
            beats = {name: client.get(f"{prefix}{heartbeat.KEY}{name}") for name in heartbeat.STALE_AFTER}
            with client.pipeline(transaction=False) as pipe:
                for queue in QUEUES:
                    for suffix in _PRIORITY_SUFFIXES:
                        pipe.llen(f"{prefix}{queue}{suffix}")
                lengths = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            return
        c429 = CounterMetricFamily("hnpal_telegram_429", "Telegram 429 (flood control) answers")
        c429.add_metric([], int(raw or 0))
        yield c429
        depth = GaugeMetricFamily("hnpal_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
        step = len(_PRIORITY_SUFFIXES)
        for i, queue in enumerate(QUEUES):
            depth.add_metric([queue], sum(lengths[i * step : (i + 1) * step]))
        yield depth
        age = GaugeMetricFamily("hnpal_heartbeat_age_seconds", "Seconds since the process's last heartbeat",
                                labels=["process"])  # fmt: skip
        alive = GaugeMetricFamily("hnpal_process_alive", "1 when the process's heartbeat is recent",
                                  labels=["process"])  # fmt: skip
        now = time.time()
        for name, stale in heartbeat.STALE_AFTER.items():
            raw_beat = beats.get(name)
            seconds = max(0.0, now - float(raw_beat)) if raw_beat else None
            if seconds is not None:
                age.add_metric([name], seconds)
            alive.add_metric([name], 1 if seconds is not None and seconds < stale else 0)
        yield age
        yield alive


def registry(**kwargs: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PipelineCollector(**kwargs))
    return reg


def render(**kwargs: Any) -> str:
    """The metrics in the Prometheus text format."""
    return generate_latest(registry(**kwargs)).decode()


def serve(*, address: str, port: int) -> None:
    """Serve ``/metrics`` until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=address, registry=registry())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("metrics on http://%s:%s/metrics", address, port)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
