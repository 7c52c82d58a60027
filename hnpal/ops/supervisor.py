"""``hnpal up``: the whole system on one machine, kept running.

It starts the embedded PostgreSQL and Redis (unless URLs are configured), applies the migrations, then
runs as children (each with its own log file under ``<data_dir>/logs`` and its own process group, see
:mod:`hnpal.procs`):

=========  =================================================================================
content    ``celery worker -Q content -P solo``: the single RocksDB writer, one task at a time
crawl      ``celery worker -Q crawl`` (prefork): page downloads and extraction
default    ``celery worker -Q default`` (prefork): HN API, dispatch, sweeps, digests, operations
llm        ``celery worker -Q llm -P threads``: summaries, discussion messages and answers (waits on the model)
telegram   ``celery worker -Q telegram -P threads``: update handling and digest sends
beat       ``celery beat``: exactly one
bot        ``hnpal bot`` (only with HNPAL_TELEGRAM_TOKEN; without it the rest runs and says so)
flower     ``celery flower`` with persistent state under ``<data_dir>/flower``; basic auth from
           HNPAL_FLOWER_BASIC_AUTH through the environment (never the command line), required
           beyond loopback
metrics    ``hnpal metrics serve``: the pipeline's Prometheus metrics
console    ``hnpal console``: the operator console (HNPAL_CONSOLE_ADDRESS, loopback by default)
=========  =================================================================================

It prints one status line per child (name, pid, state, restarts, uptime), redrawn in place on a
terminal and printed as plain lines otherwise (at each change, and every ``status_interval`` seconds).
A child that exits is restarted after a back-off that doubles with each consecutive crash (1 s, 2 s,
4 s ... at most 60 s) and starts over once the child has stayed up for a minute.

Ctrl-C or SIGTERM stops everything warmly: the bot first (no new updates), then beat (nothing new is
scheduled), then every worker at once with SIGTERM, Celery's warm shutdown: running tasks finish and
are acknowledged, messages reserved but not started go back to their queue. A worker that does not
finish within ``stop_timeout`` is killed; its late-acknowledged tasks are delivered again. Nothing is
left running: each child's whole process group is waited for.
"""

from __future__ import annotations

import fcntl
import io
import ipaddress
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from config.settings import Settings, get_settings
from hnpal.errors import HNPalError
from hnpal.procs import Child, celery_beat, celery_worker, telegram_bot

BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0  # seconds up after which a crash counts as the first again
TICK = 0.25


class UpError(HNPalError, RuntimeError):
    """``hnpal up`` cannot start (the message says why and what to do)."""


@dataclass
class Options:
    crawl_concurrency: int = 2
    default_concurrency: int = 2
    llm_threads: int = 4
    telegram_threads: int = 8
    flower: bool = True
    metrics: bool = True
    console: bool = True
    bot: bool = True
    stop_timeout: float = 120.0
    status_interval: float = 60.0
    keep_embedded: bool = False
    backoff_base: float = BACKOFF_BASE
    backoff_max: float = BACKOFF_MAX
    stable_after: float = STABLE_AFTER


def is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def flower_auth(settings: Settings) -> str | None:
    """The ``user:password`` Flower requires, checked; None when it listens on loopback without one."""
    secret = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else None
    if secret is None:
        if not is_loopback(settings.flower_address):
            raise UpError(
                f"Flower would listen on {settings.flower_address} (beyond loopback) without a password: set "
                "HNPAL_FLOWER_BASIC_AUTH=user:password, or HNPAL_FLOWER_ADDRESS=127.0.0.1, or run with --no-flower"
            )
        return None
    user, sep, password = secret.partition(":")
    if not (user and sep and password) or "," in secret:
        raise UpError("HNPAL_FLOWER_BASIC_AUTH must be user:password (no comma), both parts non-empty")
    return secret


def flower_child(settings: Settings, log_dir: Path) -> Child:
    db = (settings.data_dir / "flower" / "flower.db").absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "celery", "-A", "hnpal", "flower", f"--address={settings.flower_address}",
        f"--port={settings.flower_port}", "--persistent=True", f"--db={db}",
    ]  # fmt: skip
    return Child("flower", cmd, log_dir / "flower.log", ready_marker="Visit me at")


