"""``hnpal demo``: the main job, offline, on embedded defaults.

It starts what a deployment runs (the embedded PostgreSQL and Redis unless URLs are configured, the
content writer, a worker for the pipeline queues, a worker for the ``telegram`` queue, one beat and the
bot), points HN Pal at two sandbox servers (the HN API replaying the bundled snapshot, and a local Telegram
Bot API with Telegram's flood limits), and runs the main job:

1. fetch -> crawl -> content store -> summarize (offline extractive provider, no key needed);
2. meanwhile three simulated Telegram users of different interests and styles meet the bot through real
   updates (``/start``, topic buttons, ``/settings`` menus, typed answers);
3. once the posts are summarized each user sets their delivery time to the next minute in their own
   time zone, and beat's scheduler sends each their digest (selection, summaries in their style, send);
4. every digest is printed as Telegram would show it, a few buttons are pressed (👍, 💾, a brief digest's
   number, 👎) and their effects shown;
5. Ada discusses a post (💬, two questions answered on the ``llm`` queue with the article, the HN thread
   and her memory as context, then ``/done``), the memory extraction that follows is shown with
   ``/memory``, then the database state in brief.

It stops everything it started (children, sandbox servers, embedded servers) whatever happens, and
exits 0 only when every step worked.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select, text

from config.settings import get_settings, reset_settings_cache
from hnpal.procs import Child, celery_beat, celery_worker, group_alive, telegram_bot, wait_ready

if TYPE_CHECKING:
    from hnpal.sandbox.telegram_api import SentMessage, TelegramServer

TERMINAL = ("success", "reused", "failed", "skipped")
BUBBLE_WIDTH = 76  # a Telegram message bubble in the terminal
UPDATE_WAIT = 30.0  # seconds one user action may take to be handled (bot poll, queue, 1 msg/s per chat)
DIGEST_GRACE = 120.0  # seconds after the delivery time for the digests to arrive
DIGEST_DUE_INTERVAL = 5  # seconds between beat's scans for due digests in the demo


class DemoError(RuntimeError):
    """A step of the demo failed or timed out (the message says which and why)."""


@dataclass(frozen=True)
class DemoUser:
    """A simulated Telegram user and what they choose in the bot."""

    telegram_id: int
    first_name: str
    username: str
    topics: tuple[str, ...]
    style: str  # flat_scroll | brief
    summary_style: str
    timezone: str
    max_posts: int
    muted_keywords: str | None = None
    about: str = ""


# Interests picked from the bot's topic buttons; the ones that occur as words in the snapshot's titles
# (LLM, Rust, Go, Web) lift those posts in that user's ranking.
USERS = (
    DemoUser(
        5_100_001, "Ada", "ada_l", ("AI", "LLM", "Python"), "flat_scroll", "basic", "Europe/Berlin", 4,
        about="ML engineer in Berlin: one message per post, plain summaries",
    ),
    DemoUser(
        5_100_002, "Linus", "linus_t", ("Linux", "Security", "Rust", "Go"), "brief", "technical",
        "America/New_York", 5, muted_keywords="startup, prices",
        about="systems programmer in New York: one compact list, technical summaries, no business news",
    ),
    DemoUser(
        5_100_003, "Grace", "grace_h", ("Databases", "Startups", "Open source", "Web"), "flat_scroll", "concise",
        "Asia/Tokyo", 3, about="founder in Tokyo: three posts, one-line summaries",
    ),
)  # fmt: skip


def _configure(data_dir: Path, api_url: str, telegram: TelegramServer | None = None) -> dict[str, str]:
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
    _configure(data_dir, hn.api_url)
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
        console.print(f"database at revision {migrate.current_revision()}; content store {settings.content_dir}")
        first_update_id, users = _fresh_start()
        # Telegram's flood control: 30 messages a second overall, one a second per chat.
        tg = TelegramServer(enforce_limits=True, global_rate=30, per_chat_rate=1, first_update_id=first_update_id)
        tg.start()
        _configure(data_dir, hn.api_url, tg)
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
        ok = _main_job(console, tg, users, timeout)
    except (DemoError, TimeoutError) as exc:
        console.print(f"[bold red]demo failed:[/] {escape(str(exc))}")
        if children:
            console.print(f"[red]process logs: {children[0].log_path.parent}")
    except Exception:  # a bug: show where, then clean up all the same
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


def _fresh_start() -> tuple[int, tuple[DemoUser, ...]]:
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


def _main_job(console: Console, tg: TelegramServer, users: tuple[DemoUser, ...], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    chats = {user.first_name: UserChat(tg, user) for user in users}
    console.print(
        f"[bold]0. three Telegram users[/] meet the bot while the pipeline runs: "
        f"{', '.join(escape(u.first_name) for u in users)}"
    )
    onboarding = Parallel([(chat.user.first_name, chat.onboard) for chat in chats.values()])
    if not _pipeline(console, timeout, check=onboarding.check):
        return False
    _report(console)
    onboarding.join(max(5.0, deadline - time.monotonic()))

    console.rule("[bold]0. onboarding (alongside the pipeline), through the real bot")
    for chat in chats.values():
        _print_transcript(console, chat)
        console.print(telegram_message(chat.last(), f"HN Pal → {chat.user.first_name}"))

    console.rule("[bold]5. digests")
    console.print(
        "Each user now sets their delivery time to the next minute in their own time zone (/settings → Time); "
        f"beat's scheduler (every {DIGEST_DUE_INTERVAL}s) creates their digest when it is due, selects and "
        "reserves posts, and the telegram worker sends it (summaries in each user's style are made first)."
    )
    Parallel([(chat.user.first_name, chat.set_delivery_time) for chat in chats.values()]).join(UPDATE_WAIT * 3)
    for chat in chats.values():
        due = chat.due_at
        assert due is not None
        console.print(
            f"   {escape(chat.user.first_name)}: delivery time {due:%H:%M} {chat.user.timezone} "
            f"(in {max(0, (due - datetime.now(due.tzinfo)).total_seconds()):.0f}s)"
        )
    _wait_for_digests(console, chats)
    for chat in chats.values():
        _print_digest(console, chat)

    console.rule("[bold]6. buttons")
    _press_buttons(console, chats)

    console.rule("[bold]7. a discussion, and what HN Pal remembers of it")
    _discussion(console, chats["Ada"])

    console.rule("[bold]8. the database afterwards")
    _database_summary(console)
    if tg.throttled:
        refused = ", ".join(f"{t.method} to {t.chat_id} ({t.scope} limit)" for t in tg.throttled[:5])
        console.print(f"[yellow]Telegram's flood control refused {len(tg.throttled)} send(s) (429): {refused}")
    return True


# --- the pipeline -----------------------------------------------------------------------------------


def _counts() -> dict[str, int]:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    with session_scope() as session:
        rows = session.execute(select(Post.crawl_status, func.count()).group_by(Post.crawl_status)).all()
    return dict(rows)


def _pipeline(console: Console, timeout: float, check: Callable[[], None] = lambda: None) -> bool:
    """Run the pipeline and wait for it; ``check`` is called while waiting (it raises to stop early)."""
    from tasks.ingest import fetch_lists

    console.print("[bold]1. fetch[/] HN lists through the queue (hnpal.ingest.fetch)")
    report = fetch_lists.delay(["top", "new", "job"], 100).get(timeout=120)
    skipped = ", ".join(f"{k}={v}" for k, v in report["skipped"].items())
    console.print(
        f"   {report['inserted']} new posts, {report['updated']} refreshed, skipped {skipped}; "
        f"{report['crawl_enqueued']} crawls enqueued, {report['text_posts']} text posts sent to the writer"
    )
    console.print("[bold]2. crawl[/] each linked page (crawl queue) -> [bold]3. store[/] (content writer)")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        check()
        counts = _counts()
        if counts != last:
            console.print("   " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            last = counts
        if counts and all(k in TERMINAL for k in counts):
            console.print("[bold]4. summarize[/] (llm queue, offline extractive provider) and fetch comment threads")
            if _comments_done(deadline, check) and _summaries_done(deadline, check):
                return True
            break
        time.sleep(0.5)
    raise DemoError(f"the pipeline did not finish within {timeout:.0f}s")


def _comments_done(deadline: float, check: Callable[[], None]) -> bool:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    while time.monotonic() < deadline:
        check()
        with session_scope() as session:
            waiting = session.scalar(
                select(func.count()).where(
                    Post.is_crawl_success, Post.comment_count > 0, Post.comments_fetched_at.is_(None)
                )
            )
        if not waiting:
            return True
        time.sleep(0.5)
    return False


def _summaries_done(deadline: float, check: Callable[[], None]) -> bool:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    while time.monotonic() < deadline:
        check()
        with session_scope() as session:
            waiting = session.scalar(
                select(func.count()).where(Post.is_crawl_success, Post.summary_status == "pending")
            )
        if not waiting:
            return True
        time.sleep(0.5)
    return False


def _report(console: Console) -> None:
    from hnpal.content.host import reader
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    with session_scope() as session:
        posts = session.scalars(select(Post).order_by(Post.score.desc())).all()
    table = Table(title="posts after the pipeline", show_lines=False)
    for column in ("hn id", "score", "title", "outcome", "how / why", "summary"):
        table.add_column(column, overflow="fold")
    for post in posts:
        colour = {"success": "green", "reused": "cyan", "failed": "red"}.get(post.crawl_status, "yellow")
        why = post.extraction_method or ""
        if post.crawl_status == "failed":
            why = f"{post.crawl_error} (attempts: {post.crawl_retry_count})"
        if post.repost_of_post_id:
            why += f" (repost of post {post.repost_of_post_id})"
        table.add_row(
            str(post.hn_id),
            str(post.score),
            Text(post.title[:60]),
            f"[{colour}]{post.crawl_status}[/]",
            Text(why[:70]),
            Text(f"{post.summary_status}" + (f" ({post.summary_basis})" if post.summary_basis else "")),
        )
    console.print(table)
    store = reader()
    article = next((p for p in posts if p.crawl_status == "success" and p.extraction_method == "trafilatura"), None)
    if article is not None:
        markdown = store.get_text(article.hn_id, "markdown") or ""
        excerpt = "\n\n".join(markdown.split("\n\n")[:2])
        console.print(Panel(Markdown(excerpt), title=f"stored markdown of HN {article.hn_id}: {escape(article.title)}"))
    stats = store.stats()
    keys = {k: v["estimated_keys"] for k, v in stats["kinds"].items()}
    console.print(f"content store: {keys}, {stats['disk_bytes'] / 1024:.0f} KiB on disk")


# --- the simulated users ----------------------------------------------------------------------------


def _update_state(update_id: int) -> tuple[str | None, str | None]:
    from hnpal.db.session import session_scope
    from hnpal.telegram.models import TelegramUpdate

    with session_scope() as session:
        row = session.execute(
            select(TelegramUpdate.status, TelegramUpdate.error).where(TelegramUpdate.update_id == update_id)
        ).first()
    return (row[0], row[1]) if row else (None, None)


@dataclass
class Step:
    """One line of a user's conversation: what they did, and what the bot did in answer."""

    action: str
    effect: str


