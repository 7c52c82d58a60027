"""A running Telegram stack for end-to-end bot tests.

``tg_stack`` (one per test module) starts, as an operator would:

* the sandbox Bot API (:class:`~hnpal.sandbox.telegram_api.TelegramServer`) with flood control on:
  30 messages/s overall (Telegram's limit) and 5/s per chat (generous, so a test that presses several
  buttons quickly is not slowed down; the bot's own limiter is set to the same 5/s per chat, so any 429
  would be a limiter bug and is checked at the end of the module);
* one real Celery worker subprocess on the ``default,telegram`` queues (threads pool);
* the real bot process (``hnpal bot``) as a subprocess, polling the sandbox.

Everything shares the test run's database and a Redis key prefix of its own (broker queues included,
so stale tasks of other test modules are never consumed). The sandbox's update ids start above every
id already stored, so that no test's update collides with an earlier module's row.

The :class:`Stack` methods send as a user and wait for the outcome: the update's row in
``telegram_updates`` reaching ``processed`` or ``quarantined`` (replies, edits and button answers all
happen before that commit), and the sandbox having recorded the expected messages. When a test fails,
the worker's and the bot's logs are attached to its report.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hnpal.sandbox.telegram_api import SentMessage, TelegramServer
from tests.conftest import REDIS_PREFIX, REPO, WorkerProcess, _tmp_root

WAIT = 20.0  # seconds any single expected outcome may take
FINAL = ("processed", "quarantined")
LOG_TAIL = 200  # lines of each process log attached to a failed test's report

_user_ids = itertools.count(7_000_001)
_active: list[Stack] = []


def hnpal_executable() -> str:
    candidate = Path(sys.executable).parent / "hnpal"
    return str(candidate if candidate.exists() else REPO / ".venv" / "bin" / "hnpal")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(text: str, lines: int = LOG_TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])


class BotProcess:
    """``hnpal bot`` in its own process; ``env`` on top of the test process's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.log_path = _tmp_root / f"bot-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [hnpal_executable(), "bot"],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the bot process exited with {self.proc.returncode}:\n{_tail(self.log())}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Stack:
    """The sandbox, the worker and the bot, with helpers to act as a Telegram user and wait."""

    def __init__(self, server: TelegramServer, env: dict[str, str], worker: WorkerProcess) -> None:
        self.server = server
        self.env = env
        self.worker = worker
        self.bot: BotProcess | None = None
        self.old_bots: list[BotProcess] = []

    # -- processes ---------------------------------------------------------------------------------

    def _requests(self, method: str) -> int:
        with self.server._lock:
            return sum(1 for m, status in self.server.request_log if m.lower() == method.lower() and status == 200)

    def start_bot(self, **extra_env: str) -> BotProcess:
        """Start ``hnpal bot`` and wait until it polls (or, in webhook mode, has set its webhook)."""
        assert self.bot is None, "a bot process is already running"
        webhook = extra_env.get("HNPAL_TELEGRAM_MODE") == "webhook"
        ready = "setWebhook" if webhook else "deleteWebhook"  # polling: deleteWebhook, then getUpdates
        before = self._requests(ready)
        self.bot = BotProcess({**self.env, **extra_env})
        deadline = time.monotonic() + 60
        while self._requests(ready) <= before:
            self.bot.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not call {ready} within 60 s:\n{_tail(self.bot.log())}")
            time.sleep(0.05)
        return self.bot

    def stop_bot(self) -> None:
        if self.bot is not None:
            self.bot.stop()
            self.old_bots.append(self.bot)
            self.bot = None

    def stop(self) -> None:
        self.stop_bot()
        self.worker.stop()

    def enqueue_handle(self, update_id: int) -> None:
        """Enqueue ``hnpal.telegram.handle`` for a stored update, as the bot process would (through this
        stack's broker namespace, with a client app of its own)."""
        from celery import Celery

        from hnpal.runtime import broker_url

        client = Celery("hnpal-test-client", broker=broker_url(), set_as_current=False)
        client.conf.broker_transport_options = {"global_keyprefix": self.env["HNPAL_REDIS_KEY_PREFIX"]}
        try:
            client.send_task("hnpal.telegram.handle", args=[update_id], queue="telegram")
        finally:
            client.close()

    def logs(self) -> list[tuple[str, str]]:
        sections = [("worker log", _tail(self.worker.log()))]
        for n, bot in enumerate([*self.old_bots, *([self.bot] if self.bot else [])], start=1):
            sections.append((f"bot process {n} log", _tail(bot.log())))
        with self.server._lock:
            errors = list(self.server.errors[-30:])
        sections.append(("sandbox error answers (last 30)", "\n".join(map(repr, errors)) or "none"))
        return sections

    # -- users -------------------------------------------------------------------------------------

    def new_user(self, first_name: str = "Ada", username: str | None = None) -> int:
        """A Telegram user no other test uses (and their private chat with the bot)."""
        user_id = next(_user_ids)
        self.server.add_user(user_id, first_name=first_name, username=username)
        return user_id

    # -- waiting -----------------------------------------------------------------------------------

    def wait_handled(self, update_id: int, timeout: float = WAIT) -> dict[str, Any]:
        """Wait until the worker has finished update ``update_id``; its ``telegram_updates`` row."""
        from hnpal.db.session import session_scope
        from hnpal.telegram.models import TelegramUpdate

        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            with session_scope() as session:
                found = session.get(TelegramUpdate, update_id)
                if found is not None:
                    row = {c.name: getattr(found, c.name) for c in TelegramUpdate.__table__.columns}
            if row is not None and row["status"] in FINAL:
                return row
            if self.bot is not None:
                self.bot.check_alive()
            time.sleep(0.05)
        state = "never stored" if row is None else f"status {row['status']!r}, error {row['error']!r}"
        raise TimeoutError(f"update {update_id} not handled within {timeout}s ({state})")

    def wait_messages(self, chat_id: int, count: int, timeout: float = WAIT) -> list[SentMessage]:
        return self.server.wait_for_messages(chat_id, count, timeout=timeout)

    def wait_until(self, predicate, timeout: float = WAIT, what: str = "a condition") -> None:  # type: ignore[no-untyped-def]
        """Poll ``predicate`` (may use the database) outside the sandbox's lock."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what}")
            time.sleep(0.05)

    # -- acting as a user --------------------------------------------------------------------------

    def send(
        self,
        user_id: int,
        text: str,
        *,
        replies: int = 1,
        chat_type: str = "private",
        chat_id: int | None = None,
        timeout: float = WAIT,
    ) -> list[SentMessage]:
        """The user writes ``text``; waits until it is handled and ``replies`` new bot messages arrived in
        the chat. Returns the new messages."""
        chat = user_id if chat_id is None else chat_id
        before = len(self.server.messages(chat))
        update = self.server.send_user_message(user_id, text, chat_type=chat_type, chat_id=chat_id)
        return self._outcome(update["update_id"], chat, before, replies, timeout)

    def inject(self, update: dict[str, Any], *, chat_id: int | None = None, replies: int = 0) -> dict[str, Any]:
        """Queue any update; waits until handled (and for ``replies`` new messages in ``chat_id``).
        Returns the update's row."""
        before = len(self.server.messages(chat_id)) if chat_id is not None else 0
        sent = self.server.inject_update(update)
        row = self.wait_handled(sent["update_id"])
        if chat_id is not None and replies:
            self.wait_messages(chat_id, before + replies)
        return row

    def _outcome(self, update_id: int, chat: int, before: int, replies: int, timeout: float) -> list[SentMessage]:
        row = self.wait_handled(update_id, timeout)
        assert row["status"] == "processed", f"update {update_id}: {row['status']} ({row['error']})"
        if replies:
            self.wait_messages(chat, before + replies, timeout)
        return self.server.messages(chat)[before:]

    def press(
        self,
        user_id: int,
        message: SentMessage | int,
        button: str,
        *,
        chat_id: int | None = None,
        check: bool = True,
        replies: int = 0,
        timeout: float = WAIT,
    ) -> str | None:
        """The user presses a button of a bot message: ``button`` is its label (exact, or the start of it)
        or its callback data. Waits until the press is handled; returns the callback answer's text."""
        chat = user_id if chat_id is None else chat_id
        message_id = message if isinstance(message, int) else message.message_id
        current = self.server.message(chat, message_id)
        data = button
        if current is not None:
            data = find_button(current, button, default=button)
        before = len(self.server.messages(chat))
        update = self.server.press_button(user_id, message_id, data, chat_id=chat_id, check=check)
        query_id = update["callback_query"]["id"]
        self._outcome(update["update_id"], chat, before, replies, timeout)
        answers = [a for a in self.server.callback_answers if a.callback_query_id == query_id]
        assert len(answers) == 1, f"button press {data!r} answered {len(answers)} times"
        return answers[0].text

    def current(self, chat_id: int, message: SentMessage | int) -> SentMessage:
        """A bot message as it is now (after edits)."""
        message_id = message if isinstance(message, int) else message.message_id
        found = self.server.message(chat_id, message_id)
        assert found is not None, f"no bot message {message_id} in chat {chat_id}"
        return found


