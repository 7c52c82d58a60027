"""The sandbox Telegram Bot API, driven over loopback with the real python-telegram-bot client (and httpx
for raw requests)."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from hnpal.sandbox.telegram_api import TelegramServer, parse_html, parse_markdown_v2, utf16_len

# PTB warns from inside RetryAfter itself about retry_after becoming a timedelta; seconds() reads both forms
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
USER = 42
OTHER = 43
T = TypeVar("T")


@pytest.fixture
def tg() -> Iterator[TelegramServer]:
    """Flood control off: for functional tests."""
    with TelegramServer(enforce_limits=False) as server:
        server.add_user(USER, first_name="Ada", username="ada")
        yield server


def drive(tg: TelegramServer, scenario: Callable[[Bot], Awaitable[T]], **request: Any) -> T:
    """Run ``scenario(bot)`` with a real PTB Bot pointed at the sandbox (initialized: getMe ran)."""

    async def main() -> T:
        kwargs: dict[str, Any] = {}
        if request:
            kwargs["request"] = HTTPXRequest(**request)
        async with Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url, **kwargs) as bot:
            return await scenario(bot)

    return asyncio.run(main())


def api(tg: TelegramServer, method: str, **kwargs: Any) -> httpx.Response:
    """A raw POST to ``method`` (``json=``, ``data=``, ``params=``, ``files=`` as httpx takes them)."""
    with httpx.Client(timeout=10) as client:
        return client.post(f"{tg.base_url}{tg.token}/{method}", **kwargs)


def seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(f"b{n}", callback_data=d)] for n, d in enumerate(data)])


# --------------------------------------------------------------------------------------------
# Identity, routing, parameters
# --------------------------------------------------------------------------------------------


def test_get_me_and_urls(tg: TelegramServer) -> None:
    assert tg.base_url == f"http://127.0.0.1:{tg.port}/bot"
    assert tg.base_file_url == f"http://127.0.0.1:{tg.port}/file/bot"

    async def scenario(bot: Bot) -> Any:
        return bot.bot, await bot.get_me()

    initialized, me = drive(tg, scenario)
    assert me == initialized
    assert (me.id, me.username, me.is_bot, me.first_name) == (123456, "hnpal_sandbox_bot", True, "HN Pal (sandbox)")
    assert tg.request_log == [("getMe", 200), ("getMe", 200)]


def test_unknown_token_and_method(tg: TelegramServer) -> None:
    with httpx.Client(timeout=5) as client:
        bad = client.post(f"{tg.base_url}999:wrong/getMe")
        assert bad.status_code == 401
        assert bad.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
        missing = client.post(f"{tg.base_url}{tg.token}/sendCarrierPigeon")
        assert missing.status_code == 404
        assert missing.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        assert client.get(f"{tg.root_url}/elsewhere").status_code == 404

    async def wrong_token() -> None:
        async with Bot("999:wrong", base_url=tg.base_url):
            pass

    with pytest.raises(InvalidToken):
        asyncio.run(wrong_token())


def test_method_names_are_case_insensitive_and_params_come_in_every_encoding(tg: TelegramServer) -> None:
    markup = {"inline_keyboard": [[{"text": "Open", "callback_data": "open:1"}]]}
    as_json = api(tg, "SENDMESSAGE", json={"chat_id": USER, "text": "json", "reply_markup": markup})
    assert as_json.status_code == 200 and as_json.json()["ok"] is True
    form = api(tg, "sendmessage", data={"chat_id": str(USER), "text": "form", "reply_markup": json.dumps(markup)})
    assert form.json()["result"]["reply_markup"] == markup
    query = api(tg, "sendMessage", params={"chat_id": USER, "text": "query <b>x</b>", "parse_mode": "HTML"})
    result = query.json()["result"]
    assert result["text"] == "query x" and result["entities"] == [{"type": "bold", "offset": 6, "length": 1}]
    assert [m.text for m in tg.messages(USER)] == ["json", "form", "query x"]
    assert [m.message_id for m in tg.messages(USER)] == [1, 2, 3]
    assert tg.request_log == [("sendMessage", 200)] * 3
    body = api(tg, "sendMessage", content=b"{not json", headers={"Content-Type": "application/json"})
    assert body.status_code == 400 and body.json()["description"].startswith("Bad Request:")


# --------------------------------------------------------------------------------------------
# Updates: long polling and webhooks
# --------------------------------------------------------------------------------------------


def test_get_updates_offset_confirms_and_drops(tg: TelegramServer) -> None:
    first = tg.send_user_message(USER, "/start")
    second = tg.send_user_message(USER, "hello https://news.ycombinator.com/item?id=1")
    third = tg.send_user_message(USER, "third")
    assert [u["update_id"] for u in (first, second, third)] == [1, 2, 3]
    assert first["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]

    async def scenario(bot: Bot) -> list[Any]:
        seen = []
        everything = await bot.get_updates()
        seen.append([u.update_id for u in everything])
        assert everything[0].message is not None and everything[0].message.text == "/start"
        assert everything[1].message is not None
        assert everything[1].message.entities[0].type == MessageEntity.URL
        seen.append([u.update_id for u in await bot.get_updates()])  # nothing confirmed yet
        seen.append([u.update_id for u in await bot.get_updates(offset=2, limit=1)])
        seen.append([u.update_id for u in await bot.get_updates(offset=1)])  # update 1 is gone for good
        seen.append(tg.pending_updates())
        seen.append([u.update_id for u in await bot.get_updates(offset=4)])
        seen.append(tg.pending_updates())
        return seen

    assert drive(tg, scenario) == [[1, 2, 3], [1, 2, 3], [2], [2, 3], 2, [], 0]


def test_negative_offset_keeps_the_last_updates(tg: TelegramServer) -> None:
    for n in range(5):
        tg.send_user_message(USER, f"m{n}")

    async def scenario(bot: Bot) -> list[int]:
        return [u.update_id for u in await bot.get_updates(offset=-2)]

    assert drive(tg, scenario) == [4, 5]
    assert tg.pending_updates() == 2


def test_long_poll_times_out_empty_and_wakes_on_an_update(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> tuple[float, float, list[str]]:
        start = time.monotonic()
        assert await bot.get_updates(timeout=1) == ()
        empty = time.monotonic() - start
        timer = threading.Timer(0.3, tg.send_user_message, args=(USER, "late"))
        timer.start()
        start = time.monotonic()
        updates = await bot.get_updates(timeout=10)
        woke = time.monotonic() - start
        timer.join()
        return empty, woke, [u.message.text for u in updates if u.message]

    empty, woke, texts = drive(tg, scenario)
    assert 0.9 <= empty < 2.5
    assert 0.25 <= woke < 2.0
    assert texts == ["late"]


def test_a_second_poller_ends_the_first_with_a_conflict(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> None:
        first = asyncio.create_task(bot.get_updates(timeout=5))
        await asyncio.sleep(0.3)
        # a second bot instance (PTB's own getUpdates pool holds one connection)
        async with httpx.AsyncClient(timeout=5) as other:
            reply = await other.post(f"{tg.base_url}{tg.token}/getUpdates", json={"timeout": 0})
        assert reply.json() == {"ok": True, "result": []}
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await first

    drive(tg, scenario)


def test_allowed_updates_filters_new_updates(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> list[str]:
        await bot.get_updates(allowed_updates=["callback_query"])
        sent = await bot.send_message(USER, "pick", reply_markup=keyboard("a"))
        tg.send_user_message(USER, "ignored")
        tg.press_button(USER, sent.message_id, "a")
        return [u.callback_query.data for u in await bot.get_updates() if u.callback_query]

    assert drive(tg, scenario) == ["a"]


class _Receiver:
    """A webhook endpoint: records requests and answers with the next status in ``statuses``."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.calls.append((dict(self.headers), json.loads(body)))
                status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhook_delivers_with_secret_retries_and_blocks_get_updates() -> None:
    receiver = _Receiver(statuses=[500])  # the first attempt fails, the retry succeeds
    try:
        with TelegramServer(enforce_limits=False, webhook_retry_delay=0.05) as tg:
            tg.add_user(USER)
            queued = tg.send_user_message(USER, "before the webhook")

            async def scenario(bot: Bot) -> Any:
                assert await bot.set_webhook(receiver.url, secret_token="s3cret-token_1")
                tg.wait_until(lambda: len(tg.webhook_deliveries) == 1, 5, "the first delivery")
                pushed = tg.send_user_message(USER, "after the webhook")
                tg.wait_until(lambda: len(tg.webhook_deliveries) == 2, 5, "the second delivery")
                with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
                    await bot.get_updates()
                info = await bot.get_webhook_info()
                assert await bot.delete_webhook()
                assert (await bot.get_webhook_info()).url == ""
                tg.send_user_message(USER, "polled again")
                polled = await bot.get_updates()
                return pushed, info, polled

            pushed, info, polled = drive(tg, scenario)
            assert info.url == receiver.url and info.pending_update_count == 0
            assert [(d.update_id, d.attempts, d.delivered) for d in tg.webhook_deliveries] == [
                (queued["update_id"], 2, True),
                (pushed["update_id"], 1, True),
            ]
            assert [body for _, body in receiver.calls] == [queued, queued, pushed]
            headers = receiver.calls[0][0]
            assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cret-token_1"
            assert headers["Content-Type"] == "application/json"
            assert [u.message.text for u in polled if u.message] == ["polled again"]
            assert ("getUpdates", 409) in tg.request_log
    finally:
        receiver.close()


