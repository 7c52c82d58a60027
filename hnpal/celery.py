"""The Celery app. ``celery -A hnpal worker``, ``celery -A hnpal call hnpal.health.ping``.

Configuration lives in the top-level ``celeryconfig`` module; task modules live in the top-level
``tasks`` package and are thin: load by id, call a service, return ids.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging, worker_init, worker_process_init

import hnpal.models  # noqa: F401 - every mapper, so foreign keys between domains resolve in workers
from hnpal import queues

log = logging.getLogger(__name__)


class HNPal(Celery):
    """Every message goes out through :meth:`send_task` (``Task.apply_async`` and ``retry`` call it too),
    which does two things for every producer (services through ``hnpal.jobs``, beat, ``celery call``):

    - It caps every countdown or ETA at ``HNPAL_MAX_COUNTDOWN``: a message waiting out a longer one would
      stay unacknowledged in Redis past the visibility timeout, and Redis would hand it to a second
      worker. A capped task runs early and decides again (a Telegram 429 asks for another wait).
    - It routes by declaration: each task names its queue and priority on its decorator, and a process
      that has not imported the task modules yet (the bot, beat, the CLI) imports them on its first send
      of a name it does not know, so the registry answers (an unknown name raises ``NotRegistered``)."""

    def send_task(self, name, args=None, kwargs=None, countdown=None, eta=None, *more, **options):  # fmt: skip
        countdown, eta = _capped(name, countdown, eta)
        if name not in self.tasks:
            self.loader.import_default_modules()
            _ = self.tasks[name]  # raises NotRegistered for a name no task module declares
        return super().send_task(name, args, kwargs, countdown, eta, *more, **options)


def _capped(
    name: str, countdown: float | None, eta: datetime | str | None
) -> tuple[float | None, datetime | str | None]:
    import celeryconfig

    limit = celeryconfig.MAX_COUNTDOWN
    if countdown is not None and countdown > limit:
        log.warning("%s: countdown %.0fs capped at HNPAL_MAX_COUNTDOWN (%ss)", name, countdown, limit)
        countdown = limit
    if eta is not None:
        when = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        latest = datetime.now(when.tzinfo or UTC) + timedelta(seconds=limit)
        if when > latest:
            log.warning("%s: eta %s capped at HNPAL_MAX_COUNTDOWN (%ss) from now", name, when.isoformat(), limit)
            eta = latest
    return countdown, eta


app = HNPal("hnpal")
app.config_from_object("celeryconfig")


@setup_logging.connect
def _setup_logging(**_: object) -> None:
    from config.logging import configure_logging

    configure_logging()


from hnpal.ops import tasklog  # noqa: E402  one structured line per task outcome (operations)

tasklog.connect()


CONTENT_QUEUE, LLM_QUEUE, TELEGRAM_QUEUE = queues.CONTENT, queues.LLM, queues.TELEGRAM
_warm: dict[str, Any] = {}  # set by celeryd_init on workers that consume the llm or telegram queue
_content_writer_worker = False


class ContentWorkerConfigError(SystemExit):
    """The content queue's worker must run exactly one task process (it is the only RocksDB writer)."""


@celeryd_init.connect
def _check_content_worker(options: dict | None = None, **_: object) -> None:
    """A worker consuming ``content`` is the single writer: one process, and the store exists at start."""
    global _content_writer_worker
    options = options or {}
    queues = options.get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    pool = str(options.get("pool") or "prefork")
    concurrency = options.get("concurrency") or 1
    if "prefork" not in pool and "solo" not in pool:
        from hnpal.db import session

        session.min_pool_size = 2 * int(concurrency) + 2
    warm = [queue for queue in (LLM_QUEUE, TELEGRAM_QUEUE) if not queues or queue in queues]
    if LLM_QUEUE in warm:  # imported before any fork, so every child starts warm
        from hnpal.llm.service import warm_up

        warm_up()
    connections = int(concurrency)
    if TELEGRAM_QUEUE in warm:
        from hnpal.deliveries.sender import SEND_THREADS  # the send path's modules, before any fork

        connections *= SEND_THREADS
    if warm:
        _warm["queues"] = warm
        _warm["connections"] = connections
        _warm["in_children"] = "prefork" in pool
    if CONTENT_QUEUE not in queues:
        return
    # Thread, solo and gevent pools run every task in this one process; prefork forks one per slot.
    if "prefork" in pool and int(concurrency) != 1:
        raise ContentWorkerConfigError(
            f"the worker of the '{CONTENT_QUEUE}' queue is the only RocksDB writer: start it with "
            f"--concurrency 1 (got {concurrency} processes)"
        )
    _content_writer_worker = True
    # Create the store on first start (and fail fast if another writer holds it); the lock is released
    # at once, and the task process opens the writer for good.
    from config.settings import get_settings
    from hnpal.content.store import ContentStoreError

    settings = get_settings()
    # In a child process: RocksDB opened here would start its background threads in this (the parent)
    # process, and a forked task process inherits RocksDB's state without them, so its flushes and
    # close() would wait forever.
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(settings.content_dir), str(settings.content_block_cache_mb)],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise ContentStoreError(probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "probe failed")


_PROBE = """
import sys
from hnpal.content import ContentStore
try:
    ContentStore.open_writer(sys.argv[1], block_cache_mb=int(sys.argv[2])).close()
except Exception as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
"""


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pooled connections must not be shared with the parent process.
    from hnpal.db.session import dispose_engines

    dispose_engines()
    if _content_writer_worker:
        from hnpal.content import host

        host.writer()
    if _warm.get("in_children"):
        _warm_handles(1)


@worker_init.connect
def _before_consuming(**_: object) -> None:
    if _warm and not _warm.get("in_children"):
        _warm_handles(int(_warm["connections"]))


def _warm_handles(connections: int) -> None:
    """A worker of the llm or telegram queue opens, before its first task, what every task needs: its
    database connections; the content reader and the model client (llm); the Bot API client and the send
    limiter's Redis connection and scripts (telegram). Otherwise the first round of tasks pays for them
    all at once (at paid-broadcast rates, a tenth of the first two seconds). Best effort: what cannot be
    opened yet (no store so far, no bot token) is opened by the first task that needs it."""
    from contextlib import ExitStack

    from hnpal.db.session import get_engine

    log = logging.getLogger(__name__)
    queues = _warm.get("queues") or ()
    try:
        with ExitStack() as stack:
            engine = get_engine()
            for _ in range(min(connections, getattr(engine.pool, "size", lambda: 1)())):
                stack.enter_context(engine.connect())
    except Exception as exc:  # noqa: BLE001 - warming is an optimisation; tasks report real failures
        log.info("worker warm-up: database connections not opened: %s", exc)
    if LLM_QUEUE in queues:
        from hnpal.content import host
        from hnpal.llm.service import paid_provider

        try:
            paid_provider()
            if not _content_writer_worker:
                host.reader()
        except Exception as exc:  # noqa: BLE001
            log.info("llm worker warm-up incomplete: %s", exc)
    if TELEGRAM_QUEUE in queues:
        from hnpal.deliveries.sender import warm_up as warm_sender

        try:
            warm_sender()
        except Exception as exc:  # noqa: BLE001
            log.info("telegram worker warm-up incomplete: %s", exc)
