"""Setting up and tearing down what the demo runs: the sandbox HN and Telegram servers, the embedded
PostgreSQL and Redis, the workers, beat and the bot, and the settings that point them at each other.

One demo at a time per data directory; everything started is stopped whatever happens."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from sqlalchemy import func, select

from config.settings import get_settings, reset_settings_cache
from hnpal.demo.common import DIGEST_DUE_INTERVAL, USERS, DemoError, DemoUser
from hnpal.demo.main_job import main_job
from hnpal.procs import Child, celery_beat, celery_worker, group_alive, telegram_bot, wait_ready

if TYPE_CHECKING:
    from hnpal.sandbox.telegram_api import TelegramServer


def run_demo(*, timeout: float = 300.0, keep_data: bool = False) -> int:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    console = Console(width=None if Console().is_terminal else 140)
    settings = get_settings()
    # One demo at a time per data directory: a second one would stop the first one's servers and
    # delete its data as it starts afresh.
    lock_path = settings.data_dir.absolute() / "demo.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(
                f"[bold red]another hnpal demo is running on {settings.data_dir.absolute()}[/]: wait for it to "
                "finish, or give this one a data directory of its own (HNPAL_DATA_DIR)"
            )
            return 1
        return _run_demo(console, timeout=timeout, keep_data=keep_data)


def _run_demo(console: Console, *, timeout: float, keep_data: bool) -> int:
    started = time.monotonic()
    settings = get_settings()
    embedded = settings.embedded_database or settings.embedded_redis
    data_dir = (settings.data_dir / "demo").absolute()
    if embedded and not keep_data and data_dir.exists():
        from hnpal.runtime import stop_embedded

        stop_embedded(settings.model_copy(update={"data_dir": data_dir}))
        shutil.rmtree(data_dir)

    from hnpal.sandbox.hn_replay import HNReplayServer
    from hnpal.sandbox.telegram_api import TelegramServer

    hn = HNReplayServer().start()
    configure(data_dir, hn.api_url)
    settings = get_settings()
    console.rule("[bold]HN Pal demo")
    console.print(f"sandbox HN API: {hn.api_url} (bundled snapshot, {len(hn.items)} items)")

    children: list[Child] = []
    tg: TelegramServer | None = None
    ok = False
    try:
        from hnpal import runtime

        if settings.embedded_database:
            console.print(f"embedded PostgreSQL: {runtime.ensure_embedded_postgres(settings).path}")
        if settings.embedded_redis:
            console.print(f"embedded Redis: {runtime.ensure_embedded_redis(settings).url}")
        from hnpal.db import migrate

        migrate.upgrade()
        revision = migrate.current_revision(runtime.database_url(settings))
        console.print(f"database at revision {revision}; content store {settings.content_dir}")
        first_update_id, users = fresh_start()
        # Telegram's flood control: 30 messages a second overall, one a second per chat.
        tg = TelegramServer(enforce_limits=True, global_rate=30, per_chat_rate=1, first_update_id=first_update_id)
        tg.start()
        configure(data_dir, hn.api_url, tg)
        console.print(f"sandbox Telegram Bot API: {tg.base_url} (flood control: 30 msg/s, 1 msg/s per chat)")

        log_dir = data_dir / "logs"
        children = [
            # The single RocksDB writer runs its tasks in the worker process itself (solo pool): in a prefork
            # pool the task process is forked after the worker's start-up check opened RocksDB, so its
            # background threads are missing there and closing the store at shutdown hangs.
            celery_worker("content", "content", concurrency=1, log_dir=log_dir, pool="solo"),
            celery_worker("pipeline", "default,crawl,llm", concurrency=2, log_dir=log_dir),
            celery_worker("telegram", "telegram", concurrency=8, log_dir=log_dir, pool="threads"),
            celery_beat(log_dir, data_dir / "celerybeat-schedule"),
            telegram_bot(log_dir),
        ]
        env = {
            **os.environ,
            "HNPAL_LOG_LEVEL": "INFO",  # the ready markers are INFO lines
            # The children get the embedded servers' addresses: they need not look for them (and the
            # threads of the telegram worker must not race to start them).
            "HNPAL_DATABASE_URL": runtime.database_url(settings),
            "HNPAL_REDIS_URL": runtime.redis_url(settings),
        }
        for child in children:
            child.start(env)
        wait_ready(children)
        console.print(f"started {', '.join(c.name for c in children)} (logs in {log_dir})")
        ok = main_job(console, tg, users, timeout)
    except (DemoError, TimeoutError) as exc:
        console.print(f"[bold red]demo failed:[/] {escape(str(exc))}")
        if children:
            console.print(f"[red]process logs: {children[0].log_path.parent}")
    except Exception:  # noqa: BLE001 - a bug: show where, then clean up all the same
        console.print("[bold red]demo failed with an unexpected error:")
        console.print_exception(max_frames=8)
    finally:
        console.print("stopping the bot, workers and beat (warm shutdown)...")
        for child in reversed(children):  # the bot first: no new updates while the workers finish
            child.stop()
        left = [c.name for c in children if c.proc is not None and group_alive(c.proc.pid)]
        if tg is not None:
            tg.stop()
        hn.stop()
        stopped: list[str] = []
        if embedded:
            from hnpal.runtime import stop_embedded

            stopped = stop_embedded(settings)
        console.print(
            f"stopped {len(children)} child processes"
            + (f" ([red]still running: {', '.join(left)}[/])" if left else "")
            + f", the sandbox servers, and {', '.join(stopped) or 'no embedded server'}"
        )
        if left:
            ok = False
    console.rule(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


def configure(data_dir: Path, api_url: str, telegram: TelegramServer | None = None) -> dict[str, str]:
    """Settings for the demo's processes (inherited by the children through the environment)."""
    values = {
        "HNPAL_DATA_DIR": str(data_dir),
        "HNPAL_HN_API_BASE_URL": api_url,
        "HNPAL_CRAWL_ALLOW_HOSTS": "127.0.0.1",
        # The snapshot links to hostile pages on purpose; keep their timeouts and retries short.
        "HNPAL_CRAWL_READ_TIMEOUT": "2",
        "HNPAL_CRAWL_TOTAL_TIMEOUT": "5",
        "HNPAL_CRAWL_RETRY_BACKOFF": "1",
        "HNPAL_CRAWL_DISPATCH_INTERVAL": "10",
        "HNPAL_CONTENT_SWEEP_INTERVAL": "30",
        # Offline: the extractive summarizer, never a paid model, whatever the environment says.
        "HNPAL_OPENAI_API_KEY": "",
        "HNPAL_DIGEST_DUE_INTERVAL": str(DIGEST_DUE_INTERVAL),
    }
    if telegram is not None:
        values.update(
            {
                "HNPAL_TELEGRAM_TOKEN": telegram.token,
                "HNPAL_TELEGRAM_BASE_URL": telegram.base_url,
                "HNPAL_TELEGRAM_MODE": "polling",
                "HNPAL_TELEGRAM_POLL_TIMEOUT": "1",
                "HNPAL_TELEGRAM_PAID_BROADCAST": "false",
            }
        )
    os.environ.update(values)
    for key in ("HNPAL_CONTENT_PATH",):
        os.environ.pop(key, None)
    reset_settings_cache()
    return values


def fresh_start() -> tuple[int, tuple[DemoUser, ...]]:
    """Where this run starts on a database that may have seen a demo before (``--keep-data``, or configured
    URLs): Telegram update ids above the stored ones (the bot resumes polling after the largest), and
    users the bot has not met yet (a user gets one scheduled digest a day)."""
    from hnpal.db.session import session_scope
    from hnpal.telegram.models import TelegramUpdate
    from hnpal.users.models import User

    base = min(u.telegram_id for u in USERS) // 10 * 10
    with session_scope() as session:
        last_update = session.scalar(select(func.max(TelegramUpdate.update_id))) or 0
        taken = session.scalar(select(func.max(User.telegram_id)).where(User.telegram_id.between(base, base + 99_999)))
    offset = 0 if taken is None else ((taken - base) // 10 + 1) * 10
    users = tuple(replace(u, telegram_id=u.telegram_id + offset) for u in USERS)
    return last_update + 1, users
