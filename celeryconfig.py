"""Celery configuration for HN Pal (read by ``hnpal.celery.app``).

Reliability defaults: prefetch 1, late acks only on idempotent tasks (set per
task), results ignored unless someone reads them, a Redis visibility timeout above every countdown,
and JSON only.
"""

from __future__ import annotations

import pkgutil

from celery.schedules import crontab as _crontab

import tasks as _tasks
from config.settings import get_settings
from hnpal import broker as _broker
from hnpal import queues as _queues
from hnpal.runtime import broker_url as _broker_url
from hnpal.runtime import redis_url as _redis_url

_settings = get_settings()

# The longest countdown/ETA any task may use (retry backoff is capped by it). The Redis transport
# redelivers an unacknowledged message after the visibility timeout, so it must stay above this.
# Defaults 1 h and 2 h (HNPAL_MAX_COUNTDOWN, HNPAL_BROKER_VISIBILITY_TIMEOUT; the settings refuse
# a timeout that is not above the countdown).
MAX_COUNTDOWN = _settings.max_countdown
VISIBILITY_TIMEOUT = _settings.broker_visibility_timeout
assert VISIBILITY_TIMEOUT > MAX_COUNTDOWN
# A killed worker's reserved messages come back when a live worker of the same broker looks for
# messages unacknowledged for longer than the visibility timeout: at its start, then every
# RESTORE_PERIOD seconds (kombu's 10 s x every 10th look for the default timeout; tighter for a short one).
RESTORE_PERIOD = max(1, min(100, VISIBILITY_TIMEOUT // 20))
# One worker at a time restores, under a lock in Redis; a worker killed while holding it would block
# every restore until the lock expires (kombu: 5 minutes), so it expires within the timeout too.
_restore = {
    "unacked_restore_interval": min(10, RESTORE_PERIOD),
    "unacked_restore_throttle": max(1, RESTORE_PERIOD // min(10, RESTORE_PERIOD)),
    "unacked_mutex_expire": min(300, VISIBILITY_TIMEOUT),
}

broker_url = _broker_url()
# kombu's Redis transport with one client object per channel instead of one per command (hnpal/broker.py),
# installed under the ``redis``/``rediss`` schemes so the broker URL keeps a scheme Flower knows (its
# Broker tab and /api/queues/length read the queues' lengths from it).
_broker.install()
result_backend = _redis_url().replace("unix://", "redis+socket://", 1)
_prefix = {"global_keyprefix": _settings.redis_key_prefix} if _settings.redis_key_prefix else {}
broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT, **_restore, **_prefix}
result_backend_transport_options = {**_prefix}
broker_connection_retry_on_startup = True

imports = sorted(f"tasks.{m.name}" for m in pkgutil.iter_modules(_tasks.__path__))

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Results are stored only for tasks that say ignore_result=False (callers that wait on them).
task_ignore_result = True
result_expires = 24 * 60 * 60

# Late acks and reject-on-worker-lost are switched on per task, only for idempotent tasks.
task_acks_late = False
task_reject_on_worker_lost = False
worker_prefetch_multiplier = 1
task_soft_time_limit = 5 * 60
task_time_limit = 6 * 60
worker_max_tasks_per_child = 1000

# Flower and `celery events` need these. Workers send every task's received/started/succeeded/failed
# events; the publisher's extra "task-sent" event is off: it costs a second Redis publish on every
# enqueue (the bot's, and each task's follow-up), on the path a user waits on, and Flower does without.
worker_send_task_events = True
task_send_sent_event = False
task_track_started = True
worker_hijack_root_logger = False

# The queues (hnpal.queues.QUEUES) are created on demand; each task names its queue, and its priority
# for bulk work, on its own decorator in tasks/ (a test checks every registered task's queue).
task_default_queue = _queues.DEFAULT
task_create_missing_queues = True
# Beat's scheduler writes a heartbeat at each tick (hnpal_process_alive{process="beat"} in the metrics).
beat_scheduler = "hnpal.ops.heartbeat:BeatScheduler"

# Exactly one beat runs (docker-compose and `hnpal up` start one). Intervals are settings.
beat_schedule = {
    "fetch-hn-lists": {"task": "hnpal.ingest.fetch", "schedule": _settings.fetch_interval},
    "refresh-recent-posts": {"task": "hnpal.ingest.refresh", "schedule": _settings.refresh_interval},
    "dispatch-crawls": {"task": "hnpal.crawl.dispatch", "schedule": _settings.crawl_dispatch_interval},
    "content-sweep": {"task": "hnpal.crawl.sweep", "schedule": _settings.content_sweep_interval},
    "summary-sweep": {"task": "hnpal.summaries.sweep", "schedule": 30 * 60},
    "comment-summary-refresh": {"task": "hnpal.summaries.refresh_comments", "schedule": 30 * 60},
    "digests-due": {"task": "hnpal.digests.schedule", "schedule": _settings.digest_due_interval},
    # At least as often as the visibility timeout (a short one means quick recovery; tasks/digests.py).
    "digests-sweep": {"task": "hnpal.digests.sweep", "schedule": min(5 * 60, VISIBILITY_TIMEOUT)},
    "telegram-updates-sweep": {"task": "hnpal.telegram.sweep", "schedule": 60},
    # Discussions: close those silent for HNPAL_DISCUSSION_IDLE_MINUTES.
    "discussions-sweep": {"task": "hnpal.discussions.sweep", "schedule": 60},
    # Review: held items past HNPAL_REVIEW_TIMEOUT, sends left behind, quarantined messages past 7 days.
    "review-sweep": {"task": "hnpal.review.sweep", "schedule": 60},
    # Privacy: accounts deleted more than HNPAL_PRIVACY_GRACE_DAYS ago are purged.
    "privacy-purge": {"task": "hnpal.privacy.purge", "schedule": _settings.privacy_purge_interval},
    # Operations: retention (agent_calls older than HNPAL_AGENT_CALLS_RETENTION_DAYS), daily at a quiet hour.
    "ops-prune": {"task": "hnpal.ops.prune", "schedule": _crontab(hour=3, minute=17)},
}
