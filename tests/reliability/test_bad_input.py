"""The bad-input corpus: every case is a row of :data:`CASES` (name, kind, input, expected
recorded outcome), run through the real path for its kind, and the module ends with 0 crashes and 0 stuck
queues.

=========  =====================================================================================
kind       real path
=========  =====================================================================================
hn         the sandbox HN replay server serves the item; :func:`hnpal.ingest.service.fetch_items`
           reads it over HTTP and upserts it into PostgreSQL. Outcome: the skip reason, or the
           stored row's fields.
page       the replay server serves the page; a post row is crawled by real workers of this
           module's own Redis prefix (``crawl,default,llm`` and the ``content`` writer) through
           ``hnpal.crawl.post``. Outcome: the post's final ``crawl_status`` and ``crawl_error``.
telegram   the sandbox Bot API queues the update; the real ``hnpal bot`` stores it and a real worker
           handles it (``tg_stack``). Outcome: the ``telegram_updates`` status (and error), and the
           reply, button answer or silence recorded by the sandbox.
llm        the sandbox OpenAI-compatible server answers (or fails) a memory extraction made by
           :func:`hnpal.memory.service.extract` with the paid provider. Outcome: the extraction's
           status and error, the ``agent_calls`` rows.
settings   the settings loader in a subprocess with one invalid ``HNPAL_*`` value. Outcome: the exit
           code and the one line naming the setting (secrets not echoed).
=========  =====================================================================================

The last test checks that no worker or bot process died, that their logs hold no unexpected exception,
that every update of the corpus is final and that the Redis queues of both prefixes are empty, and prints
``bad-input: cases=N crashes=0 stuck=0 outcomes_ok=N``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from hnpal import jobs
from hnpal.db.session import session_scope
from hnpal.ops.metrics import _PRIORITY_SUFFIXES, QUEUES
from hnpal.sandbox.hn_replay import HNReplayServer, Snapshot
from hnpal.sandbox.llm_api import LLMServer
from hnpal.telegram.callbacks import sign
from tests.conftest import REDIS_PREFIX, REPO, WorkerProcess, _tmp_root, rows
from tests.telegram.conftest import Stack, tg_stack  # noqa: F401  (tg_stack: the fixture)

pytestmark = pytest.mark.slow

ID = "<id>"  # in an hn case's item: the id the replay server serves it under
USER = "<user>"  # in a telegram case: the sandbox user of the case
CHAT = "<chat>"  # ... and their private chat
FINAL = ("processed", "quarantined")
IDLE_HINT = "Send a command, for example /digest."
ONLY_TEXT = "I can read text messages and commands only. Try /help."
NOT_YOURS = "This button is not valid for you."
PRIVATE_ONLY = "HN Pal works in private chats only: open a chat with me and send /start."
SORRY = "Sorry, something went wrong with that request."
STORY = {"id": ID, "type": "story", "by": "pg", "time": 1_718_900_000, "title": "A fine story", "score": 5,
         "descendants": 0, "url": "https://example.com/story"}  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # hn | page | telegram | llm | settings
    input: Any
    expected: Any


def _story(**changes: Any) -> dict[str, Any]:
    item = {**STORY, **changes}
    return {k: v for k, v in item.items() if v is not ...}  # ... drops a field


def _msg(**body: Any) -> dict[str, Any]:
    """A private message from the case's user (``...`` drops a field)."""
    message = {"message_id": 1, "from": USER, "chat": CHAT, "date": 1_718_900_000, "text": "hello", **body}
    return {"message": {k: v for k, v in message.items() if v is not ...}}


def _press(data: Any, **query: Any) -> dict[str, Any]:
    body = {"id": "q1", "from": USER, "message": {"message_id": 1, "chat": CHAT, "date": 1, "text": "x"},
            "chat_instance": "1", "data": data, **query}  # fmt: skip
    return {"callback_query": {k: v for k, v in body.items() if v is not ...}}