def test_webhook_gives_up_after_the_attempts_and_reports_the_error() -> None:
    receiver = _Receiver(statuses=[502, 502, 502])
    try:
        with TelegramServer(enforce_limits=False, webhook_attempts=3, webhook_retry_delay=0.02) as tg:
            assert api(tg, "setWebhook", json={"url": receiver.url, "drop_pending_updates": True}).json() == {
                "ok": True,
                "result": True,
                "description": "Webhook was set",
            }
            tg.send_user_message(USER, "lost")
            tg.wait_until(lambda: len(tg.webhook_deliveries) == 1, 5, "a delivery")
            [delivery] = tg.webhook_deliveries
            assert (delivery.attempts, delivery.status, delivery.delivered) == (3, 502, False)
            info = api(tg, "getWebhookInfo").json()["result"]
            assert "502" in info["last_error_message"] and info["pending_update_count"] == 0
            bad = api(tg, "setWebhook", json={"url": "ftp://example.com/hook"})
            assert bad.status_code == 400 and "bad webhook" in bad.json()["description"]
    finally:
        receiver.close()


# --------------------------------------------------------------------------------------------
# sendMessage: formatting and validation
# --------------------------------------------------------------------------------------------


def test_html_is_parsed_into_plain_text_and_utf16_entities(tg: TelegramServer) -> None:
    html = (
        '😀 <b>Top <i>story</i></b>: <a href="https://example.com/?a=1&amp;b=2">Show HN</a> &lt;3 &#8364;\n'
        '<pre><code class="language-python">print("hi")</code></pre>\n<tg-spoiler>secret</tg-spoiler>'
    )

    async def scenario(bot: Bot) -> Any:
        return await bot.send_message(USER, html, parse_mode="HTML")

    message = drive(tg, scenario)
    assert message.text == '😀 Top story: Show HN <3 €\nprint("hi")\nsecret'
    got = [(e.type, e.offset, e.length, e.url, e.language) for e in message.entities]
    assert got == [
        ("bold", 3, 9, None, None),  # the emoji counts two UTF-16 units
        ("italic", 7, 5, None, None),
        ("text_link", 14, 7, "https://example.com/?a=1&b=2", None),
        ("pre", 27, 11, None, "python"),
        ("spoiler", 39, 6, None, None),
    ]
    [sent] = tg.messages(USER)
    assert (sent.text, sent.raw_text, sent.parse_mode) == (message.text, html, "HTML")
    assert sent.entities[0] == {"type": "bold", "offset": 3, "length": 9}
    assert parse_html("<blockquote expandable>q</blockquote><tg-emoji emoji-id='5368324170671202286'>👍</tg-emoji>")[
        1
    ] == [
        {"type": "expandable_blockquote", "offset": 0, "length": 1},
        {"type": "custom_emoji", "offset": 1, "length": 2, "custom_emoji_id": "5368324170671202286"},
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<blink>x</blink>", 'Unsupported start tag "blink" at byte offset 0'),
        ("1 < 2", "at byte offset 2"),
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'expected "</b>", found "</i>"'),
        ("AT&T", "at byte offset 2"),
        ("é<br>", 'Unsupported start tag "br" at byte offset 2'),  # offsets count UTF-8 bytes
        ('<span class="x">y</span>', 'must have class "tg-spoiler"'),
    ],
)
def test_invalid_html_is_rejected(tg: TelegramServer, text: str, fragment: str) -> None:
    async def scenario(bot: Bot) -> None:
        await bot.send_message(USER, text, parse_mode="HTML")

    with pytest.raises(BadRequest) as info:
        drive(tg, scenario)
    # PTB drops "Bad Request: " and str.capitalize()s the rest; the server's own words are in tg.errors
    assert info.value.message.startswith("Can't parse entities: ")
    method, status, description = tg.errors[-1]
    assert (method, status) == ("sendMessage", 400)
    assert description.startswith("Bad Request: can't parse entities: ") and fragment in description
    assert tg.messages(USER) == []
    assert tg.request_log[-1] == ("sendMessage", 400)


