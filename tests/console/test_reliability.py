"""A decision's send survives a console restart mid-review and a kill -9 of the worker between the
approval and the send: the reader gets the approved text exactly once.

The console is killed (-9) while the reviewer has the item open, and started again: the session and the
item are in PostgreSQL, so the same browser cookie decides. The first sender claims the send and is
stuck in Telegram (a server that accepts and never answers) when it is killed -9; nothing went out. The
beat's sweep (run here) finds the claim stale and enqueues the send again; a second sender sends it; a
redelivered message finds it sent and does nothing.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from hnpal.db.session import session_scope
from hnpal.review import service as review
from hnpal.sandbox.telegram_api import TelegramServer
from tests.conftest import REDIS_PREFIX, WorkerProcess, one
from tests.console.conftest import PASSWORD, ConsoleProcess, make_operator
from tests.console.test_review import held_answer


class Silent:
    """A TCP server that accepts connections and never answers (a Telegram that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def _wait(predicate, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.1)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


@pytest.mark.slow
def test_restart_and_kill_between_approval_and_send_deliver_once(silent: Silent, settings_env) -> None:  # type: ignore[no-untyped-def]
    from celery import Celery

    from hnpal.runtime import broker_url

    prefix = f"{REDIS_PREFIX}rel-{uuid.uuid4().hex[:6]}:"
    item_id, _ = held_answer(draft="The approved answer, once.")
    chat = one("SELECT chat_id FROM review_items WHERE id = :i", i=item_id)["chat_id"]
    with TelegramServer() as telegram:
        telegram.add_user(chat, "Ada")
        env = {"HNPAL_REDIS_KEY_PREFIX": prefix, "HNPAL_TELEGRAM_TOKEN": telegram.token}
        console = ConsoleProcess(env)
        try:
            # sign in and open the item; the console dies mid-review and comes back
            reviewer = make_operator("reviewer")
            web = httpx.Client(base_url=console.url, timeout=20, follow_redirects=True)
            login = web.get("/login")
            web.post("/login", data={"name": reviewer, "password": PASSWORD, "csrf": _csrf(login.text)})
            page = web.get(f"/review/{item_id}")
            assert page.status_code == 200 and "The approved answer, once." in page.text
            console.kill()
            console.start()
            decided = web.post(f"/review/{item_id}/decide", data={"action": "approve", "csrf": _csrf(page.text)})
            assert decided.status_code == 200 and f"item {item_id}: approved" in decided.text
        finally:
            console.stop()

        # the first sender claims the send and hangs in Telegram; kill -9
        hanging = {"HNPAL_TELEGRAM_BASE_URL": f"http://127.0.0.1:{silent.port}/bot", "HNPAL_TELEGRAM_TIMEOUT": "120"}
        stuck = WorkerProcess("telegram", concurrency=1, pool="threads", env={**env, **hanging})
        try:
            stuck.wait_ready()
            _wait(lambda: silent.accepted.is_set(), "the first sender to reach Telegram")
            assert one("SELECT status FROM review_sends WHERE review_id = :i", i=item_id)["status"] == "sending"
            stuck.proc.kill()
            stuck.proc.wait()
        finally:
            stuck.stop()
        assert telegram.messages(chat) == []

        # the sweep finds the stale claim and sends it again; a second sender delivers it, once
        settings_env(review_send_stale="1", redis_key_prefix=prefix)
        sender = WorkerProcess("telegram", concurrency=2, pool="threads",
                               env={**env, "HNPAL_TELEGRAM_BASE_URL": telegram.base_url})  # fmt: skip
        client = Celery("hnpal-test-client", broker=broker_url(), set_as_current=False)
        client.conf.broker_transport_options = {"global_keyprefix": prefix}
        try:
            sender.wait_ready()
            time.sleep(1.2)  # the claim is older than HNPAL_REVIEW_SEND_STALE
            with session_scope() as session:
                sends = review.sweep(session).sends
            send_id = one("SELECT id FROM review_sends WHERE review_id = :i", i=item_id)["id"]
            assert send_id in sends
            for _ in range(2):  # the sweep's message, and a duplicate (a redelivery)
                client.send_task("hnpal.review.send", args=[send_id], queue="telegram")
            _wait(lambda: one("SELECT status FROM review_sends WHERE id = :s", s=send_id)["status"] == "sent",
                  "the send recorded")  # fmt: skip
            _wait(lambda: sender.log().count("succeeded") >= 2, "both send tasks to finish")
        finally:
            client.close()
            sender.stop()
        assert [m.text for m in telegram.messages(chat)] == ["The approved answer, once."]