def console_child(settings: Settings, log_dir: Path) -> Child:
    cmd = [
        sys.executable, "-m", "hnpal.cli.main", "console",
        "--address", settings.console_address, "--port", str(settings.console_port),
    ]  # fmt: skip
    return Child("console", cmd, log_dir / "console.log", ready_marker="console on http://")


def metrics_child(settings: Settings, log_dir: Path) -> Child:
    cmd = [
        sys.executable, "-m", "hnpal.cli.main", "metrics", "serve",
        "--address", settings.metrics_address, "--port", str(settings.metrics_port),
    ]  # fmt: skip
    return Child("metrics", cmd, log_dir / "metrics.log", ready_marker="metrics on http://")


@dataclass
class Supervised:
    child: Child
    env: dict[str, str]
    state: str = "new"  # starting | running | backoff | stopping | stopped
    restarts: int = 0
    crashes_in_a_row: int = 0
    started_at: float = 0.0
    restart_at: float = 0.0
    last_exit: int | None = None
    slow_said: bool = False  # "still starting" was said for this start

    @property
    def name(self) -> str:
        return self.child.name

    def uptime(self, now: float) -> float:
        return now - self.started_at if self.state in ("starting", "running") else 0.0


SLOW_START = 45.0  # seconds "starting" after which the supervisor says what the child's log says