def test_markdown_v2(tg: TelegramServer) -> None:
    good = r"*bold* _it_ __under__ ~gone~ ||spoiler|| `co\`de` [HN](https://news.ycombinator.com/) 3\.14\!"

    async def scenario(bot: Bot) -> Any:
        message = await bot.send_message(USER, good, parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match="(?i)character '.' is reserved"):
            await bot.send_message(USER, "Version 1.5 is out", parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match="(?i)can't find end of bold entity"):
            await bot.send_message(USER, "*bold forever", parse_mode="MarkdownV2")
        return message

    message = drive(tg, scenario)
    unescaped, unclosed = (description for _, _, description in tg.errors)
    assert message.text == "bold it under gone spoiler co`de HN 3.14!"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bold", 0, 4),
        ("italic", 5, 2),
        ("underline", 8, 5),
        ("strikethrough", 14, 4),
        ("spoiler", 19, 7),
        ("code", 27, 5),
        ("text_link", 33, 2),
    ]
    assert unescaped == (
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
    )
    assert unclosed == "Bad Request: can't parse entities: Can't find end of Bold entity at byte offset 0"
    assert parse_markdown_v2("```python\nx = 1\n```")[1] == [
        {"type": "pre", "offset": 0, "length": 6, "language": "python"}
    ]