@dataclass
class UserChat:
    """One simulated user: acts through the sandbox (real updates) and waits for the bot's answers."""

    tg: TelegramServer
    user: DemoUser
    steps: list[Step] = field(default_factory=list)
    due_at: datetime | None = None
    answers: dict[str, str | None] = field(default_factory=dict)  # callback query id -> answer text
    digest: dict[str, Any] | None = None  # the scheduled digest's row, once sent
    digest_messages: list[int] = field(default_factory=list)  # its Telegram message ids, in order

    @property
    def uid(self) -> int:
        return self.user.telegram_id

    def messages(self) -> list[SentMessage]:
        return self.tg.messages(self.uid)

    def last(self) -> SentMessage:
        messages = self.messages()
        if not messages:
            raise DemoError(f"the bot has sent {self.user.first_name} nothing")
        return messages[-1]

    def _handled(self, update: dict[str, Any], what: str) -> None:
        """Wait until the worker has handled the update (its replies, edits and answer are sent by then)."""
        update_id = update["update_id"]
        deadline = time.monotonic() + UPDATE_WAIT
        while True:
            status, error = _update_state(update_id)
            if status == "processed":
                return
            if status == "quarantined":
                raise DemoError(f"{self.user.first_name}: {what} could not be handled: {error}")
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{self.user.first_name}: {what} not handled within {UPDATE_WAIT:.0f}s "
                    f"(update {update_id} is {status or 'not stored: is the bot polling?'})"
                )
            time.sleep(0.1)

    def _effect(self, before: dict[int, tuple[str, tuple[str, ...]]], count: int) -> str:
        """What changed in the chat since ``before`` (message id -> (text, keyboard labels))."""
        parts = []
        for message in self.messages():
            labels = tuple(b["text"] for b in message.buttons())
            if message.message_id not in before:
                shown = " ".join(f"[{label}]" for label in labels)
                parts.append(f"sends “{_first_line(message.text)}”" + (f" {_shorten(shown, 60)}" if labels else ""))
            elif before[message.message_id] != (message.text, labels):
                if before[message.message_id][0] != message.text:
                    parts.append(f"edits it: “{_first_line(message.text)}”")
                else:
                    changed = [label for label in labels if label not in before[message.message_id][1]]
                    parts.append(f"edits the buttons: {' '.join(f'[{label}]' for label in changed) or 'unchanged'}")
        answer = [a.text for a in self.tg.callback_answers[count:] if a.user_id == self.uid and a.text]
        if answer:
            parts.append(f"answers “{answer[-1]}”")
        return "; ".join(parts) or "—"

    def _snapshot(self) -> tuple[dict[int, tuple[str, tuple[str, ...]]], int]:
        state = {m.message_id: (m.text, tuple(b["text"] for b in m.buttons())) for m in self.messages()}
        return state, len(self.tg.callback_answers)

    def say(self, text: str) -> None:
        before, answers = self._snapshot()
        update = self.tg.send_user_message(self.uid, text)
        self._handled(update, f"the message {text!r}")
        self.steps.append(Step(f"writes {text}", self._effect(before, answers)))

    def press(self, message: SentMessage, label: str) -> str:
        """Press the button labelled ``label`` (✅ and ✓ marks ignored) on the message as it is now;
        returns the callback query id."""
        current = self.tg.message(self.uid, message.message_id) or message
        button = find_button(current, label)
        before, answers = self._snapshot()
        update = self.tg.press_button(self.uid, current.message_id, button["callback_data"])
        query_id = update["callback_query"]["id"]
        self._handled(update, f"the button {label!r}")
        self.answers[query_id] = next(
            (a.text for a in self.tg.callback_answers if a.callback_query_id == query_id), None
        )
        self.steps.append(Step(f"taps [{button['text']}]", self._effect(before, answers)))
        return query_id

    # -- scripts --

    def onboard(self) -> None:
        user = self.user
        self.tg.add_user(user.telegram_id, user.first_name, username=user.username)
        self.say("/start")
        topics = self.last()
        for topic in user.topics:
            self.press(topics, topic)
        self.press(topics, "Done")
        self.say("/settings")
        menu = self.last()
        for field_label, value in (("Digest style", user.style), ("Summary style", user.summary_style)):
            if f"{field_label}: {value}" in menu.text:  # already what they want (the default)
                continue
            self.press(menu, field_label)
            self.press(menu, value.replace("_", " "))
        for field_label, value in (
            ("Time zone", user.timezone),
            ("Posts per digest", str(user.max_posts)),
            ("Muted keywords", user.muted_keywords),
        ):
            if value is None:
                continue
            self.press(self.last(), field_label)
            self.say(value)

    def set_delivery_time(self) -> None:
        """/settings → Time → the next whole minute in the user's zone (at least 20 s away)."""
        self.say("/settings")
        self.press(self.last(), "Time")
        now = datetime.now(ZoneInfo(self.user.timezone))
        due = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (due - now).total_seconds() < 20:
            due += timedelta(minutes=1)
        self.say(f"{due:%H:%M}")
        if f"at {due:%H:%M}" not in self.last().text:
            raise DemoError(f"{self.user.first_name}: the time {due:%H:%M} was not accepted: {self.last().text}")
        self.due_at = due


