"""The bot's polling loop against the Telegram sandbox: its base URL, and a pause between empty answers."""

from __future__ import annotations

import asyncio
import threading

from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.telegram.bot import IDLE_PAUSE, BotProcess


def test_trailing_slash_base_url_and_no_spin_on_empty_answers(settings_env) -> None:
    server = TelegramServer()
    server.start()
    try:
        # A trailing slash used to give /bot/<token>/getMe (a 404) in `hnpal bot` only. A poll timeout
        # of 0 is allowed: the server answers every getUpdates at once, empty.
        settings_env(telegram_token=server.token, telegram_base_url=server.base_url + "/", telegram_poll_timeout=0)
        process = BotProcess()
        runner = threading.Thread(target=asyncio.run, args=(process.run(),), daemon=True)
        runner.start()

        def polls() -> int:
            return sum(1 for method, status in server.request_log if method == "getUpdates" and status == 200)

        server.wait_until(lambda: polls() >= 4, timeout=60, what="four getUpdates")
        process.stop()
        runner.join(timeout=30)
    finally:
        server.stop()
    assert ("getMe", 200) in server.request_log
    assert not [s for m, s in server.request_log if s == 404]
    # empty answers in a row: a pause after each, doubling (0.5, 1, 2 s...), before the next getUpdates
    assert list(process.idle_pauses)[:3] == [IDLE_PAUSE, 2 * IDLE_PAUSE, 4 * IDLE_PAUSE]
    assert len(process.idle_pauses) >= polls() - 1


def test_the_running_bot_writes_its_heartbeat(settings_env, redis_client, key_prefix: str) -> None:
    """The bot's liveness for the metrics (hnpal_process_alive{process="bot"}), from its event loop."""
    import time

    from hnpal.ops import heartbeat
    from hnpal.ops.metrics import render
    from tests.ops.test_metrics import samples, value

    server = TelegramServer()
    server.start()
    try:
        settings_env(telegram_token=server.token, telegram_base_url=server.base_url, telegram_poll_timeout=0,
                     redis_key_prefix=key_prefix)  # fmt: skip
        process = BotProcess()
        runner = threading.Thread(target=asyncio.run, args=(process.run(),), daemon=True)
        runner.start()
        key = f"{key_prefix}{heartbeat.KEY}bot"
        deadline = time.monotonic() + 60
        while redis_client.get(key) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        figures = samples(render(redis_client=redis_client, prefix=key_prefix))
        process.stop()
        runner.join(timeout=30)
    finally:
        server.stop()
    assert redis_client.get(key) is not None
    assert value(figures, "hnpal_process_alive", process="bot") == 1