def last_reason(log_path: Path) -> str:
    """The last meaningful line of a child's log (why it exited, or what it waits for), masked and cut."""
    from config.logging import mask_secrets

    try:
        with log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("File ", "^", "~", "Traceback")) or line.startswith(("warnings.warn", "During handling")):
            continue
        # "2026-12-06 07:19:00,275 INFO name: message" -> "message"
        line = re.sub(r"^\[?\d{4}-\d\d-\d\d[ T][\d:,.]+\]?\s*(?:[A-Z]+\s+)?(?:[\w.]+:\s*)?", "", line)
        return mask_secrets(line)[:240]
    return ""


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Supervisor:
    procs: list[Supervised]
    options: Options
    out: TextIO = field(default_factory=lambda: sys.stdout)
    notes: list[str] = field(default_factory=list)  # lines shown under the status (e.g. "bot disabled")
    _stop: threading.Event = field(default_factory=threading.Event)
    _signal: int | None = None
    _drawn: int = 0
    _seen: list[str] = field(default_factory=list)
    _last_print: float = 0.0

    @property
    def tty(self) -> bool:
        return self.out.isatty()

    # --- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stop.is_set():
            # Straight to the file descriptor: the main thread may be inside a buffered write right now.
            note = f"up: {signal.Signals(signum).name} again: already stopping warmly (running tasks finish)\n"
            try:
                os.write(self.out.fileno(), note.encode())
            except (OSError, ValueError, io.UnsupportedOperation):
                pass
            return
        self._signal = signum
        self._stop.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # --- output ----------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # erase the status block, print, redraw below
            self._drawn = 0
        self.out.write(f"up: {line}\n")
        self.out.flush()

    def status_line(self, p: Supervised, now: float) -> str:
        pid = p.child.pid if p.state in ("starting", "running", "stopping") else None
        extra = ""
        if p.state == "backoff":
            extra = f" next_start_in={max(0.0, p.restart_at - now):.0f}s last_exit={p.last_exit}"
        return (
            f"{p.name:<9} pid={pid or '-':<7} state={p.state:<8} restarts={p.restarts:<3} "
            f"uptime={_duration(p.uptime(now))}{extra}"
        )

    def show_status(self, now: float, *, force: bool = False) -> None:
        """On a terminal: the whole block, redrawn in place. Otherwise plain lines: the whole block at
        start, at the end and every ``status_interval``; in between, the line of each child that changed."""
        lines = [self.status_line(p, now) for p in self.procs]
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self.out.write("\n".join(lines + self.notes) + "\n")
            self._drawn = len(lines) + len(self.notes)
            self.out.flush()
            return
        states = [f"{p.state}:{p.restarts}" for p in self.procs]
        stamp = time.strftime("%H:%M:%S")
        if force or now - self._last_print >= self.options.status_interval:
            self.out.write("".join(f"status {stamp} {line}\n" for line in lines + self.notes))
            self._last_print = now
        else:
            changed = [line for line, state, seen in zip(lines, states, self._seen, strict=False) if state != seen]
            self.out.write("".join(f"status {stamp} {line}\n" for line in changed))
        self._seen = states
        self.out.flush()

    # --- children --------------------------------------------------------------------------------
    def _start(self, p: Supervised, now: float) -> None:
        p.child.start(p.env)
        p.state, p.started_at, p.slow_said = "starting", now, False

    def tick(self, now: float) -> None:
        for p in self.procs:
            if p.state in ("starting", "running") and not p.child.alive():
                p.last_exit = p.child.proc.returncode if p.child.proc is not None else None
                up_for = now - p.started_at
                p.child.stop(timeout=5)  # reap it, kill what is left of its process group, close the log
                if up_for >= self.options.stable_after:
                    p.crashes_in_a_row = 0
                p.crashes_in_a_row += 1
                delay = min(self.options.backoff_base * 2 ** (p.crashes_in_a_row - 1), self.options.backoff_max)
                p.state, p.restart_at = "backoff", now + delay
                reason = last_reason(p.child.log_path)
                self._say(
                    f"{p.name} exited (code {p.last_exit}) after {_duration(up_for)}; restarting in {delay:.0f}s "
                    f"(see {p.child.log_path})" + (f": {reason}" if reason else "")
                )
            elif p.state == "starting" and p.child.ready():
                p.state = "running"
            elif p.state == "starting" and not p.slow_said and now - p.started_at >= SLOW_START:
                p.slow_said = True
                reason = last_reason(p.child.log_path) or "nothing logged yet"
                self._say(f"{p.name} still starting after {_duration(now - p.started_at)}: {reason}")
            elif p.state == "backoff" and now >= p.restart_at:
                p.restarts += 1
                self._start(p, now)

    def run(self) -> int:
        """Start every child, supervise until a signal, then stop warmly. Returns the exit code."""
        now = time.monotonic()
        for p in self.procs:
            self._start(p, now)
        self.show_status(now, force=True)
        while not self._stop.wait(TICK):
            now = time.monotonic()
            self.tick(now)
            self.show_status(now)
        name = signal.Signals(self._signal).name if self._signal else "stop"
        self._say(f"{name}: warm shutdown (bot, beat, then workers finish their running tasks)")
        clean = self.shutdown()
        self.show_status(time.monotonic(), force=True)
        return 0 if clean else 1

    def shutdown(self) -> bool:
        """Stop in order: the bot, beat, then the workers together, then Flower and metrics. True when
        every child exited by itself with code 0 (none had to be killed)."""
        clean = True
        workers = [p for p in self.procs if p.name not in ("bot", "beat", "flower", "metrics", "console")]
        waves = [
            [p for p in self.procs if p.name == "bot"],
            [p for p in self.procs if p.name == "beat"],
            workers,
            [p for p in self.procs if p.name in ("flower", "metrics", "console")],
        ]
        for wave in waves:
            live = [p for p in wave if p.state in ("starting", "running")]
            for p in wave:  # waiting out a back-off: already stopped and cleaned up
                p.state = "stopping" if p in live else "stopped"

            def stop(p: Supervised) -> None:
                p.last_exit = p.child.stop(timeout=self.options.stop_timeout)
                p.state = "stopped"

            threads = [threading.Thread(target=stop, args=(p,), name=f"stop-{p.name}", daemon=True) for p in live]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for p in live:
                if p.last_exit != 0:
                    clean = False
                    self._say(f"{p.name} stopped with code {p.last_exit}")
        return clean