CASES: list[Case] = [
    # --- HN items: (item served as JSON, or a fault) -> ("skipped", reason) | ("stored", {column: value})
    Case("hn malformed JSON", "hn", {"fault": "malformed_json", "item": STORY}, ("skipped", "fetch_failed")),
    Case("hn item answers 404", "hn", {"fault": "404", "item": STORY}, ("skipped", "fetch_failed")),
    Case("hn item answers 500 every time", "hn", {"fault": "error", "item": STORY}, ("skipped", "fetch_failed")),
    Case("hn null (unknown id)", "hn", {"item": None}, ("skipped", "null")),
    Case("hn deleted", "hn", {"item": {"id": ID, "type": "story", "deleted": True, "time": 1}}, ("skipped", "deleted")),
    Case("hn dead", "hn", {"item": _story(dead=True)}, ("skipped", "dead")),
    Case(
        "hn a comment, not a post",
        "hn",
        {"item": {"id": ID, "type": "comment", "text": "hi", "time": 1}},
        ("skipped", "not_a_post"),
    ),
    Case("hn unknown type", "hn", {"item": _story(type="banana")}, ("skipped", "not_a_post")),
    Case("hn no title", "hn", {"item": _story(title=...)}, ("skipped", "missing_fields")),
    Case("hn empty title", "hn", {"item": _story(title="")}, ("skipped", "missing_fields")),
    Case("hn blank title", "hn", {"item": _story(title="   \n\t ")}, ("skipped", "invalid")),
    Case("hn no time", "hn", {"item": _story(time=...)}, ("skipped", "missing_fields")),
    Case("hn time as a string", "hn", {"item": _story(time="yesterday")}, ("skipped", "missing_fields")),
    Case("hn time out of range", "hn", {"item": _story(time=10**20)}, ("skipped", "invalid")),
    Case("hn id as a string", "hn", {"item": _story(id="<id>s")}, ("skipped", "missing_fields")),
    Case("hn score not a number", "hn", {"item": _story(score="lots")}, ("skipped", "invalid")),
    Case("hn score over 2**31", "hn", {"item": _story(score=2**31)}, ("skipped", "invalid")),
    Case("hn descendants 1e308", "hn", {"item": _story(descendants=1e308)}, ("skipped", "invalid")),
    Case("hn score as a float", "hn", {"item": _story(score=12.5)}, ("skipped", "invalid")),
    Case("hn id over 2**63", "hn", {"item": _story(id=2**63)}, ("skipped", "invalid")),
    Case("hn negative score", "hn", {"item": _story(score=-50)}, ("stored", {"score": 0})),
    Case("hn negative descendants", "hn", {"item": _story(descendants=-3)}, ("stored", {"comment_count": 0})),
    Case("hn huge title", "hn", {"item": _story(title="T" * 100_000)}, ("stored", {"title_length": 500})),
    Case("hn title with control characters", "hn", {"item": _story(title="a\tb\nc")}, ("stored", {"title": "a b c"})),
    Case("hn title with a NUL", "hn", {"item": _story(title="nul\x00title")}, ("stored", {"title": "nul\ufffdtitle"})),
    Case("hn javascript: url", "hn", {"item": _story(url="javascript:alert(1)")}, ("stored", {"url": None})),
    Case("hn item is a list", "hn", {"item": [1, 2, 3]}, ("skipped", "fetch_failed")),  # the client refuses it
    Case("hn url is a number", "hn", {"item": _story(url=12345)}, ("skipped", "invalid")),
    Case("hn title is a list", "hn", {"item": _story(title=["a", "b"])}, ("skipped", "invalid")),
    Case("hn author is a number", "hn", {"item": _story(by=7)}, ("skipped", "invalid")),
    Case("hn url with a NUL", "hn", {"item": _story(url="https://example.com/a\x00b")}, ("stored", {"url": None})),
    Case("hn author with a NUL", "hn", {"item": _story(by="p\x00g")}, ("stored", {"author": "p\ufffdg"})),
    # --- pages: (path on the replay server) -> (final crawl_status, substring of crawl_error or None)
    Case("page 404", "page", "/hostile/404", ("failed", "HTTP 404")),
    Case("page huge, cut at the limit", "page", "/hostile/huge?size=3000000", ("success", None)),
    Case("page binary, declared", "page", "/hostile/binary?size=50000", ("failed", "content type")),
    Case("page binary served as HTML", "page", "/hostile/binary-lie?size=50000", ("failed", "binary body")),
    Case("page slow (read timeout)", "page", "/hostile/slow?seconds=4", ("failed", "timeout")),
    Case("page redirect loop", "page", "/hostile/redirect-loop", ("failed", "redirect loop")),
    Case("page redirect ping-pong", "page", "/hostile/redirect-pingpong", ("failed", "redirect")),
    Case(
        "page redirect to a private address",
        "page",
        "/hostile/redirect-internal",
        ("failed", "refused private address"),
    ),
    Case("page redirect to cloud metadata", "page", "/hostile/redirect-private", ("failed", "refused link-local")),
    Case("page redirect to file://", "page", "/hostile/redirect-file", ("failed", "scheme 'file'")),
    Case("page bad encoding (latin-1 sold as UTF-8)", "page", "/hostile/latin1", ("success", None)),
    Case("page without a charset", "page", "/hostile/no-charset", ("success", None)),
    Case("page empty", "page", "/hostile/empty", ("failed", "no article text")),
    Case("page script-only (SPA)", "page", "/hostile/spa", ("failed", "no article text")),
    Case("page wrong content type", "page", "/bad/image.png", ("failed", "content type")),
    Case("page connection dropped", "page", "/hostile/drop", ("failed", "connection error")),
    # --- Telegram updates -> (status, error substring or None, reply text start / answer / None for silence)
    Case(
        "tg edited message",
        "telegram",
        {"edited_message": {"message_id": 1, "from": USER, "chat": CHAT, "date": 1, "edit_date": 2, "text": "/help"}},
        ("processed", None, None),
    ),
    Case("tg 20,000-character text", "telegram", _msg(text="x" * 20_000), ("processed", None, IDLE_HINT)),
    Case(
        "tg 20,000-character command",
        "telegram",
        _msg(text="/" + "a" * 19_999),
        ("processed", None, "I don't know /" + "a" * 40),
    ),
    Case("tg NUL characters", "telegram", _msg(text="\x00\x00/help\x00"), ("processed", None, IDLE_HINT)),
    Case("tg only a slash", "telegram", _msg(text="/"), ("processed", None, "I don't know /.")),
    Case("tg text is a number", "telegram", _msg(text=12345), ("processed", None, ONLY_TEXT)),
    Case(
        "tg photo with a command caption",
        "telegram",
        _msg(
            text=..., photo=[{"file_id": "p", "file_unique_id": "u", "width": 1, "height": 1}], caption="/deletemydata"
        ),
        ("processed", None, ONLY_TEXT),
    ),
    Case(
        "tg message from a bot",
        "telegram",
        _msg(**{"from": {"id": 424242, "is_bot": True, "first_name": "B"}}),
        ("processed", None, None),
    ),
    Case("tg message without a sender", "telegram", _msg(**{"from": ...}), ("processed", None, None)),
    Case(
        "tg group chat command",
        "telegram",
        _msg(text="/digest", chat={"id": -100123, "type": "group"}),
        ("processed", None, PRIVATE_ONLY),
    ),
    Case(
        "tg channel chat, plain text",
        "telegram",
        _msg(chat={"id": -100124, "type": "channel"}),
        ("processed", None, None),
    ),
    Case(
        "tg message without a chat", "telegram", _msg(text="/help", chat=...), ("quarantined", "MalformedUpdate", None)
    ),
    Case(
        "tg sender id out of range",
        "telegram",
        _msg(**{"from": {"id": 10**30, "first_name": "Big"}}),
        ("quarantined", "", SORRY),
    ),
    Case("tg sender is a string", "telegram", _msg(**{"from": "mallory"}), ("quarantined", "", SORRY)),
    Case("tg message is a string", "telegram", {"message": "just a string"}, ("quarantined", "MalformedUpdate", None)),
    Case("tg forged callback data", "telegram", _press("up:1~AAAAAAAAAAAA"), ("processed", None, NOT_YOURS)),
    Case(
        "tg callback signed for someone else", "telegram", _press(sign(1, "st", "time")), ("processed", None, NOT_YOURS)
    ),
    Case(
        "tg callback data with NUL and non-ASCII", "telegram", _press("st:time~\x00é"), ("processed", None, NOT_YOURS)
    ),
    Case("tg callback data not a string", "telegram", _press(12345), ("processed", None, NOT_YOURS)),
    Case("tg callback without data", "telegram", _press(...), ("processed", None, NOT_YOURS)),
    Case("tg callback without an id", "telegram", _press("st:time~x", id=...), ("processed", None, None)),
    Case(
        "tg replayed expired confirmation",
        "telegram",
        _press(("sign", "pdd", "yes", "<old>")),
        ("processed", None, "Expired"),
    ),
    Case(
        "tg chat member update from a string",
        "telegram",
        {
            "my_chat_member": {
                "chat": CHAT,
                "from": "x",
                "date": 1,
                "old_chat_member": {},
                "new_chat_member": {"status": "kicked"},
            }
        },
        ("quarantined", "", None),
    ),
    Case(
        "tg unknown update kind",
        "telegram",
        {"poll": {"id": "1", "question": "?", "options": []}},
        ("processed", None, None),
    ),
    Case("tg empty update", "telegram", {}, ("processed", None, None)),
    # --- LLM answers: (responder content or a fault) -> (extraction status, error substring, agent_calls n)
    Case(
        "llm malformed JSON",
        "llm",
        {"answer": '{"items": [{"type": "fact", "content": "unterm'},
        ("malformed", "JSON", 2),
    ),
    Case("llm wrong schema", "llm", {"answer": {"memories": []}}, ("malformed", "items", 1)),
    Case("llm empty answer", "llm", {"answer": ""}, ("malformed", "", 2)),
    Case("llm refusal in prose", "llm", {"answer": "I'm sorry, but I can't help with that."}, ("malformed", "", 2)),
    Case(
        "llm items of the wrong types",
        "llm",
        {"answer": {"items": ["a string", {"type": "hobby", "content": 1, "confidence": "high"}]}},
        ("done", None, 1),
    ),
    Case("llm 500", "llm", {"fault": ("error", {"status": 500})}, ("failed", "500", 2)),
    Case("llm 429", "llm", {"fault": ("rate_limit", {"seconds": 0})}, ("failed", "429", 2)),
    Case("llm 400 bad request", "llm", {"fault": ("bad_request", {})}, ("failed", "", 1)),
    Case("llm 401 auth", "llm", {"fault": ("auth", {})}, ("failed", "", 1)),
    Case("llm context length", "llm", {"fault": ("context_length", {})}, ("failed", "", 1)),
    Case("llm empty choices", "llm", {"fault": ("empty_choices", {})}, ("malformed", "", 2)),
    Case("llm broken body", "llm", {"fault": ("malformed", {})}, ("malformed", "", 2)),
    Case("llm connection dropped", "llm", {"fault": ("drop", {})}, ("failed", "", 2)),
    # --- settings: (one HNPAL_* variable) -> (exit code, text in the one-line error, text never shown)
    Case("settings log level", "settings", {"HNPAL_LOG_LEVEL": "LOUD"}, (1, "HNPAL_LOG_LEVEL", None)),
    Case("settings negative timeout", "settings", {"HNPAL_OPENAI_TIMEOUT": "-3"}, (1, "HNPAL_OPENAI_TIMEOUT", None)),
    Case("settings admin ids", "settings", {"HNPAL_ADMIN_IDS": "1,two"}, (1, "HNPAL_ADMIN_IDS", None)),
    Case(
        "settings key prefix with a space",
        "settings",
        {"HNPAL_REDIS_KEY_PREFIX": "bad prefix"},
        (1, "HNPAL_REDIS_KEY_PREFIX", None),
    ),
    Case(
        "settings database URL scheme",
        "settings",
        {"HNPAL_DATABASE_URL": "mysql://admin:hunter2@db/x"},
        (1, "HNPAL_DATABASE_URL", "hunter2"),
    ),
    Case("settings prices not JSON", "settings", {"HNPAL_LLM_PRICES": "{not json"}, (1, "HNPAL_LLM_PRICES", None)),
    Case(
        "settings visibility below countdown",
        "settings",
        {"HNPAL_BROKER_VISIBILITY_TIMEOUT": "60"},
        (1, "HNPAL_BROKER_VISIBILITY_TIMEOUT", None),
    ),
    Case("settings telegram mode", "settings", {"HNPAL_TELEGRAM_MODE": "pigeon"}, (1, "HNPAL_TELEGRAM_MODE", None)),
    Case(
        "settings cache size not a number",
        "settings",
        {"HNPAL_CONTENT_BLOCK_CACHE_MB": "lots"},
        (1, "HNPAL_CONTENT_BLOCK_CACHE_MB", None),
    ),
    Case(
        "settings flower password leak",
        "settings",
        {"HNPAL_FLOWER_BASIC_AUTH": "x", "HNPAL_FLOWER_PORT": "99999"},
        (1, "HNPAL_FLOWER_PORT", None),
    ),
]
KINDS = ("hn", "page", "telegram", "llm", "settings")
RESULTS: dict[str, bool] = {}  # case name -> outcome as expected
UPDATES: list[int] = []  # update ids the telegram cases queued
_hn_ids = itertools.count(950_000_001)
_tg_users = itertools.count(6_950_001)


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 50 and len({c.name for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == set(KINDS)
    assert all(sum(c.kind == kind for c in CASES) >= 8 for kind in KINDS)


# --- helpers ----------------------------------------------------------------------------------------


def _substitute(value: Any, mapping: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for key, new in mapping.items():
            if value == key:
                return new
            if key in value and isinstance(new, int | str):
                value = value.replace(key, str(new))
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    return value


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.1)


# --- the world: replay server, pipeline workers of a prefix of their own, sandbox LLM -----------------


@dataclass
class World:
    replay: HNReplayServer
    env: dict[str, str]
    workers: list[WorkerProcess]
    prefix: str

    def send_task(self, name: str, *args: Any) -> None:
        from celery import Celery

        from hnpal.runtime import broker_url

        client = Celery("hnpal-bad-input", broker=broker_url(), set_as_current=False)
        client.conf.broker_transport_options = {"global_keyprefix": self.prefix}
        client.conf.task_routes = {"hnpal.crawl.*": {"queue": "crawl"}}
        try:
            client.send_task(name, args=list(args), queue="crawl")
        finally:
            client.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    replay = HNReplayServer(Snapshot.empty()).start()
    replay.add_page("/bad/image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, content_type="image/png")
    prefix = f"{REDIS_PREFIX}bad-{uuid.uuid4().hex[:6]}:"
    env = {
        "HNPAL_REDIS_KEY_PREFIX": prefix,
        "HNPAL_HN_API_BASE_URL": replay.api_url,
        "HNPAL_CRAWL_ALLOW_HOSTS": "127.0.0.1",
        "HNPAL_CONTENT_PATH": str(_tmp_root / f"bad-input-{uuid.uuid4().hex[:6]}.rocksdb"),
        "HNPAL_CRAWL_READ_TIMEOUT": "1",
        "HNPAL_CRAWL_TOTAL_TIMEOUT": "3",
        "HNPAL_CRAWL_MAX_BYTES": str(1024 * 1024),
        "HNPAL_CRAWL_RETRY_BACKOFF": "0.2",
    }
    workers = [
        WorkerProcess("content", env=env, concurrency=1),
        WorkerProcess("crawl,default,llm", env=env, concurrency=2),
    ]
    try:
        for worker in workers:
            worker.wait_ready()
        yield World(replay, env, workers, prefix)
    finally:
        for worker in workers:
            worker.stop()
        replay.stop()


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LLMServer]:
    with LLMServer(model="sandbox-model") as server:
        yield server


@pytest.fixture(scope="module")
def tg(tg_stack: Stack) -> Stack:  # noqa: F811
    return tg_stack


# --- runners ----------------------------------------------------------------------------------------


def run_hn(case: Case, world: World, settings_env) -> None:  # type: ignore[no-untyped-def]
    from hnpal.ingest import service

    settings_env(hn_api_base_url=world.replay.api_url, hn_concurrency="2")
    hn_id = next(_hn_ids)
    item = _substitute(case.input["item"], {ID: hn_id})
    if item is not None:
        with world.replay._lock:  # served as given, even the shapes add_item refuses (a list, a bad type)
            world.replay._items[hn_id] = item
            world.replay._missing.discard(hn_id)
            world.replay._lists = None
    fault = case.input.get("fault")
    if fault:
        world.replay.set_fault(f"/v0/item/{hn_id}", fault)
    try:
        with jobs.recording(), session_scope() as session:
            report = service.fetch_items(session=session, hn_ids=[hn_id])
    finally:
        world.replay.clear_faults()
    stored = rows("SELECT * FROM posts WHERE hn_id = :h", h=hn_id)
    outcome, detail = case.expected
    assert report.requested == 1
    if outcome == "skipped":
        assert dict(report.skipped) == {detail: 1} and stored == [], (report.as_dict(), stored)
        return
    assert report.inserted == 1 and len(stored) == 1, report.as_dict()
    (row,) = stored
    for column, value in detail.items():
        actual = len(row["title"]) if column == "title_length" else row[column]
        assert actual == value, (column, actual)


def run_page(case: Case, world: World) -> None:
    hn_id = world.replay.add_story(title=f"bad input {case.name}", url=world.replay.url(case.input))
    with session_scope() as session:
        post_id = session.execute(
            text(
                "INSERT INTO posts (hn_id, type, title, url, crawl_status, crawl_enqueued_at) "
                "VALUES (:h, 'story', :t, :u, 'queued', now()) RETURNING id"
            ),
            {"h": hn_id, "t": f"bad input {case.name}", "u": world.replay.url(case.input)},
        ).scalar_one()
    world.send_task("hnpal.crawl.post", post_id)

    def final() -> bool:
        status = rows("SELECT crawl_status FROM posts WHERE id = :i", i=post_id)[0]["crawl_status"]
        return status in ("success", "failed", "skipped", "reused")

    _wait(final, 60, f"post {post_id} ({case.input}) to reach a final crawl status")
    (post,) = rows("SELECT crawl_status, crawl_error, crawl_retry_count, has_text FROM posts WHERE id = :i", i=post_id)
    status, error = case.expected
    assert post["crawl_status"] == status, post
    if error is None:
        assert post["crawl_error"] is None and post["has_text"], post
    else:
        assert error in (post["crawl_error"] or ""), post


def run_telegram(case: Case, tg: Stack) -> None:
    uid = next(_tg_users)
    tg.server.add_user(uid, first_name="Bad")
    user = tg.server.user(uid)
    chat = {"id": uid, "type": "private", "first_name": "Bad"}
    update = _substitute(case.input, {USER: user, CHAT: chat})
    if "callback_query" in update and isinstance(update["callback_query"].get("data"), tuple):
        _, action, *args = update["callback_query"]["data"]  # signed for this user, an hour old
        update["callback_query"]["data"] = sign(uid, action, *[int(time.time()) - 3600 if a == "<old>" else a
                                                               for a in args])  # fmt: skip
    status, error, reply = case.expected
    chat_of = (update.get("message") or update.get("my_chat_member") or {}) if isinstance(update, dict) else {}
    target = chat_of["chat"]["id"] if isinstance(chat_of, dict) and isinstance(chat_of.get("chat"), dict) else uid
    if target < 0 and chat_of["chat"]["type"] in ("group", "supergroup"):
        tg.server.add_group(target, chat_type=chat_of["chat"]["type"])  # the bot is a member of the group
    if "callback_query" in update:  # pressed under a real bot message, with a query id Telegram issued
        from hnpal.sandbox.telegram_api.records import CallbackQuery

        (shown,) = tg.send(uid, "/help")
        query = update["callback_query"]
        with tg.server._cond:
            query["message"] = tg.server._sent_object(tg.server._sent[(uid, shown.message_id)])
            if "id" in query:
                query["id"] = f"bad-{uuid.uuid4().hex[:12]}"
                tg.server._callback_queries[query["id"]] = CallbackQuery(query["id"], uid, time.monotonic())
    before = len(tg.server.all_messages())
    answers_before = len(tg.server.callback_answers)
    if set(update) - {"update_id"} <= {"message", "edited_message", "callback_query", "my_chat_member"} and update:
        sent = tg.server.inject_update(update)  # through the real bot process
        update_id = sent["update_id"]
    else:  # kinds the bot does not ask Telegram for: stored as the bot would store them (a replay)
        from hnpal.telegram.bot import store_updates

        update_id = tg.server.first_update_id - 1000 - len(UPDATES)
        assert store_updates([{**update, "update_id": update_id}]).new == [update_id]
        tg.enqueue_handle(update_id)
    UPDATES.append(update_id)
    row = tg.wait_handled(update_id)
    assert row["status"] == status, (row["status"], row["error"])
    if error is None:
        assert row["error"] is None, row["error"]
    else:
        assert row["error"] and error in row["error"], row["error"]
    if reply is None:
        time.sleep(0.3)  # an unwanted reply would be sent before the row is final; a moment for the sandbox
        assert len(tg.server.all_messages()) == before, [m.text[:60] for m in tg.server.all_messages()[before:]]
        assert len(tg.server.callback_answers) == answers_before
    elif "callback_query" in update:
        _wait(lambda: len(tg.server.callback_answers) > answers_before, 10, "the button answer")
        assert tg.server.callback_answers[-1].text == reply
    else:
        _wait(lambda: len(tg.server.all_messages()) > before, 10, "the reply")
        assert tg.server.messages(target)[-1].text.startswith(reply), tg.server.messages(target)[-1].text[:200]


def _forget_provider_health() -> None:
    from hnpal.db.session import session_scope
    from hnpal.llm import health
    from hnpal.llm.models import ProviderHealth

    with session_scope() as session:
        session.query(ProviderHealth).delete()
    health.forget()


def run_llm(case: Case, llm_server: LLMServer, settings_env) -> None:  # type: ignore[no-untyped-def]
    from hnpal.memory import service
    from tests.memory.conftest import Factory

    settings_env(openai_api_key="k", openai_base_url=llm_server.base_url, openai_model="sandbox-model",
                 llm_prices=json.dumps({"sandbox-model": {"input": "1", "output": "2"}}), llm_retry_backoff="0.01",
                 llm_attempts="2", openai_timeout="2")  # fmt: skip
    llm_server.reset()
    _forget_provider_health()  # each case starts with a key nobody refused yet (the 401 case marks it down)
    if "answer" in case.input:
        answer = case.input["answer"]
        llm_server.set_responder(lambda body: answer)
    else:
        kind, params = case.input["fault"]
        llm_server.set_fault(kind, **params)
    make = Factory()
    user = make.user()
    talk = [("user", "I run PostgreSQL at work and want to learn Rust."), ("assistant", "The post covers both.")]
    cid = make.conversation(user, make.post(f"LLM case {case.name}"), talk)
    try:
        outcome = service.extract(conversation_id=cid)
    finally:
        llm_server.reset()
    status, error, calls = case.expected
    assert outcome.status == status, (outcome.status, outcome.detail)
    if error is not None:
        assert error in outcome.detail.get("error", ""), outcome.detail
    recorded = rows("SELECT success FROM agent_calls WHERE conversation_id = :c ORDER BY id", c=cid)
    assert len(recorded) == calls, recorded
    notes = rows("SELECT type FROM memory WHERE user_id = :u", u=user["id"])
    assert "discussion_note" in {n["type"] for n in notes}  # whatever the model did, the talk is noted


def run_settings(case: Case) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HNPAL_")}
    env.update(case.input)
    done = subprocess.run(
        [sys.executable, "-c", "from config.settings import load_settings; load_settings()"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    code, names, never = case.expected
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and lines[0].startswith("invalid setting ") and names in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    if never is not None:
        assert never not in done.stderr


# --- the corpus -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, request: pytest.FixtureRequest) -> None:
    RESULTS[case.name] = False
    if case.kind == "hn":
        run_hn(case, request.getfixturevalue("world"), request.getfixturevalue("settings_env"))
    elif case.kind == "page":
        run_page(case, request.getfixturevalue("world"))
    elif case.kind == "telegram":
        run_telegram(case, request.getfixturevalue("tg"))
    elif case.kind == "llm":
        run_llm(case, request.getfixturevalue("llm_server"), request.getfixturevalue("settings_env"))
    else:
        run_settings(case)
    RESULTS[case.name] = True


def _queue_lengths(prefix: str) -> dict[str, int]:
    import redis

    from config.settings import get_settings

    client = redis.Redis.from_url(str(get_settings().redis_url))
    return {q: sum(client.llen(f"{prefix}{q}{s}") for s in _PRIORITY_SUFFIXES) for q in QUEUES}


def test_no_crash_and_no_stuck_queue(world: World, tg: Stack) -> None:
    crashes = 0
    logs = [(f"worker {w.proc.args[6]}", w) for w in world.workers] + [("telegram worker", tg.worker)]
    for name, worker in logs:
        if worker.proc.poll() is not None:
            crashes += 1
            print(f"{name} died with {worker.proc.returncode}")
        if " raised unexpected" in worker.log():
            crashes += 1
            print(f"{name} logged an unexpected exception")
    if tg.bot is None or tg.bot.proc.poll() is not None:
        crashes += 1
        print("the bot process died")
    elif "Traceback" in tg.bot.log():
        crashes += 1
        print("the bot process logged a traceback")

    def drained() -> bool:
        return not any(_queue_lengths(world.prefix).values()) and not any(
            _queue_lengths(tg.env["HNPAL_REDIS_KEY_PREFIX"]).values()
        )

    try:
        _wait(drained, 60, "the queues to drain")
    except AssertionError:
        pass
    stuck = sum(_queue_lengths(world.prefix).values()) + sum(_queue_lengths(tg.env["HNPAL_REDIS_KEY_PREFIX"]).values())
    if UPDATES:
        final = rows(
            "SELECT count(*) AS n FROM telegram_updates WHERE update_id = ANY(:u) AND status = ANY(:f)",
            u=UPDATES,
            f=list(FINAL),
        )[0]["n"]
        stuck += len(UPDATES) - final
    unfinished = rows(
        "SELECT count(*) AS n FROM posts WHERE title LIKE 'bad input %' AND crawl_status NOT IN "
        "('success', 'failed', 'skipped', 'reused')"
    )[0]["n"]
    stuck += unfinished
    ok = sum(RESULTS.values())
    print(f"bad-input: cases={len(CASES)} crashes={crashes} stuck={stuck} outcomes_ok={ok}")
    assert crashes == 0 and stuck == 0
    assert ok == len(CASES), sorted(name for name, good in RESULTS.items() if not good) or "cases not run"