def test_message_length_is_counted_in_utf16_after_parsing(tg: TelegramServer) -> None:
    emoji = "😀"
    exactly = emoji * 2047 + "ab"  # 4094 + 2 = 4096 UTF-16 units, 2049 characters
    over = emoji * 2048 + "a"  # 4097 units although only 2049 characters
    assert utf16_len(exactly) == 4096 and utf16_len(over) == 4097

    async def scenario(bot: Bot) -> list[str]:
        outcomes = []
        for text, mode in [
            (exactly, None),
            (over, None),
            ("<b>" + "x" * 4096 + "</b>", "HTML"),  # the tags do not count
            ("x" * 4097, None),
            ("  \n ", None),
            ("", None),
        ]:
            try:
                await bot.send_message(USER, text, parse_mode=mode)
                outcomes.append("ok")
            except BadRequest as exc:
                outcomes.append(exc.message)
        return outcomes

    assert drive(tg, scenario) == [
        "ok",
        "Message is too long",  # PTB capitalizes the first letter of the description
        "ok",
        "Message is too long",
        "Message text is empty",
        "Message text is empty",
    ]
    assert [utf16_len(m.text) for m in tg.messages(USER)] == [4096, 4096]


def test_text_is_trimmed_like_telegram(tg: TelegramServer) -> None:
    reply = api(tg, "sendMessage", json={"chat_id": USER, "text": "  <b> hi </b>\n", "parse_mode": "html"})
    assert reply.json()["result"]["text"] == "hi"
    assert reply.json()["result"]["entities"] == [{"type": "bold", "offset": 0, "length": 2}]


def test_inline_keyboard_validation(tg: TelegramServer) -> None:
    ok = "é" * 32  # 64 UTF-8 bytes
    too_long = "é" * 32 + "x"  # 65 bytes, 33 characters

    async def scenario(bot: Bot) -> Any:
        message = await bot.send_message(USER, "fits", reply_markup=keyboard(ok, "x" * 64))
        with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
            await bot.send_message(USER, "too long", reply_markup=keyboard(too_long))
        with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
            await bot.send_message(USER, "ascii", reply_markup=keyboard("x" * 65))
        return message

    message = drive(tg, scenario)
    assert message.reply_markup.inline_keyboard[0][0].callback_data == ok
    cases = [
        ({"inline_keyboard": [[{"text": "", "callback_data": "a"}]]}, "Text must be non-empty"),
        ({"inline_keyboard": [[{"text": "plain"}]]}, "Text buttons are unallowed in the inline keyboard"),
        ({"inline_keyboard": [[{"text": "t", "callback_data": "a", "url": "https://e.com"}]]}, "exactly one"),
        ({"inline_keyboard": [[{"text": "t", "url": "not a url"}]]}, "BUTTON_URL_INVALID"),
        ({"inline_keyboard": [{"text": "t", "callback_data": "a"}]}, "Array of Arrays"),
        ({"inline_keyboard": "nope"}, "must be an Array"),
        ("{broken json", "can't parse reply keyboard markup JSON object"),
    ]
    for markup, fragment in cases:
        data = {"chat_id": USER, "text": "x", "reply_markup": markup if isinstance(markup, str) else json.dumps(markup)}
        reply = api(tg, "sendMessage", data=data)
        assert reply.status_code == 400, markup
        assert reply.json()["description"].startswith("Bad Request: ") and fragment in reply.json()["description"]
    assert len(tg.messages(USER)) == 1


