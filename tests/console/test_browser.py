"""The console in a real browser (Playwright driving Debian's Chromium) against the real stack: the
sandbox Telegram, a worker, the bot, the sandbox LLM and ``hnpal console`` in its own process.

The flow: a wrong password is refused; sign in; put a user under review; the user asks a question
through the sandbox Telegram and hears the "checking" notice; the held answer appears in the queue; the
reviewer edits it with two tags and approves; the user receives the edited text once. Then the user is
silenced: their next messages are quarantined and the sandbox LLM sees no call; the silence is lifted
and the messages are processed. Hostile strings (a user's name, the model's output, a post's title and
link) are shown inert: no script runs. Screenshots of the queue, a user page and the costs page are saved.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hnpal.db.session import get_engine
from hnpal.review import service as review
from tests.conftest import one, rows
from tests.console.conftest import PASSWORD, ConsoleProcess, make_operator
from tests.deliveries.conftest import unique_id
from tests.telegram.conftest import running_stack

CHROMIUM = "/usr/bin/chromium"
HOSTILE_NAME = '<script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2">'
HOSTILE_ANSWER = '<script>window.__pwned=3</script><a href="javascript:window.__pwned=4">click</a>" onmouseover="x'
EDITED = "Edited: a B-tree keeps sorted keys in wide nodes, so lookups touch few disk pages."


def _chromium() -> str:
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)")
    return path


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _llm_env(server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "HNPAL_OPENAI_API_KEY": "k",
        "HNPAL_OPENAI_BASE_URL": server.base_url,
        "HNPAL_OPENAI_MODEL": "sandbox-model",
        "HNPAL_LLM_PRICES": json.dumps({"sandbox-model": {"input": "1", "output": "2"}}),
        "HNPAL_LLM_RETRY_BACKOFF": "0.01",
    }


def _chat_requests(server) -> int:  # type: ignore[no-untyped-def]
    with server._lock:
        return len(server.requests)


def _no_script_ran(page) -> None:  # type: ignore[no-untyped-def]
    assert page.evaluate("() => window.__pwned === undefined"), "a hostile string ran as script"
    assert page.locator("script").count() == 0
    assert page.locator('a[href^="javascript"]').count() == 0
    assert page.locator("img").count() == 0


def _hostile_summary_item() -> int:
    """A held summary of a post whose title and link are hostile (as a crawled page could make them)."""
    hn_id = unique_id()
    post = rows(
        "INSERT INTO posts (hn_id, type, title, url, score, summary_status) "
        "VALUES (:h, 'story', :t, 'javascript:window.__pwned=6', 10, 'held') RETURNING id",
        h=hn_id, t=HOSTILE_NAME,
    )[0]["id"]  # fmt: skip
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return review.hold_summary(
            conn, post_id=post, summary_id=-hn_id % 2_000_000_000, reason="policy: every summary is reviewed",
            draft=HOSTILE_ANSWER, prompt=[{"role": "user", "content": HOSTILE_ANSWER}], model="sandbox-model",
            input_tokens=10, output_tokens=5, cost_usd=0,
        )  # fmt: skip


@pytest.mark.slow
def test_review_and_silence_in_a_browser(browser, llm_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shots = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with running_stack(**_llm_env(llm_server)) as stack:
        console = ConsoleProcess(stack.env)
        try:
            _flow(stack, console, browser, llm_server, shots)
        finally:
            console.stop()


def _flow(stack, console, browser, llm, shots: Path) -> None:  # type: ignore[no-untyped-def]
    reviewer = make_operator("reviewer")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    base = console.url

    # a wrong password is refused; the right one signs in
    page.goto(f"{base}/queue")
    assert page.url == f"{base}/login"
    page.fill("input[name=name]", reviewer)
    page.fill("input[name=password]", "not the password at all")
    page.click("button[type=submit]")
    assert "Wrong name or password" in page.inner_text("#login-error")
    page.fill("input[name=name]", reviewer)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{base}/queue"

    # the user, with a hostile name, meets the bot; the reviewer puts them under review
    uid = stack.new_user(first_name=HOSTILE_NAME, username=f"mallory{unique_id()}")
    stack.send(uid, "/help", replies=1)
    user_id = one("SELECT id FROM users WHERE telegram_id = :t", t=uid)["id"]
    page.goto(f"{base}/users?q={uid}")
    page.click(f'#results a[href="/users/{user_id}"]')
    _no_script_ran(page)
    page.fill("#put-under-review input[name=reason]", "asks for unsafe advice")
    page.click("#put-under-review button")
    assert page.locator("#under-review").count() == 1

    # the question: one model call, a notice, and the held answer in the queue
    llm.set_responder(lambda body: HOSTILE_ANSWER)
    calls = _chat_requests(llm)
    chat = stack.send(uid, "What is a B-tree?", replies=1)
    assert [m.text for m in chat] == [review.HOLD_NOTICE]
    assert _chat_requests(llm) == calls + 1
    llm.set_responder(None)
    item_id = one("SELECT id FROM review_items WHERE user_id = :u AND status = 'pending'", u=user_id)["id"]
    summary_item = _hostile_summary_item()
    page.goto(f"{base}/queue")
    assert page.locator(f'#queue a[href="/review/{item_id}"]').count() == 1
    assert page.locator(f'#queue a[href="/review/{summary_item}"]').count() == 1
    assert "<script>window.__pwned=3</script>" in page.inner_text("#queue")  # shown as text
    _no_script_ran(page)
    page.screenshot(path=str(shots / "console-queue.png"), full_page=True)
    page.goto(f"{base}/review/{summary_item}")
    _no_script_ran(page)

    # edit with two tags and approve: the reader gets the edited text, once
    page.goto(f"{base}/review/{item_id}")
    assert "<script>window.__pwned=3</script>" in page.inner_text("#draft")
    _no_script_ran(page)
    page.fill("#edit-text", EDITED)
    page.check('input[name=tags][value="factual error"]')
    page.check('input[name=tags][value="unsafe"]')
    page.screenshot(path=str(shots / "console-item.png"), full_page=True)
    page.click("#decide-edit button[type=submit]")
    assert f"item {item_id}: edited" in page.inner_text("main")
    stack.wait_messages(uid, 3)  # /help's reply, the notice, the edited answer
    stack.wait_until(lambda: one("SELECT status FROM review_sends WHERE review_id = :i", i=item_id)["status"] == "sent",
                     what="the send recorded")  # fmt: skip
    time.sleep(1.0)  # anything sent twice would have arrived by now
    texts = [m.text for m in stack.server.messages(uid)]
    assert texts.count(EDITED) == 1 and texts[-1] == EDITED, texts
    item = one("SELECT status, tags, decided_by FROM review_items WHERE id = :i", i=item_id)
    assert item == {"status": "edited", "tags": ["factual error", "unsafe"], "decided_by": reviewer}

    # silence: the next messages are quarantined, the model is not called, one fixed notice
    page.goto(f"{base}/users/{user_id}")
    page.click("form[action$='/review'] button")  # end the review, so released messages are answered
    page.fill("#silence input[name=reason]", "flooding the bot")
    page.click("#silence button")
    assert page.locator("#silenced").count() == 1
    calls = _chat_requests(llm)
    assert [m.text for m in stack.send(uid, "Why is the sky blue?", replies=1)] == [review.SILENCED_NOTICE]
    stack.send(uid, "How do LSM trees compact?", replies=0)
    held = rows("SELECT text, status FROM quarantine_messages WHERE user_id = :u ORDER BY id", u=user_id)
    assert held == [{"text": "Why is the sky blue?", "status": "held"},
                    {"text": "How do LSM trees compact?", "status": "held"}]  # fmt: skip
    time.sleep(0.5)
    assert _chat_requests(llm) == calls  # the sandbox LLM saw no call
    page.reload()
    assert "How do LSM trees compact?" in page.inner_text("#held")
    _no_script_ran(page)
    page.screenshot(path=str(shots / "console-user.png"), full_page=True)

    # lift it and process the held messages in order: both answered now
    before = len(stack.server.messages(uid))
    page.click("#unsilence button[value=process]")
    assert "2 held message(s) processed" in page.inner_text("main")
    stack.wait_messages(uid, before + 2)
    stack.wait_until(
        lambda: (
            [r["status"] for r in rows("SELECT status FROM quarantine_messages WHERE user_id = :u", u=user_id)]
            == ["processed", "processed"]
        ),
        what="the held messages processed",
    )
    assert _chat_requests(llm) == calls + 2
    audit = rows("SELECT action FROM audit_log WHERE subject_user_id = :u AND operator = :o ORDER BY id",
                 u=user_id, o=reviewer)  # fmt: skip
    actions = [r["action"] for r in audit]
    assert actions == ["protocol.review_on", "review.edited", "protocol.review_off", "protocol.silence",
                       "protocol.unsilence"]  # fmt: skip

    page.goto(f"{base}/costs")
    assert "sandbox-model" in page.inner_text("#per-day")
    page.screenshot(path=str(shots / "console-costs.png"), full_page=True)
    _no_script_ran(page)
    assert dialogs == []