def build(settings: Settings, options: Options, *, database_url: str, redis_url: str) -> Supervisor:
    """The children of ``hnpal up`` for these settings (nothing started yet)."""
    log_dir = (settings.data_dir / "logs").absolute()
    base_env = {
        **os.environ,
        # The children get the servers' addresses: they need not look for embedded servers themselves.
        "HNPAL_DATABASE_URL": database_url,
        "HNPAL_REDIS_URL": redis_url,
        "HNPAL_DATA_DIR": str(settings.data_dir.absolute()),
    }
    if settings.log_level in ("WARNING", "ERROR"):
        base_env["HNPAL_LOG_LEVEL"] = "INFO"  # the ready markers are INFO lines
    base_env.pop("FLOWER_BASIC_AUTH", None)
    children = [
        # The single RocksDB writer runs its tasks in the worker process itself (see hnpal.demo).
        celery_worker("content", "content", concurrency=1, log_dir=log_dir, pool="solo"),
        celery_worker("crawl", "crawl", concurrency=options.crawl_concurrency, log_dir=log_dir),
        celery_worker("default", "default", concurrency=options.default_concurrency, log_dir=log_dir),
        celery_worker("llm", "llm", concurrency=options.llm_threads, log_dir=log_dir, pool="threads"),
        celery_worker("telegram", "telegram", concurrency=options.telegram_threads, log_dir=log_dir, pool="threads"),
        celery_beat(log_dir, (settings.data_dir / "celerybeat-schedule").absolute()),
    ]
    notes = []
    if options.bot and settings.telegram_token is not None:
        children.append(telegram_bot(log_dir))
    elif options.bot:
        notes.append("bot       not started: no HNPAL_TELEGRAM_TOKEN (set it to talk to Telegram; the rest runs)")
    else:
        notes.append("bot       not started (--no-bot)")
    procs = [Supervised(child, base_env) for child in children]
    if options.flower:
        auth = flower_auth(settings)
        env = dict(base_env)
        if auth is not None:
            env["FLOWER_BASIC_AUTH"] = auth  # the environment, not argv: `ps` shows no password
        procs.append(Supervised(flower_child(settings, log_dir), env))
        notes.append(
            f"flower    http://{settings.flower_address}:{settings.flower_port}/ "
            f"({'basic auth' if auth else 'no auth: loopback only'}; /metrics for Prometheus)"
        )
    if options.metrics:
        procs.append(Supervised(metrics_child(settings, log_dir), base_env))
        notes.append(f"metrics   http://{settings.metrics_address}:{settings.metrics_port}/metrics")
    if options.console:
        procs.append(Supervised(console_child(settings, log_dir), base_env))
        notes.append(
            f"console   http://{settings.console_address}:{settings.console_port}/ "
            "(operators: `hnpal operator add NAME --role admin`)"
        )
    notes.append(f"logs      {log_dir}")
    return Supervisor(procs, options, notes=notes)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def preflight(database_url: str, redis_url: str, settings: Settings) -> None:
    """Refuse to start children that could not work: PostgreSQL and Redis must answer (one line each)."""
    import redis
    from sqlalchemy import create_engine, make_url, text

    from config.logging import mask_secrets

    try:
        engine = create_engine(database_url, pool_pre_ping=False, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the line says why
        shown = make_url(database_url).render_as_string(hide_password=True)
        cause = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise UpError(
            f"PostgreSQL at {shown} does not answer ({mask_secrets(cause)}): start it or correct HNPAL_DATABASE_URL "
            "(empty: the embedded server); nothing was started"
        ) from None
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise UpError(
            f"Redis at {mask_secrets(redis_url)} does not answer ({mask_secrets(str(exc))[:200]}): the workers, beat "
            "and Flower need it as their broker; start it or correct HNPAL_REDIS_URL (empty: the embedded server); "
            "nothing was started"
        ) from None


def run_up(options: Options, out: TextIO | None = None) -> int:
    """``hnpal up``. Returns the exit code."""
    from hnpal import runtime
    from hnpal.db import migrate

    out = out or sys.stdout
    settings = get_settings()
    if options.flower:
        flower_auth(settings)  # refuse before starting anything
    data_dir = settings.data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "up.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpError(f"another `hnpal up` runs on {data_dir}; stop it first (one beat, one writer)") from None
        embedded = settings.embedded_database or settings.embedded_redis
        # Until the supervisor takes over, SIGTERM interrupts the set-up like Ctrl-C (and the embedded
        # servers are stopped on the way out).
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            database_url = runtime.database_url(settings)
            redis_url = runtime.redis_url(settings)
            out.write(f"up: PostgreSQL {'embedded' if settings.embedded_database else 'configured'}, "
                      f"Redis {'embedded' if settings.embedded_redis else 'configured'}\n")  # fmt: skip
            preflight(database_url, redis_url, settings)
            migrate.upgrade(database_url)
            out.write(f"up: database at revision {migrate.current_revision(database_url)}\n")
            supervisor = build(settings, options, database_url=database_url, redis_url=redis_url)
            supervisor.out = out
            supervisor.install_signals()
            code = supervisor.run()
        except KeyboardInterrupt:
            out.write("up: interrupted during start-up\n")
            code = 130
        finally:
            if embedded and not options.keep_embedded:
                stopped = runtime.stop_embedded(settings)
                if stopped:
                    out.write(f"up: stopped embedded {', '.join(stopped)}\n")
        out.write("up: stopped; nothing left running\n")
        out.flush()
        return code