def test_unknown_blocked_and_deactivated_chats(tg: TelegramServer) -> None:
    tg.add_user(OTHER)

    async def scenario(bot: Bot) -> None:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(999, "who?")
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.get_chat(999)
        tg.block(USER)
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_message(USER, "hello?")
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_chat_action(USER, "typing")
        tg.deactivate(OTHER)
        with pytest.raises(Forbidden, match="user is deactivated"):
            await bot.send_message(OTHER, "hello?")
        tg.send_user_message(USER, "/start")  # writing to the bot again unblocks it
        await bot.send_message(USER, "welcome back")

    drive(tg, scenario)
    assert [m.text for m in tg.all_messages()] == ["welcome back"]
    assert ("sendMessage", 403) in tg.request_log


# --------------------------------------------------------------------------------------------
# Edits, callbacks, documents, other methods
# --------------------------------------------------------------------------------------------


def test_edits_and_not_modified(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> Any:
        sent = await bot.send_message(USER, "<b>v1</b>", parse_mode="HTML", reply_markup=keyboard("more"))
        edited = await bot.edit_message_text(
            "<b>v2</b>", USER, sent.message_id, parse_mode="HTML", reply_markup=keyboard("more")
        )
        with pytest.raises(BadRequest, match="(?i)message is not modified"):
            await bot.edit_message_text(
                "<b>v2</b>", USER, sent.message_id, parse_mode="HTML", reply_markup=keyboard("more")
            )
        with pytest.raises(BadRequest, match="(?i)message is not modified"):
            await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=keyboard("more"))
        swapped = await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=keyboard("less"))
        no_keyboard = await bot.edit_message_text("<b>v2</b>", USER, sent.message_id, parse_mode="HTML")
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await bot.edit_message_text("x", USER, 999)
        user_message = tg.send_user_message(USER, "mine")["message"]["message_id"]
        with pytest.raises(BadRequest, match="Message can't be edited"):
            await bot.edit_message_text("x", USER, user_message)
        return sent, edited, swapped, no_keyboard

    sent, edited, swapped, no_keyboard = drive(tg, scenario)
    assert edited.message_id == sent.message_id and edited.text == "v2" and edited.edit_date is not None
    assert swapped.reply_markup.inline_keyboard[0][0].callback_data == "less"
    assert no_keyboard.reply_markup is None  # like Telegram: editing text without a markup drops the keyboard
    [record] = tg.messages(USER)
    assert record.text == "v2" and record.reply_markup is None
    assert [(e.method, e.text) for e in record.edits] == [
        ("editMessageText", "v2"),
        ("editMessageReplyMarkup", "v2"),
        ("editMessageText", "v2"),
    ]


