"""A running stack for discussion tests: the Telegram stack of ``tests/telegram`` (sandbox Bot API, the
real ``hnpal bot`` process, a real worker) with the worker also consuming the ``llm`` queue, the sandbox
OpenAI-compatible server as the model (HNPAL_OPENAI_BASE_URL / HNPAL_OPENAI_API_KEY point at it), and a
content store of the module's own that the test process writes as the content worker would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from hnpal.sandbox.llm_api import LLMServer
from hnpal.sandbox.telegram_api import TelegramServer
from tests.conftest import REDIS_PREFIX, WorkerProcess, _tmp_root
from tests.telegram import conftest as tg_conftest
from tests.telegram.conftest import Stack, _first_update_id
from tests.telegram.conftest import pytest_runtest_makereport as pytest_runtest_makereport  # logs on failure

LLM_KEY = "sk-sandbox-discussions"


class DiscussionStack(Stack):
    """:class:`Stack` plus the sandbox LLM and the content store writer."""

    def __init__(self, server: TelegramServer, env: dict[str, str], worker: WorkerProcess, llm: LLMServer, store):  # type: ignore[no-untyped-def]
        super().__init__(server, env, worker)
        self.llm = llm
        self.store = store

    def put_content(self, hn_id: int, *, markdown: str | None = None, comments: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
        """Store a post's article and thread as the content worker does, and flip the post's flags."""
        from sqlalchemy import text

        from hnpal.db.session import session_scope
        from hnpal.ingest.comments import thread_document

        kinds: dict[str, Any] = {}
        if markdown is not None:
            kinds["markdown"] = markdown
            kinds["text"] = markdown
        if comments is not None:
            kinds["comments"] = thread_document(hn_id, comments, len(comments))
        self.store.put(hn_id, **kinds)
        self.store.flush()
        with session_scope() as session:
            session.execute(
                text(
                    "UPDATE posts SET has_markdown = :md, has_text = :md, comments_fetched_at = :cf, "
                    "crawl_status = 'success', is_crawl_success = true WHERE hn_id = :h"
                ),
                {"md": markdown is not None, "cf": datetime.now(UTC) if comments is not None else None, "h": hn_id},
            )


@pytest.fixture(scope="module")
def ds_stack() -> Iterator[DiscussionStack]:
    from config.settings import reset_settings_cache
    from hnpal.content.store import ContentStore

    server = TelegramServer(enforce_limits=True, first_update_id=_first_update_id())
    server.set_limits(global_rate=30, per_chat_rate=5)
    server.start()
    llm = LLMServer(api_key=LLM_KEY, context_tokens=200_000)
    llm.start()
    content_path = _tmp_root / f"content-{uuid.uuid4().hex[:6]}"
    env = {
        "HNPAL_TELEGRAM_TOKEN": server.token,
        "HNPAL_TELEGRAM_BASE_URL": server.base_url,
        "HNPAL_TELEGRAM_POLL_TIMEOUT": "1",
        "HNPAL_TELEGRAM_TIMEOUT": "10",
        "HNPAL_TELEGRAM_CHAT_RATE": "5",
        "HNPAL_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}ds-{uuid.uuid4().hex[:6]}:",
        "HNPAL_OPENAI_BASE_URL": llm.base_url,
        "HNPAL_OPENAI_API_KEY": LLM_KEY,
        "HNPAL_LLM_RETRY_BACKOFF": "0.05",
        "HNPAL_LLM_ATTEMPTS": "2",
        "HNPAL_CONTENT_PATH": str(content_path),
        "HNPAL_DISCUSSION_MAX_TOKENS": "2500",  # room for an answer longer than one Telegram message
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    reset_settings_cache()
    store = ContentStore.open_writer(content_path, block_cache_mb=8)
    worker = WorkerProcess("default,telegram,llm", env=env, concurrency=4, pool="threads")
    stack = DiscussionStack(server, env, worker, llm, store)
    tg_conftest._active.append(stack)
    try:
        worker.wait_ready()
        stack.start_bot()
        yield stack
    finally:
        tg_conftest._active.remove(stack)
        stack.stop()
        store.close()
        server.stop()
        llm.stop()
        patch.undo()
        reset_settings_cache()
        from hnpal.telegram.client import close_clients

        close_clients()


@pytest.fixture
def ds(ds_stack: DiscussionStack) -> DiscussionStack:
    def respond(body: dict[str, Any]) -> str | None:
        if body.get("response_format"):  # structured calls (memory extraction): the sandbox's valid JSON
            return None
        system = str(body["messages"][0].get("content") or "")
        last = str(body["messages"][-1].get("content") or "")
        if system.startswith("You keep the running summary"):
            return "Folded: the user and HN Pal talked about the kernel."
        if last.startswith("The long version"):
            return "<b>not bold</b> & " + "word " * 1000 + "end."
        return f"Answer to «{' '.join(last.split())[:60]}»"

    ds_stack.llm.clear_faults()
    ds_stack.llm.set_responder(respond)
    return ds_stack


def chat_bodies(llm: LLMServer) -> list[dict[str, Any]]:
    with llm._lock:
        return [json.loads(json.dumps(r)) for r in llm.requests]
