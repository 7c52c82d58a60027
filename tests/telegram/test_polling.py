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