def find_button(message: SentMessage, label: str, default: str | None = None) -> str:
    """The callback data of the button labelled ``label`` (exactly, else the first that starts with it)."""
    buttons = message.buttons()
    for button in buttons:
        if button.get("text") == label or button.get("callback_data") == label:
            return button["callback_data"]
    for button in buttons:
        if button.get("text", "").startswith(label):
            return button["callback_data"]
    if default is not None:
        return default
    raise AssertionError(f"no button {label!r} in {[b.get('text') for b in buttons]}")


def labels(message: SentMessage) -> list[str]:
    return [b.get("text", "") for b in message.buttons()]


def _first_update_id() -> int:
    """Above every update_id stored so far in this run's database (the bot resumes after the largest)."""
    from hnpal.db.session import session_scope
    from hnpal.telegram.models import TelegramUpdate

    with session_scope() as session:
        largest = session.scalar(select(func.max(TelegramUpdate.update_id))) or 0
    return largest + 100_000


@contextlib.contextmanager
def running_stack(**extra_env: str) -> Iterator[Stack]:
    """The sandbox, a worker and the bot, as :func:`tg_stack` describes, with ``extra_env`` on top."""
    from config.settings import reset_settings_cache

    server = TelegramServer(enforce_limits=True, first_update_id=_first_update_id())
    server.set_limits(global_rate=30, per_chat_rate=5)
    server.start()
    env = {
        "HNPAL_TELEGRAM_TOKEN": server.token,
        "HNPAL_TELEGRAM_BASE_URL": server.base_url,
        "HNPAL_TELEGRAM_POLL_TIMEOUT": "1",
        "HNPAL_TELEGRAM_TIMEOUT": "10",
        # 4.5/s against the server's 5: the limiter's chat margin (15%) tolerates 30 ms of jitter between a
        # chat's sends at 5/s; a whole suite on two cores has shown more (one 429 in a clean-clone run), and
        # this module asserts that no send ever met one. Paced at 4.5/s the margin covers about 50 ms more.
        "HNPAL_TELEGRAM_CHAT_RATE": "4.5",
        "HNPAL_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}tg-{uuid.uuid4().hex[:6]}:",
        **extra_env,
    }
    # The test process signs and checks button data with the same settings as the bot's worker.
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    reset_settings_cache()
    worker = WorkerProcess("default,telegram,llm", env=env, concurrency=4, pool="threads")
    stack = Stack(server, env, worker)
    _active.append(stack)
    try:
        worker.wait_ready()
        stack.start_bot()
        yield stack
    finally:
        _active.remove(stack)
        stack.stop()
        server.stop()
        patch.undo()
        reset_settings_cache()
        from hnpal.telegram.client import close_clients

        close_clients()


@pytest.fixture(scope="module")
def tg_stack() -> Iterator[Stack]:
    with running_stack() as stack:
        yield stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Attach the stack's process logs to the report of a failed test (or a failed setup)."""
    report = yield
    if report.failed and _active:
        for stack in _active:
            for title, text in stack.logs():
                report.sections.append((title, text))
    return report
