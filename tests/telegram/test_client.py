"""The synchronous Bot API client against the sandbox Telegram server over loopback."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from config.settings import load_settings
from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.telegram.client import (
    BadRequest,
    BotAPI,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    close_clients,
    is_not_modified,
)

USER = 42
OTHER = 43
KEYBOARD = {"inline_keyboard": [[{"text": "More", "callback_data": "more:1"}]]}


@pytest.fixture
def tg() -> Iterator[TelegramServer]:
    with TelegramServer(enforce_limits=False) as server:
        server.add_user(USER, first_name="Ada")
        server.add_user(OTHER, first_name="Bob")
        yield server
    close_clients()


@pytest.fixture
def api(tg: TelegramServer) -> BotAPI:
    return BotAPI(token=tg.token, base_url=tg.base_url, timeout=5.0)


def assert_no_token(exc: BaseException, token: str) -> None:
    secret = token.split(":", 1)[1]
    for text in (str(exc), repr(exc), exc.description if isinstance(exc, TelegramError) else ""):
        assert token not in text and secret not in text


def test_get_me(api: BotAPI, tg: TelegramServer) -> None:
    me = api.get_me()
    assert me["is_bot"] is True and me["username"] == tg.username


def test_send_message_returns_the_message(api: BotAPI, tg: TelegramServer) -> None:
    message = api.send_message(USER, "<b>Hello</b> &amp; welcome", reply_markup=KEYBOARD)
    assert isinstance(message["message_id"], int)
    assert message["chat"]["id"] == USER
    assert message["text"] == "Hello & welcome"
    assert message["entities"][0]["type"] == "bold"
    assert message["reply_markup"] == KEYBOARD
    sent = tg.messages(USER)[-1]
    assert sent.message_id == message["message_id"]
    assert sent.reply_markup == KEYBOARD  # sent as a JSON object, not a string
    assert sent.link_preview_options == {"is_disabled": True}


def test_plain_text_without_parse_mode(api: BotAPI, tg: TelegramServer) -> None:
    message = api.send_message(USER, "a < b & c", parse_mode=None, disable_web_page_preview=False)
    assert message["text"] == "a < b & c"
    assert tg.messages(USER)[-1].link_preview_options is None


def test_invalid_html_is_bad_request(api: BotAPI, tg: TelegramServer) -> None:
    with pytest.raises(BadRequest) as caught:
        api.send_message(USER, "<b>unclosed")
    exc = caught.value
    assert exc.status == 400 and exc.method == "sendMessage"
    assert "can't parse entities" in exc.description
    assert exc.transient is False and exc.retry_after is None
    assert not is_not_modified(exc)
    assert_no_token(exc, tg.token)


def test_too_long_message_is_bad_request(api: BotAPI) -> None:
    with pytest.raises(BadRequest, match="message is too long"):
        api.send_message(USER, "x" * 4097)


def test_unknown_chat_is_bad_request(api: BotAPI) -> None:
    with pytest.raises(BadRequest, match="chat not found") as caught:
        api.send_message(999_999, "hi")
    assert not caught.value.transient


@pytest.mark.parametrize(
    ("action", "text"), [("block", "bot was blocked by the user"), ("deactivate", "user is deactivated")]
)
def test_blocked_or_deleted_user_is_forbidden(api: BotAPI, tg: TelegramServer, action: str, text: str) -> None:
    getattr(tg, action)(OTHER)
    with pytest.raises(Forbidden) as caught:
        api.send_message(OTHER, "hi")
    exc = caught.value
    assert exc.status == 403 and text in exc.description and exc.transient is False
    assert_no_token(exc, tg.token)
    api.send_message(USER, "others still get messages")


def test_fault_429_is_retry_after(api: BotAPI, tg: TelegramServer) -> None:
    tg.set_fault("sendMessage", "too_many_requests", retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        api.send_message(USER, "hi")
    exc = caught.value
    assert exc.status == 429 and exc.retry_after == 7.0 and exc.transient is True
    assert exc.parameters == {"retry_after": 7}
    assert_no_token(exc, tg.token)
    assert api.send_message(USER, "hi")["text"] == "hi"  # the fault was for one call


def test_real_flood_control_is_retry_after(api: BotAPI, tg: TelegramServer) -> None:
    tg.set_limits(per_chat_rate=1, enforce=True)
    api.send_message(USER, "one")
    with pytest.raises(RetryAfter) as caught:
        api.send_message(USER, "two")
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert tg.too_many_requests == 1


@pytest.mark.parametrize("kind", ["error_500", "bad_gateway"])
def test_server_errors_are_transient_network_errors(api: BotAPI, tg: TelegramServer, kind: str) -> None:
    tg.set_fault("sendMessage", kind)
    with pytest.raises(NetworkError) as caught:
        api.send_message(USER, "hi")
    exc = caught.value
    assert exc.status in (500, 502) and exc.transient is True
    assert_no_token(exc, tg.token)


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_dropped_connection_is_network_error(api: BotAPI, tg: TelegramServer, mode: str) -> None:
    api.get_me()  # a kept-alive connection exists
    tg.set_fault("sendMessage", "drop", mode=mode)
    with pytest.raises(NetworkError) as caught:
        api.send_message(USER, "hi")
    exc = caught.value
    assert exc.status is None and exc.transient is True
    assert_no_token(exc, tg.token)
    assert api.send_message(USER, "after the drop")["text"] == "after the drop"


def test_timeout_is_network_error(tg: TelegramServer) -> None:
    api = BotAPI(token=tg.token, base_url=tg.base_url, timeout=0.3)
    tg.set_fault("sendMessage", "timeout", seconds=3)
    with pytest.raises(NetworkError, match="timed out") as caught:
        api.send_message(USER, "hi")
    assert caught.value.transient
    assert_no_token(caught.value, tg.token)


def test_connection_refused_is_network_error() -> None:
    server = TelegramServer()
    base_url, token = server.base_url, server.token
    server.stop()  # bound, never served, now closed: nothing listens
    api = BotAPI(token=token, base_url=base_url, timeout=2.0)
    with pytest.raises(NetworkError) as caught:
        api.get_me()
    assert caught.value.transient
    assert_no_token(caught.value, token)


def test_wrong_token_is_a_permanent_error(tg: TelegramServer) -> None:
    api = BotAPI(token="999:wrong-secret", base_url=tg.base_url)
    with pytest.raises(TelegramError) as caught:
        api.get_me()
    exc = caught.value
    assert type(exc) is TelegramError and exc.status == 401 and not exc.transient
    assert_no_token(exc, "999:wrong-secret")


def test_edits_and_not_modified(api: BotAPI, tg: TelegramServer) -> None:
    message = api.send_message(USER, "<i>draft</i>", reply_markup=KEYBOARD)
    edited = api.edit_message_text(USER, message["message_id"], "<i>final</i>", reply_markup=KEYBOARD)
    assert edited["text"] == "final" and edited["reply_markup"] == KEYBOARD
    with pytest.raises(BadRequest) as caught:
        api.edit_message_text(USER, message["message_id"], "<i>final</i>", reply_markup=KEYBOARD)
    assert is_not_modified(caught.value)
    assert not is_not_modified(ValueError("message is not modified"))
    api.edit_message_reply_markup(USER, message["message_id"], None)
    assert tg.message(USER, message["message_id"]).reply_markup is None
    with pytest.raises(BadRequest, match="message to edit not found"):
        api.edit_message_reply_markup(USER, 9999, KEYBOARD)


def test_answer_callback_query(api: BotAPI, tg: TelegramServer) -> None:
    message = api.send_message(USER, "pick", reply_markup=KEYBOARD)
    update = tg.press_button(USER, message["message_id"], "more:1")
    query_id = update["callback_query"]["id"]
    assert api.answer_callback_query(query_id, "Loading…", show_alert=True) is True
    answer = tg.callback_answers[-1]
    assert answer.text == "Loading…" and answer.show_alert is True
    with pytest.raises(BadRequest, match="query is too old"):
        api.answer_callback_query(query_id)


def test_send_document(api: BotAPI, tg: TelegramServer) -> None:
    data = b"# Digest\n\n" + "é".encode() * 1000
    message = api.send_document(USER, "digest.md", data, caption="Your digest")
    assert message["document"]["file_name"] == "digest.md"
    assert message["document"]["file_size"] == len(data)
    assert message["caption"] == "Your digest"
    stored = tg.documents[-1]
    assert stored.data == data and stored.chat_id == USER
    with pytest.raises(Forbidden):
        tg.block(USER)
        api.send_document(USER, "x.txt", b"x")


def test_call_leaves_out_none_values(api: BotAPI, tg: TelegramServer) -> None:
    api.call("sendMessage", {"chat_id": USER, "text": "raw", "parse_mode": None})
    assert "parse_mode" not in tg.requests[-1]["params"]


def test_token_never_logged(api: BotAPI, tg: TelegramServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.send_message(USER, "hi")
    tg.set_fault("sendMessage", "error_500")
    with pytest.raises(NetworkError):
        api.send_message(USER, "hi")
    logged = ("httpx", "urllib3.connectionpool", "hnpal.telegram.client")  # each request, at DEBUG
    assert any("sendMessage" in r.getMessage() for r in caplog.records if r.name in logged)
    secret = tg.token.split(":", 1)[1]
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in repr(api)


def test_many_threads_share_one_client(api: BotAPI, tg: TelegramServer) -> None:
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            api.send_message(USER if i % 2 else OTHER, f"message {i}")
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(tg.messages(USER)) + len(tg.messages(OTHER)) == 40
    assert BotAPI(token=tg.token, base_url=tg.base_url)._http is api._http


def test_from_settings(tg: TelegramServer) -> None:
    settings = load_settings(telegram_token=tg.token, telegram_base_url=tg.base_url, telegram_timeout=3)
    api = BotAPI.from_settings(settings)
    assert api is BotAPI.from_settings(settings)
    assert api.timeout == 3 and api.get_me()["id"] == tg.bot_id
    with pytest.raises(RuntimeError, match="HNPAL_TELEGRAM_TOKEN"):
        BotAPI.from_settings(load_settings(telegram_token=None))


def test_json_calls_never_build_the_upload_client(api: BotAPI, tg: TelegramServer) -> None:
    """Senders only make JSON calls: the httpx client (imports and TLS setup) is built for an upload."""
    api.send_message(USER, "hello")
    api.edit_message_text(USER, api.send_message(USER, "one")["message_id"], "two")
    assert api._client is None
    api.send_document(USER, "digest.md", b"# Digest\n")
    assert api._client is not None and not api._client.is_closed
    assert tg.messages(USER)[-1].document is not None


def test_sender_warm_up_loads_the_limiter_scripts(tg: TelegramServer, redis_client, key_prefix: str) -> None:
    from hnpal.deliveries import sender
    from hnpal.runtime import redis_url
    from hnpal.telegram.ratelimit import SendLimiter, clear_cache

    settings = load_settings(telegram_token=tg.token, telegram_base_url=tg.base_url, redis_key_prefix=key_prefix)
    clear_cache()
    limiter = SendLimiter.from_settings(settings)
    shas = [s.sha for s in (limiter._reserve_script, limiter._penalize_script, limiter._reserve_many_script)]
    client = redis_client.from_url(redis_url(settings))
    client.script_flush()  # harmless for others: a script missing at call time is loaded then
    assert client.script_exists(*shas) == [False, False, False]
    sender.warm_up(settings)
    assert client.script_exists(*shas) == [True, True, True]
    assert BotAPI.from_settings(settings)._client is None  # made, and without the upload client
    clear_cache()