def test_press_button_and_answer_callback_query(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> Any:
        sent = await bot.send_message(USER, "Summaries?", reply_markup=keyboard("sum:1", "sum:2"))
        update = tg.press_button(USER, sent.message_id, "sum:2")
        [got] = await bot.get_updates()
        query = got.callback_query
        assert query is not None and query.id == update["callback_query"]["id"]
        assert (query.data, query.from_user.id, query.message.message_id) == ("sum:2", USER, sent.message_id)
        assert query.chat_instance
        assert await query.answer("Working on it", show_alert=True)
        with pytest.raises(BadRequest, match="(?i)query is too old"):
            await query.answer("twice")
        with pytest.raises(BadRequest, match="(?i)query is too old"):
            await bot.answer_callback_query("123", text="unknown")
        second = tg.press_button(USER, sent.message_id, "sum:1")["callback_query"]["id"]
        with pytest.raises(BadRequest, match="(?i)MESSAGE_TOO_LONG"):
            await bot.answer_callback_query(second, text="x" * 201)
        return await bot.answer_callback_query(second, text="x" * 200)

    assert drive(tg, scenario) is True
    assert [(a.text, a.show_alert, a.user_id) for a in tg.callback_answers] == [
        ("Working on it", True, USER),
        ("x" * 200, False, USER),
    ]
    with pytest.raises(ValueError, match="no button"):
        tg.press_button(USER, 1, "never-offered")
    with pytest.raises(ValueError, match="no bot message"):
        tg.press_button(USER, 77, "x")


def test_send_document_upload_file_id_and_download(tg: TelegramServer) -> None:
    payload = b"%PDF-1.4\r\n\x00\xff\xfe binary \r\n--boundary-lookalike\r\n"

    async def scenario(bot: Bot) -> Any:
        message = await bot.send_document(
            USER, payload, filename="digest.pdf", caption="<i>Daily</i> digest", parse_mode="HTML"
        )
        again = await bot.send_document(USER, message.document.file_id)
        file = await bot.get_file(message.document.file_id)
        data = await file.download_as_bytearray()
        with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
            await bot.send_document(USER, "no-such-file-id")
        return message, again, bytes(data)

    message, again, data = drive(tg, scenario)
    assert data == payload
    document = message.document
    assert (document.file_name, document.mime_type, document.file_size) == (
        "digest.pdf",
        "application/pdf",
        len(payload),
    )
    assert message.caption == "Daily digest" and message.caption_entities[0].type == "italic"
    assert again.document.file_id == document.file_id and again.message_id == message.message_id + 1
    [stored] = [d for d in tg.documents if d.message_id == message.message_id]
    assert (stored.data, stored.file_name, stored.caption) == (payload, "digest.pdf", "Daily digest")
    assert [m.method for m in tg.messages(USER)] == ["sendDocument", "sendDocument"]


def test_other_methods(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> Any:
        assert await bot.send_chat_action(USER, "typing")
        with pytest.raises(BadRequest, match="(?i)wrong parameter action"):
            await bot.send_chat_action(USER, "dancing")
        assert await bot.set_my_commands([("start", "Start"), ("digest", "Today's digest")])
        commands = await bot.get_my_commands()
        with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_INVALID"):
            await bot.set_my_commands([("Bad-Command", "x")])
        sent = await bot.send_message(USER, "temporary")
        assert await bot.delete_message(USER, sent.message_id)
        with pytest.raises(BadRequest, match="Message to delete not found"):
            await bot.delete_message(USER, 999)
        chat = await bot.get_chat(USER)
        return commands, chat

    commands, chat = drive(tg, scenario)
    assert [(c.command, c.description) for c in commands] == [("start", "Start"), ("digest", "Today's digest")]
    assert (chat.id, chat.type, chat.first_name, chat.username) == (USER, "private", "Ada", "ada")
    assert tg.chat_actions == [(USER, "typing")]
    assert [m.deleted for m in tg.messages(USER)] == [True]
    assert tg.messages(USER, include_deleted=False) == []


def test_groups_user_edits_and_hostile_updates(tg: TelegramServer) -> None:
    group = tg.send_user_message(USER, "/digest@hnpal_sandbox_bot", chat_type="supergroup", chat_id=-100123)
    mine = tg.send_user_message(USER, "typo")
    edited = tg.edit_user_message(USER, mine["message"]["message_id"], "fixed")
    hostile = tg.inject_update({"message": {"message_id": 1, "date": 0, "chat": {"id": 7, "type": "private"}}})
    forced = tg.inject_update({"update_id": 100, "callback_query": {"id": "x"}})
    assert group["message"]["chat"] == {"id": -100123, "type": "supergroup", "title": "Test group"}
    assert group["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 25}]
    assert edited["edited_message"]["text"] == "fixed" and "edit_date" in edited["edited_message"]
    assert hostile["update_id"] == 4 and forced["update_id"] == 100
    assert tg.send_user_message(USER, "next")["update_id"] == 101

    async def scenario(bot: Bot) -> Any:
        return await bot.send_message(-100123, "group reply", reply_to_message_id=group["message"]["message_id"])

    raw = api(tg, "getUpdates").json()["result"]  # unparsed: the hostile updates are not valid for PTB
    assert [u["update_id"] for u in raw] == [1, 2, 3, 4, 100, 101]
    assert raw[3] == hostile
    sent = drive(tg, scenario)
    assert sent.chat.type == "supergroup" and sent.reply_to_message.message_id == 1
    assert tg.messages(-100123)[0].reply_to_message_id == 1


def test_wait_for_messages_and_reset(tg: TelegramServer) -> None:
    timer = threading.Timer(0.2, api, args=(tg, "sendMessage"), kwargs={"json": {"chat_id": USER, "text": "hi"}})
    timer.start()
    assert [m.text for m in tg.wait_for_messages(USER, 1, timeout=5)] == ["hi"]
    timer.join()
    with pytest.raises(TimeoutError, match=r"2 bot message\(s\) in chat 42, got 1: \['hi'\]"):
        tg.wait_for_messages(USER, 2, timeout=0.2)
    tg.reset(keep_users=True)
    assert tg.all_messages() == [] and tg.request_log == [] and tg.pending_updates() == 0
    assert tg.user(USER) is not None
    assert api(tg, "sendMessage", json={"chat_id": USER, "text": "again"}).json()["result"]["message_id"] == 1
    tg.reset()
    assert tg.user(USER) is None
    assert api(tg, "sendMessage", json={"chat_id": USER, "text": "gone"}).json()["description"] == (
        "Bad Request: chat not found"
    )


# --------------------------------------------------------------------------------------------
# Flood control
# --------------------------------------------------------------------------------------------


def test_global_limit_answers_429_with_retry_after() -> None:
    with TelegramServer(global_rate=5, per_chat_rate=None) as tg:
        for user in range(1, 8):
            tg.add_user(user)

        async def scenario(bot: Bot) -> float:
            for user in range(1, 6):
                await bot.send_message(user, "news")
            with pytest.raises(RetryAfter) as info:
                await bot.send_message(6, "one too many")
            await bot.get_updates()  # other methods are not limited
            await bot.get_me()
            return seconds(info.value)

        retry_after = drive(tg, scenario)
        assert retry_after == 1
        assert tg.too_many_requests == 1 and tg.too_many_requests_per_chat == {6: 1}
        assert [(t.scope, t.chat_id, t.retry_after) for t in tg.throttled] == [("global", 6, 1)]
        assert len(tg.sends) == 5 and tg.max_sends_in_window(1.0) == 5
        raw = api(tg, "sendMessage", json={"chat_id": 7, "text": "raw"})
        assert raw.status_code == 429 and raw.headers["Retry-After"] == "1"
        assert raw.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }
        assert tg.too_many_requests == 2


def test_per_chat_limit_and_retry_after_is_honoured() -> None:
    with TelegramServer(global_rate=30, per_chat_rate=1) as tg:
        tg.add_user(USER)
        tg.add_user(OTHER)

        async def scenario(bot: Bot) -> float:
            sent = await bot.send_message(USER, "first")
            with pytest.raises(RetryAfter) as info:
                await bot.send_message(USER, "second")
            with pytest.raises(RetryAfter):
                await bot.edit_message_text("edited", USER, sent.message_id)  # edits count too
            await bot.send_message(OTHER, "another chat is fine")
            await asyncio.sleep(seconds(info.value))
            await bot.send_message(USER, "second, later")
            return seconds(info.value)

        assert drive(tg, scenario) == 1
        assert tg.too_many_requests == 2 and tg.too_many_requests_per_chat == {USER: 2}
        assert {t.scope for t in tg.throttled} == {"chat"}
        assert [m.text for m in tg.messages(USER)] == ["first", "second, later"]
        assert tg.max_sends_in_window(1.0, chat_id=USER) == 1


def test_burst_tolerance_and_set_limits() -> None:
    with TelegramServer(global_rate=3, per_chat_rate=None, burst_tolerance=1) as tg:
        for user in range(1, 12):
            tg.add_user(user)
        codes = [api(tg, "sendMessage", json={"chat_id": u, "text": "x"}).status_code for u in range(1, 6)]
        assert codes == [200, 200, 200, 200, 429]
        tg.set_limits(global_rate=1000)  # a paid broadcast
        assert api(tg, "sendMessage", json={"chat_id": 6, "text": "x"}).status_code == 200
        tg.set_limits(global_rate=1, burst_tolerance=0)
        assert api(tg, "sendMessage", json={"chat_id": 7, "text": "x"}).status_code == 429
        tg.set_limits(enforce=False)
        assert api(tg, "sendMessage", json={"chat_id": 8, "text": "x"}).status_code == 200
        assert tg.too_many_requests == 2


def test_groups_get_twenty_messages_a_minute() -> None:
    with TelegramServer(per_chat_rate=None, group_rate=3) as tg:
        tg.send_user_message(USER, "hi all", chat_type="group", chat_id=-5)
        codes = [api(tg, "sendMessage", json={"chat_id": -5, "text": "x"}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert tg.throttled[0].scope == "group" and 55 <= tg.throttled[0].retry_after <= 60


def test_sends_paced_under_the_limits_are_never_throttled() -> None:
    chats = list(range(1, 7))
    with TelegramServer(global_rate=8, per_chat_rate=1) as tg:
        for chat in chats:
            tg.add_user(chat)

        async def scenario(bot: Bot) -> None:
            start = time.monotonic()
            interval = 0.19  # ~5.3 messages/s overall; each chat every 1.14 s
            for n in range(10):
                await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
                await bot.send_message(chats[n % len(chats)], f"paced {n}")

        drive(tg, scenario)
        assert tg.too_many_requests == 0
        assert len(tg.sends) == 10
        assert tg.max_sends_in_window(1.0) <= 8
        assert all(tg.max_sends_in_window(1.0, chat_id=c) == 1 for c in chats)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("error_500", {}, NetworkError),
        ("bad_gateway", {}, NetworkError),
        ("too_many_requests", {"retry_after": 3}, RetryAfter),
        ("drop", {}, NetworkError),
        ("drop", {"mode": "reset"}, NetworkError),
    ],
    ids=lambda v: str(v),
)
def test_faults_surface_as_ptb_exceptions(
    tg: TelegramServer, kind: str, params: dict[str, Any], expected: type[Exception]
) -> None:
    async def scenario(bot: Bot) -> Any:
        tg.set_fault("sendmessage", kind, **params)
        with pytest.raises(expected) as info:
            await bot.send_message(USER, "faulty")
        await bot.send_message(USER, "fine")  # count=1 by default
        return info.value

    exc = drive(tg, scenario)
    if kind == "too_many_requests":
        assert isinstance(exc, RetryAfter) and seconds(exc) == 3
        assert tg.too_many_requests == 0  # only enforced limits are counted
    if kind == "error_500":
        assert "Internal Server Error" in str(exc)
    assert [m.text for m in tg.messages(USER)] == ["fine"]
    status = {"error_500": 500, "bad_gateway": 502, "too_many_requests": 429, "drop": 0}[kind]
    assert tg.request_log[-2:] == [("sendMessage", status), ("sendMessage", 200)]


def test_a_fault_can_let_calls_through_first(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> None:
        tg.set_fault("sendMessage", "error_500", skip=2)
        for text in ("one", "two"):
            await bot.send_message(USER, text)
        with pytest.raises(NetworkError):
            await bot.send_message(USER, "three")
        await bot.send_message(USER, "four")

    drive(tg, scenario)
    assert [m.text for m in tg.messages(USER)] == ["one", "two", "four"]
    with pytest.raises(ValueError, match="skip"):
        tg.set_fault("sendMessage", "error_500", skip=-1)


def test_timeout_fault_and_wildcard_count(tg: TelegramServer) -> None:
    async def scenario(bot: Bot) -> None:
        tg.set_fault("getMe", "timeout", seconds=2)
        with pytest.raises(TimedOut):
            await bot.get_me(read_timeout=0.3)
        tg.set_fault("*", "error_500", count=2)
        for _ in range(2):
            with pytest.raises(NetworkError):
                await bot.get_chat(USER)
        await bot.get_chat(USER)
        tg.set_fault("*", "error_500", count=None)
        with pytest.raises(NetworkError):
            await bot.get_me()
        tg.clear_faults()
        await bot.get_me()

    drive(tg, scenario)
    with pytest.raises(ValueError, match="unknown fault kind"):
        tg.set_fault("getMe", "meltdown")


# --------------------------------------------------------------------------------------------
# A whole PTB Application
# --------------------------------------------------------------------------------------------


def test_a_ptb_application_polls_replies_and_handles_a_button(tg: TelegramServer) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_html("<b>Welcome</b>", reply_markup=keyboard("go"))

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("On it")
        await query.edit_message_text(f"went ({query.data})")

    async def main() -> None:
        app = ApplicationBuilder().token(tg.token).base_url(tg.base_url).base_file_url(tg.base_file_url).build()
        app.add_handler(CommandHandler("start", start))
        app.add_handler(CallbackQueryHandler(pressed))
        loop = asyncio.get_running_loop()
        async with app:
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0, timeout=1)
            tg.send_user_message(USER, "/start")
            [welcome] = await loop.run_in_executor(None, tg.wait_for_messages, USER, 1, 5)
            tg.press_button(USER, welcome.message_id, "go")
            await loop.run_in_executor(None, tg.wait_until, lambda: tg.messages(USER)[0].text == "went (go)", 5)
            await app.updater.stop()
            await app.stop()

    asyncio.run(main())
    [message] = tg.messages(USER)
    assert message.edits[0].text == "went (go)" and message.reply_markup is None
    assert [a.text for a in tg.callback_answers] == ["On it"]
    assert tg.pending_updates() == 0  # PTB confirmed everything it handled when it stopped
    assert ("deleteWebhook", 200) in tg.request_log


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_command_line_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hnpal.sandbox.telegram_api", "--port", "0", "--token", "77:cli", "--user", "42:Ada"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/bot")
        with httpx.Client(timeout=5) as client:
            me = client.get(f"{base_url}77:cli/getMe").json()["result"]
            assert (me["id"], me["username"]) == (77, "hnpal_sandbox_bot")
            sent = client.post(f"{base_url}77:cli/sendMessage", json={"chat_id": 42, "text": "hi"}).json()
            assert sent["result"]["chat"] == {"id": 42, "type": "private", "first_name": "Ada"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