def find_button(message: SentMessage, label: str) -> dict[str, Any]:
    def bare(text: str) -> str:
        return text.removeprefix("✅ ").removesuffix("✓").strip()

    for button in message.buttons():
        if button["text"] == label or bare(button["text"]) == label:
            return button
    raise DemoError(
        f"no button {label!r} on message {message.message_id} (has {[b['text'] for b in message.buttons()]})"
    )


def _first_line(value: str, limit: int = 70) -> str:
    return _shorten(value.strip().splitlines()[0] if value.strip() else "", limit)


def _shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


class Parallel:
    """Run a few named scripts in threads; ``join`` re-raises the first failure."""

    def __init__(self, scripts: list[tuple[str, Callable[[], None]]]) -> None:
        self.errors: list[tuple[str, BaseException]] = []
        self.threads = [
            threading.Thread(target=self._run, args=(name, fn), name=f"demo-{name}", daemon=True)
            for name, fn in scripts
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.errors.append((name, exc))

    def check(self) -> None:
        """Raise the first failure now, if there is one."""
        if self.errors:
            name, exc = self.errors[0]
            if isinstance(exc, DemoError):
                raise exc
            raise DemoError(f"{name}: {type(exc).__name__}: {exc}") from exc

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.check()
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise DemoError(f"{', '.join(alive)} did not finish within {timeout:.0f}s")


def _print_transcript(console: Console, chat: UserChat) -> None:
    user = chat.user
    table = Table(
        title=f"{escape(user.first_name)} (@{escape(user.username)}) — {escape(user.about)}",
        box=box.SIMPLE,
        show_header=True,
        title_justify="left",
        padding=(0, 1),
    )
    table.add_column(user.first_name, style="cyan", no_wrap=True)
    table.add_column("HN Pal", overflow="fold")
    for step in chat.steps:
        table.add_row(Text(step.action), Text(step.effect))
    console.print(table)


# --- Telegram messages in the terminal -------------------------------------------------------------

ENTITY_STYLES = {
    "bold": Style(bold=True),
    "italic": Style(italic=True),
    "underline": Style(underline=True),
    "strikethrough": Style(strike=True),
    "spoiler": Style(reverse=True),
    "code": Style(color="magenta"),
    "pre": Style(color="magenta"),
    "blockquote": Style(italic=True, dim=True),
    "expandable_blockquote": Style(italic=True, dim=True),
    "url": Style(color="bright_blue", underline=True),
    "email": Style(color="bright_blue", underline=True),
    "mention": Style(color="bright_blue"),
    "hashtag": Style(color="bright_blue"),
    "cashtag": Style(color="bright_blue"),
    "bot_command": Style(color="bright_blue"),
}


def telegram_text(value: str, entities: list[dict[str, Any]]) -> Text:
    """A message as Telegram shows it: the parsed text with its entities (bold, italic, links...) as
    rich styles. No markup string is built, so nothing in a title or summary can be taken for markup;
    a text link is shown with its address after it (dim)."""
    index = []  # UTF-16 offset -> index in ``value`` (Telegram counts entities in UTF-16 code units)
    for i, ch in enumerate(value):
        index.append(i)
        if ord(ch) > 0xFFFF:
            index.append(i)
    index.append(len(value))

    def at(offset: int) -> int:
        return index[max(0, min(offset, len(index) - 1))]

    styled = Text(value)
    links: list[tuple[int, str]] = []
    for entity in entities:
        start, end = at(entity["offset"]), at(entity["offset"] + entity["length"])
        if entity["type"] == "text_link":
            url = entity.get("url", "")
            styled.stylize(Style(color="bright_blue", underline=True, link=url or None), start, end)
            if url and url != value[start:end]:
                links.append((end, url))
        elif entity["type"] in ENTITY_STYLES:
            styled.stylize(ENTITY_STYLES[entity["type"]], start, end)
    if not links:
        return styled
    out = Text()
    position = 0
    for end, url in sorted(links):
        out.append_text(styled[position:end])
        out.append(f" ‹{url}›", style="dim")
        position = end
    out.append_text(styled[position:])
    return out


def keyboard(reply_markup: dict[str, Any] | None) -> RenderableType | None:
    """An inline keyboard: each row of buttons as boxed labels."""
    rows = (reply_markup or {}).get("inline_keyboard") or []
    if not rows:
        return None
    rendered = []
    for row in rows:
        table = Table(box=box.ROUNDED, show_header=False, padding=(0, 1), pad_edge=True, expand=False)
        for _ in row:
            table.add_column(justify="center", no_wrap=True)
        table.add_row(*(Text(button.get("text", "")) for button in row))
        rendered.append(table)
    return Group(*rendered)


def telegram_message(message: SentMessage, title: str) -> RenderableType:
    """A bot message as a bubble (rich text), its inline keyboard under it."""
    edited = f" · edited ×{len(message.edits)}" if message.edits else ""
    bubble = Panel(
        telegram_text(message.text, message.entities),
        title=escape(title),
        title_align="left",
        subtitle=f"message {message.message_id}{edited}",
        subtitle_align="right",
        width=BUBBLE_WIDTH,
        border_style="cyan",
        box=box.ROUNDED,
    )
    keys = keyboard(message.reply_markup)
    return Group(bubble, keys) if keys is not None else bubble


# --- digests ----------------------------------------------------------------------------------------

DIGEST_SQL = text(
    "SELECT g.id, g.batch_id, g.status, g.style, g.post_count, g.message_id, g.error FROM digests g "
    "JOIN users u ON u.id = g.user_id WHERE u.telegram_id = :tid AND NOT g.manual ORDER BY g.id"
)
DIGEST_MESSAGES_SQL = text(
    "SELECT d.message_id FROM deliveries d JOIN digests g "
    "ON g.user_id = d.user_id AND g.batch_id = d.batch_id WHERE g.id = :digest_id AND d.message_id IS NOT NULL "
    "ORDER BY d.id"
)


def _digests_of(telegram_id: int) -> list[dict[str, Any]]:
    from hnpal.db.session import session_scope

    with session_scope() as session:
        return [dict(row._mapping) for row in session.execute(DIGEST_SQL, {"tid": telegram_id})]


def _wait_for_digests(console: Console, chats: dict[str, UserChat]) -> None:
    latest = max(chat.due_at for chat in chats.values() if chat.due_at is not None)
    deadline = time.monotonic() + max(0.0, (latest - datetime.now(latest.tzinfo)).total_seconds()) + DIGEST_GRACE
    waiting = dict(chats)
    last_note = 0.0
    while waiting:
        for name, chat in list(waiting.items()):
            digests = _digests_of(chat.uid)
            done = [d for d in digests if d["status"] in ("sent", "empty", "failed")]
            if not done:
                continue
            digest = done[-1]
            if digest["status"] != "sent":
                raise DemoError(
                    f"{name}'s digest {digest['batch_id']} ended {digest['status']} "
                    f"({digest['error'] or 'no posts matched'})"
                )
            chat.digest = digest
            messages = _digest_message_ids(chat)
            chat.tg.wait_until(
                lambda chat=chat, ids=messages: all(chat.tg.message(chat.uid, m) for m in ids),
                timeout=10,
                what=f"{name}'s digest messages",
            )
            console.print(
                f"   {escape(name)}: digest {digest['batch_id']} sent at "
                f"{datetime.now(ZoneInfo(chat.user.timezone)):%H:%M:%S} {chat.user.timezone}: "
                f"{digest['post_count']} posts in {len(messages)} message{'s' if len(messages) != 1 else ''}"
            )
            del waiting[name]
        if not waiting:
            break
        now = time.monotonic()
        if now > deadline:
            states = {n: [d["status"] for d in _digests_of(c.uid)] or "not created yet" for n, c in waiting.items()}
            raise DemoError(f"digests not delivered in time: {states}")
        if now - last_note > 15:
            console.print(f"   waiting for {', '.join(waiting)}...")
            last_note = now
        time.sleep(0.5)


def _digest_message_ids(chat: UserChat) -> list[int]:
    from hnpal.db.session import session_scope

    digest = chat.digest
    assert digest is not None
    if digest["style"] == "brief":
        return [digest["message_id"]]
    with session_scope() as session:
        return list(session.scalars(DIGEST_MESSAGES_SQL, {"digest_id": digest["id"]}))


def _print_digest(console: Console, chat: UserChat) -> None:
    user = chat.user
    digest = chat.digest
    assert digest is not None
    console.print()
    console.rule(
        f"[bold]{escape(user.first_name)}'s digest[/] · {digest['style'].replace('_', ' ')} · "
        f"{user.summary_style} summaries · interests {escape(', '.join(user.topics))}",
        align="left",
        style="cyan",
    )
    chat.digest_messages = _digest_message_ids(chat)
    for message_id in chat.digest_messages:
        message = chat.tg.message(chat.uid, message_id)
        assert message is not None
        console.print(telegram_message(message, f"HN Pal → {user.first_name}"))


def _press_buttons(console: Console, chats: dict[str, UserChat]) -> None:
    """A few buttons through the sandbox (real callback queries); each effect is checked, then shown."""
    ada, linus, grace = chats["Ada"], chats["Linus"], chats["Grace"]

    def tap(chat: UserChat, message: SentMessage, label: str, what: str, *, mark: str | None = None,
            answer: str | None = None, full: bool = False) -> None:  # fmt: skip
        query_id = chat.press(message, label)
        console.print(f"[cyan]{escape(chat.user.first_name)}[/] {escape(what)} → {escape(chat.steps[-1].effect)}")
        now = chat.tg.message(chat.uid, message.message_id)
        assert now is not None
        if answer is not None and answer not in (chat.answers.get(query_id) or ""):
            raise DemoError(f"{chat.user.first_name} tapped {label}: the answer was {chat.answers.get(query_id)!r}")
        if mark is not None and mark not in [b["text"] for b in now.buttons()]:
            raise DemoError(f"{chat.user.first_name} tapped {label}: the post does not show {mark}")
        if full:
            console.print(telegram_message(now, f"HN Pal → {chat.user.first_name}"))
        else:
            keys = keyboard(now.reply_markup)
            if keys is not None:
                console.print(keys)

    def post(chat: UserChat, n: int) -> SentMessage:
        ids = chat.digest_messages
        found = chat.tg.message(chat.uid, ids[min(n, len(ids) - 1)])
        assert found is not None
        return found

    tap(ada, post(ada, 0), "👍", "taps 👍 under her first post", mark="👍✓", answer="more like this")
    tap(ada, post(ada, 1), "💾 Save", "taps 💾 under her second post", mark="💾✓", answer="Saved")
    ada.say("/saved")
    console.print(f"[cyan]Ada[/] writes /saved → {escape(ada.steps[-1].effect)}")
    console.print(telegram_message(ada.last(), "HN Pal → Ada"))

    brief = post(linus, 0)
    tap(linus, brief, "2", "taps 2 in his brief digest: the post opens in place", mark="·2·", full=True)
    tap(linus, brief, "👍", "taps 👍 under it", mark="👍✓", answer="more like this")
    tap(grace, post(grace, 2), "👎", "taps 👎 under her last post", mark="👎✓", answer="less like this")


DISCUSSION_QUESTIONS = (
    "What is the main claim here, and what evidence backs it?",
    "I work on database tooling, so I'm curious: what would it mean for Postgres users?",
)


def _discussion(console: Console, chat: UserChat) -> None:
    """💬 under a post, two questions answered on the llm queue (article, thread and memory as context),
    /done, the memory extraction that follows, and /memory."""
    post = chat.tg.message(chat.uid, chat.digest_messages[0])
    assert post is not None
    chat.press(post, "💬 Discuss")
    console.print(telegram_message(chat.last(), f"HN Pal → {chat.user.first_name}"))
    for question in DISCUSSION_QUESTIONS:
        before = len(chat.messages())
        chat.say(question)
        console.print(f"[cyan]{escape(chat.user.first_name)}[/]: {escape(question)}")
        try:
            answer = chat.tg.wait_for_messages(chat.uid, before + 1, timeout=UPDATE_WAIT)[before]
        except TimeoutError:
            raise DemoError(f"{chat.user.first_name}: no answer to {question!r} within {UPDATE_WAIT:.0f}s") from None
        console.print(telegram_message(answer, f"HN Pal → {chat.user.first_name}"))
    chat.say("/done")
    console.print(f"[cyan]{escape(chat.user.first_name)}[/] writes /done → {escape(chat.steps[-1].effect)}")
    deadline = time.monotonic() + UPDATE_WAIT
    while not _extracted(chat.uid):  # hnpal.memory.extract runs on the llm queue after the commit
        if time.monotonic() > deadline:
            raise DemoError(f"{chat.user.first_name}: the discussion's memory was not extracted")
        time.sleep(0.2)
    chat.say("/memory")
    console.print(f"[cyan]{escape(chat.user.first_name)}[/] writes /memory:")
    console.print(telegram_message(chat.last(), f"HN Pal → {chat.user.first_name}"))


def _extracted(telegram_id: int) -> bool:
    from hnpal.db.session import session_scope

    with session_scope() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM memory m JOIN users u ON u.id = m.user_id "
                    "WHERE u.telegram_id = :t AND m.type = 'discussion_note'"
                ),
                {"t": telegram_id},
            )
        )


# --- the database in brief --------------------------------------------------------------------------

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


def _database_summary(console: Console) -> None:
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
            [(m.first_name, m.type, m.source_type, _shorten(m.content, 90), m.confidence) for m in memory],
        )
    )
    console.print(table("telegram_updates", ("status", "updates"), [tuple(u) for u in updates]))
    console.print(
        table("summaries by style", ("style", "summaries", "models", "output tokens"), [tuple(s) for s in summaries])
    )
