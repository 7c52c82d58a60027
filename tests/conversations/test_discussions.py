"""Discussions end to end: the real bot process, a real worker (default, telegram and llm queues), the
sandbox Telegram and the sandbox OpenAI-compatible model, on the real PostgreSQL, Redis and RocksDB.

Each test acts as users of its own. The sandbox model answers "Answer to «question»" (and "Folded: ..."
when asked to fold older turns), so the tests can tell which message an answer belongs to; the requests
it received are checked for what the prompt held.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from hnpal.conversations import window
from hnpal.conversations.offline import INTRO
from hnpal.db.session import session_scope
from hnpal.telegram import discuss
from hnpal.telegram.callbacks import sign
from tests.conftest import execute, rows
from tests.conversations.conftest import DiscussionStack, chat_bodies

pytestmark = pytest.mark.slow

_hn_ids = itertools.count(930_000_001)
ARTICLE = (
    "# Rust in the kernel\n\n"
    "The Linux kernel now accepts drivers written in Rust for several subsystems.\n\n"
    "Memory safety bugs account for about two thirds of kernel vulnerabilities, the maintainers say.\n\n"
    "Compile times grew by roughly ten percent on the reference build machine.\n\n"
    "Some maintainers worry about reviewing code in a second language."
)
COMMENTS = [
    {"id": 501, "by": "alice", "depth": 0, "text": "The compile time cost is worth the memory safety in drivers."},
    {"id": 502, "by": "bob", "depth": 0, "text": "Reviewing Rust needs maintainers who know both languages well."},
    {"id": 503, "by": "carol", "depth": 1, "text": "Two thirds of vulnerabilities is a number worth checking."},
]


# --- helpers ----------------------------------------------------------------------------------------


def one(sql: str, **params: Any) -> dict[str, Any]:
    found = rows(sql, **params)
    assert len(found) == 1, found
    return found[0]


def make_post(ds: DiscussionStack, title: str = "Rust in the Linux kernel", *, content: bool = True) -> dict:
    hn_id = next(_hn_ids)
    with session_scope() as session:
        post_id = session.execute(
            text(
                "INSERT INTO posts (hn_id, type, title, url, domain, score, comment_count) "
                "VALUES (:h, 'story', :t, :u, 'example.org', 10, 3) RETURNING id"
            ),
            {"h": hn_id, "t": title, "u": f"https://example.org/{hn_id}"},
        ).scalar_one()
    if content:
        ds.put_content(hn_id, markdown=ARTICLE, comments=COMMENTS)
    return {"id": post_id, "hn_id": hn_id, "title": title}


def new_user(ds: DiscussionStack, name: str = "Ada", interests: list[str] | None = None) -> int:
    uid = ds.new_user(name)
    execute(
        "INSERT INTO users (telegram_id, first_name, interests) VALUES (:t, :n, CAST(:i AS jsonb))",
        t=uid,
        n=name,
        i=json.dumps(interests or []),
    )
    return uid


def user_id(uid: int) -> int:
    return one("SELECT id FROM users WHERE telegram_id = :t", t=uid)["id"]


def conversations(uid: int) -> list[dict[str, Any]]:
    return rows(
        "SELECT c.* FROM conversations c JOIN users u ON u.id = c.user_id WHERE u.telegram_id = :t ORDER BY c.id",
        t=uid,
    )


def active_post(uid: int) -> int | None:
    return one("SELECT active_discussion_post_id FROM users WHERE telegram_id = :t", t=uid)["active_discussion_post_id"]


def redis_key(ds: DiscussionStack, kind: str, uid: int, post: int | None = None) -> str:
    prefix = ds.env["HNPAL_REDIS_KEY_PREFIX"]
    return f"{prefix}fsm:{uid}:state" if kind == "fsm" else f"{prefix}context:{uid}:{post}"


def deliver(uid: int, post: dict) -> int:
    return one(
        "INSERT INTO deliveries (user_id, post_id, batch_id, message_id) "
        "SELECT id, :p, 'test-discuss', 1 FROM users WHERE telegram_id = :t RETURNING id",
        p=post["id"],
        t=uid,
    )["id"]


def ask(ds: DiscussionStack, uid: int, question: str) -> str:
    """Send a message in a discussion; wait for the model's answer and for it to be recorded (it is sent
    first); return it."""
    (answer,) = ds.send(uid, question, replies=1)

    def recorded() -> bool:
        messages = conversations(uid)[-1]["messages"]
        return bool(messages) and messages[-1]["role"] == "assistant"

    ds.wait_until(recorded, what="the answer to be recorded")
    return answer.text


def wait_answers(uid: int, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        messages = conversations(uid)[-1]["messages"]
        if sum(1 for m in messages if m["role"] == "assistant") >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def worker_mentions(ds: DiscussionStack, task: str) -> int:
    """How many ``task`` messages the worker has received (it reaches the broker only after the commit)."""
    return len(re.findall(rf"Task {re.escape(task)}\[[^\]]+\] received", ds.worker.log()))


def enqueue(ds: DiscussionStack, task: str, *args: Any, queue: str = "default") -> None:
    from celery import Celery

    from hnpal.runtime import broker_url

    client = Celery("hnpal-test-client", broker=broker_url(), set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": ds.env["HNPAL_REDIS_KEY_PREFIX"]}
    try:
        client.send_task(task, args=list(args), queue=queue)
    finally:
        client.close()


# --- starting -----------------------------------------------------------------------------------------


def test_discuss_command_loads_the_context_and_says_what(ds: DiscussionStack, redis_client) -> None:
    uid = new_user(ds, interests=["Rust"])
    uid_pk = user_id(uid)
    post = make_post(ds)
    earlier = make_post(ds, "Rust for Linux drivers, a year on", content=False)
    past = one(
        "INSERT INTO conversations (user_id, post_id, messages, summary, summarized_count, ended_at, end_reason) "
        "VALUES (:u, :p, '[]'::jsonb, 'The user doubted Rust driver reviews.', 0, now(), 'done') RETURNING id",
        u=uid_pk,
        p=earlier["id"],
    )["id"]
    memory = [
        one(
            "INSERT INTO memory (user_id, type, content, source_type) VALUES (:u, :t, :c, 'explicit') RETURNING id",
            u=uid_pk,
            t=t,
            c=c,
        )["id"]
        for t, c in (("fact", "Works on embedded Linux"), ("opinion", "Likes memory-safe languages"))
    ]

    (header,) = ds.send(uid, f"/discuss {post['hn_id']}")
    assert header.text.startswith(f"📖 Discussing: {post['title']}")
    assert "the article (" in header.text and "words" in header.text
    assert "3 top HN comments" in header.text
    assert "2 things I remember about you" in header.text
    assert "1 related past conversation" in header.text
    assert "/done" in header.text

    old, conversation = conversations(uid)
    assert old["id"] == past
    assert conversation["post_id"] == post["id"] and conversation["ended_at"] is None
    loaded = conversation["context_loaded"]
    assert loaded["article"]["loaded"] and loaded["article"]["tokens"] > 0 and not loaded["article"]["truncated"]
    assert loaded["comments"]["count"] == 3
    assert sorted(loaded["memory"]["ids"]) == sorted(memory)
    assert loaded["related"]["conversation_ids"] == [past]
    assert 0 < loaded["tokens"] <= loaded["budget_tokens"]
    assert active_post(uid) == post["hn_id"]
    fsm = json.loads(redis_client.get(redis_key(ds, "fsm", uid)))
    assert fsm["state"] == "DISCUSSION" and fsm["data"]["active_post_id"] == post["hn_id"]
    cached = json.loads(redis_client.get(redis_key(ds, "context", uid, post["hn_id"])))
    assert "Memory safety bugs account for about two thirds" in cached["text"]
    assert "The user doubted Rust driver reviews." in cached["text"] and "Works on embedded Linux" in cached["text"]
    assert redis_client.ttl(redis_key(ds, "context", uid, post["hn_id"])) > 0

    # /discuss again on the same post: the same conversation
    (again,) = ds.send(uid, f"/discuss https://news.ycombinator.com/item?id={post['hn_id']}")
    assert again.text.startswith(f"📖 Still discussing: {post['title']}")
    assert [c["id"] for c in conversations(uid)] == [past, conversation["id"]]


def test_discuss_bad_input(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    (reply,) = ds.send(uid, "/discuss")
    assert reply.text == discuss.DISCUSS_USAGE
    (reply,) = ds.send(uid, "/discuss 999999999999")
    assert reply.text.startswith("I don't know HN item 999999999999: it may have been deleted")
    assert conversations(uid) == [] and active_post(uid) is None
    (reply,) = ds.send(uid, "/done")
    assert reply.text.startswith("You're not discussing a post right now.")
    # a post without article or comments: said so in the header
    bare = make_post(ds, "A post with nothing stored", content=False)
    (header,) = ds.send(uid, f"/discuss {bare['hn_id']}")
    assert "the article: not available" in header.text and "0 top HN comments" in header.text


def test_the_header_says_what_hn_says_about_a_lively_thread(ds: DiscussionStack) -> None:
    """The thread's comment summary (made for lively threads) is shown in the discussion's header,
    escaped; a post without one has no such section."""
    uid = new_user(ds)
    post = make_post(ds, "A thread everyone argues about")
    says = "- Readers doubt the <benchmark> & its setup\n- Several share their own numbers"
    one("INSERT INTO summaries (post_id, style, variant, text, model) VALUES (:p, 'comments', '', :t, 'm') "
        "RETURNING id", p=post["id"], t=says)  # fmt: skip
    (header,) = ds.send(uid, f"/discuss {post['hn_id']}")
    assert "🗣 What HN says" in header.text
    assert "- Readers doubt the <benchmark> & its setup" in header.text  # as the user sees it (entities decoded)
    assert "- Several share their own numbers" in header.text and "/done" in header.text
    quiet = make_post(ds, "A quiet thread")
    (header,) = ds.send(uid, f"/discuss {quiet['hn_id']}")
    assert "What HN says" not in header.text


# --- talking ------------------------------------------------------------------------------------------


def test_button_then_multi_turn_exchange_is_stored_and_accounted(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    delivery = deliver(uid, post)
    (own,) = ds.send(uid, "/help")
    before = len(ds.llm.requests)
    answer = ds.press(uid, own, sign(uid, "ds", delivery), check=False, replies=1)
    assert answer == "Let's discuss it 💬"
    assert ds.server.messages(uid)[-1].text.startswith(f"📖 Discussing: {post['title']}")

    questions = ["Why Rust in the kernel?", "What about compile times?", "Who reviews the code?"]
    for question in questions:
        assert ask(ds, uid, question) == f"Answer to «{question}»"
    messages = wait_answers(uid, 3)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert [m["content"] for m in messages[::2]] == questions
    for n, reply in enumerate(messages[1::2]):
        assert reply["reply_to"] == 2 * n
        assert reply["input_tokens"] > 0 and reply["output_tokens"] > 0 and float(reply["cost_usd"]) > 0
        assert reply["model"] == "gpt-4o-mini"
    (conversation,) = conversations(uid)
    assert conversation["total_input_tokens"] == sum(m["input_tokens"] for m in messages[1::2])
    assert conversation["total_output_tokens"] == sum(m["output_tokens"] for m in messages[1::2])
    assert conversation["total_cost_usd"] > 0 and conversation["summarized_count"] == 0

    calls = rows("SELECT * FROM agent_calls WHERE conversation_id = :c ORDER BY id", c=conversation["id"])
    assert [(c["agent_type"], c["purpose"], c["success"]) for c in calls] == [("discussion", "reply", True)] * 3
    assert all(c["user_id"] == user_id(uid) and c["post_id"] == post["id"] for c in calls)
    usage = one("SELECT * FROM user_token_usage WHERE user_id = :u", u=user_id(uid))
    assert usage["discussion_tokens"] == sum(c["input_tokens"] + c["output_tokens"] for c in calls)
    assert usage["total_cost_usd"] == sum(c["cost_usd"] for c in calls)

    # what the model got: persona, the article and the thread, the talk so far, the new question last
    last = chat_bodies(ds.llm)[before:][-1]
    system, data = last["messages"][0]["content"], last["messages"][1]["content"]
    assert system.startswith(window.PERSONA)  # the instructions only: the material is in the data blocks
    assert "Compile times grew" not in system and "bob" not in system
    assert last["messages"][1]["role"] == "user"
    assert "Compile times grew by roughly ten percent" in data and "[#502] bob" in data
    assert [m["content"] for m in last["messages"][2:]] == [
        questions[0], f"Answer to «{questions[0]}»", questions[1], f"Answer to «{questions[1]}»", questions[2]
    ]  # fmt: skip


def test_switch_ends_the_first_and_starts_extraction(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    first, second = make_post(ds), make_post(ds, "SQLite is not a toy database")
    ds.send(uid, f"/discuss {first['hn_id']}")
    ask(ds, uid, "Is it stable?")
    extracts = worker_mentions(ds, "hnpal.memory.extract")
    (header,) = ds.send(uid, f"/discuss {second['hn_id']}")
    assert header.text.startswith(f"Your discussion of “{first['title']}” is saved and closed.")
    assert f"📖 Discussing: {second['title']}" in header.text
    old, new = conversations(uid)
    assert old["end_reason"] == "switch" and old["ended_at"] is not None and len(old["messages"]) == 2
    assert new["ended_at"] is None and active_post(uid) == second["hn_id"]
    ds.wait_until(lambda: worker_mentions(ds, "hnpal.memory.extract") > extracts, what="memory.extract enqueued")
    assert ask(ds, uid, "Does SQLite scale?") == "Answer to «Does SQLite scale?»"
    assert len(conversations(uid)[1]["messages"]) == 2


def test_done_ends_and_enqueues_memory_extraction(ds: DiscussionStack, redis_client) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    ask(ds, uid, "What is the main point?")
    extracts = worker_mentions(ds, "hnpal.memory.extract")
    (reply,) = ds.send(uid, "/done")
    assert reply.text.startswith(f"Discussion of “{post['title']}” ended and saved.")
    (conversation,) = conversations(uid)
    assert conversation["end_reason"] == "done" and conversation["ended_at"] is not None
    assert active_post(uid) is None and redis_client.get(redis_key(ds, "fsm", uid)) is None
    ds.wait_until(lambda: worker_mentions(ds, "hnpal.memory.extract") > extracts, what="memory.extract enqueued")
    # free text now is not part of the discussion
    (hint,) = ds.send(uid, "thanks a lot")
    assert hint.text == discuss.IDLE_HINT
    assert len(conversations(uid)[0]["messages"]) == 2

    # memory paused: ending enqueues no extraction
    other = new_user(ds)
    execute("UPDATE users SET memory_enabled = false WHERE telegram_id = :t", t=other)
    ds.send(other, f"/discuss {post['hn_id']}")
    before = worker_mentions(ds, "hnpal.memory.extract")
    (reply,) = ds.send(other, "/done")
    assert "I'll remember" not in reply.text
    time.sleep(1.0)
    assert worker_mentions(ds, "hnpal.memory.extract") == before


def test_silence_closes_the_discussion(ds: DiscussionStack, redis_client) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    ask(ds, uid, "Anything new?")
    (conversation,) = conversations(uid)
    execute(
        "UPDATE conversations SET last_message_at = now() - interval '31 minutes', "
        "started_at = now() - interval '40 minutes' WHERE id = :c",
        c=conversation["id"],
    )
    recent = make_post(ds)
    fresh = new_user(ds)
    ds.send(fresh, f"/discuss {recent['hn_id']}")  # a discussion that is not silent stays open
    before = len(ds.server.messages(uid))
    enqueue(ds, "hnpal.discussions.sweep")
    ds.wait_until(lambda: conversations(uid)[0]["ended_at"] is not None, what="the sweep")
    (closed,) = conversations(uid)
    assert closed["end_reason"] == "timeout"
    assert active_post(uid) is None
    (notice,) = ds.wait_messages(uid, before + 1)[before:]
    assert notice.text.startswith(f"⏱ The discussion of “{post['title']}” was closed after 30 minutes of silence")
    assert redis_client.get(redis_key(ds, "fsm", uid)) is None
    assert conversations(fresh)[0]["ended_at"] is None and active_post(fresh) == recent["hn_id"]
    (hint,) = ds.send(uid, "and another thing")
    assert hint.text == discuss.IDLE_HINT


def test_redis_losing_the_state_and_the_context(ds: DiscussionStack, redis_client) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    redis_client.delete(redis_key(ds, "fsm", uid))
    assert ask(ds, uid, "Still there?") == "Answer to «Still there?»"  # rebuilt from PostgreSQL
    assert json.loads(redis_client.get(redis_key(ds, "fsm", uid)))["state"] == "DISCUSSION"

    context_key = redis_key(ds, "context", uid, post["hn_id"])
    redis_client.delete(context_key)
    before = len(ds.llm.requests)
    assert ask(ds, uid, "And the article?") == "Answer to «And the article?»"
    assert "Memory safety bugs account for about two thirds" in json.loads(redis_client.get(context_key))["text"]
    assert "Memory safety bugs account" in chat_bodies(ds.llm)[before:][-1]["messages"][1]["content"]
    assert len(conversations(uid)[0]["messages"]) == 4


# --- caps and the window ------------------------------------------------------------------------------


def test_message_caps_store_nothing_half_way(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    (refused,) = ds.send(uid, "x" * 10_001)
    assert refused.text.startswith("That message is 10,001 characters long; I take at most 10,000")
    assert conversations(uid)[0]["messages"] == []
    longest = "y" * 9_990 + " why rust?"
    assert len(longest) == 10_000
    ask(ds, uid, longest)
    assert conversations(uid)[0]["messages"][0]["content"] == longest

    # 1,000 messages: a user message is taken only while its answer still fits
    stamp = datetime.now(UTC).isoformat()
    filler = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n}", "timestamp": stamp,
               **({"reply_to": n - 1} if n % 2 else {})} for n in range(999)]  # fmt: skip
    conversation = conversations(uid)[0]["id"]
    execute("UPDATE conversations SET messages = CAST(:m AS jsonb) WHERE id = :c", m=json.dumps(filler), c=conversation)
    (full,) = ds.send(uid, "one more?")
    assert full.text.startswith("This discussion has reached its limit of 1,000 messages")
    assert len(conversations(uid)[0]["messages"]) == 999
    execute(
        "UPDATE conversations SET messages = CAST(:m AS jsonb) WHERE id = :c",
        m=json.dumps(filler[:998]),
        c=conversation,
    )
    assert ask(ds, uid, "the last one?") == "Answer to «the last one?»"
    final = wait_answers(uid, 500)
    assert len(final) == 1000 and final[-1]["reply_to"] == 998
    (after,) = ds.send(uid, "and now?")
    assert after.text.startswith("This discussion has reached its limit")


def test_long_talk_is_folded_and_the_prompt_stays_under_the_cap(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    stamp = datetime.now(UTC).isoformat()
    long_turn = "é" * 9_000  # 18 KB each: the last ten alone are above the 100 KB cap
    history = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"{n} {long_turn}", "timestamp": stamp,
                **({"reply_to": n - 1} if n % 2 else {})} for n in range(40)]  # fmt: skip
    conversation = conversations(uid)[0]["id"]
    execute(
        "UPDATE conversations SET messages = CAST(:m AS jsonb) WHERE id = :c", m=json.dumps(history), c=conversation
    )
    before = len(ds.llm.requests)
    assert ask(ds, uid, "So what is the conclusion?") == "Answer to «So what is the conclusion?»"
    bodies = chat_bodies(ds.llm)[before:]
    fold, answer = bodies[0], bodies[-1]
    assert fold["messages"][0]["content"].startswith("You keep the running summary")
    prompt_bytes = sum(len(m["content"].encode()) for m in answer["messages"])
    assert prompt_bytes <= 100_000
    data = answer["messages"][1]["content"]
    assert "Folded: the user and HN Pal talked about the kernel." in data
    verbatim = answer["messages"][2:-1]
    assert 0 < len(verbatim) < 10 and verbatim[-1]["content"] == f"39 {long_turn}"
    (stored,) = conversations(uid)
    assert stored["summary"] == "Folded: the user and HN Pal talked about the kernel."
    assert stored["summarized_count"] == 40 - len(verbatim)
    calls = rows("SELECT purpose FROM agent_calls WHERE conversation_id = :c ORDER BY id", c=conversation)
    assert [c["purpose"] for c in calls] == ["fold", "reply"]

    from hnpal.cli.main import app

    result = CliRunner().invoke(app, ["memory", "stats", str(uid), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output[result.output.index("{") :])["latest"]
    assert stats["compression_applied"] is True and stats["messages"] == 42
    assert stats["summarized_count"] == stored["summarized_count"] and stats["context_tokens"] > 0
    table = CliRunner().invoke(app, ["memory", "stats", str(uid)])
    assert table.exit_code == 0 and "compression applied" in table.output and "yes" in table.output
    missing = CliRunner().invoke(app, ["memory", "stats", "1"])
    assert missing.exit_code == 1 and "no user with Telegram id 1" in missing.output


# --- isolation, budget, idle, offline -----------------------------------------------------------------


def test_one_user_cannot_reach_another_users_conversation(ds: DiscussionStack) -> None:
    owner, mallory = new_user(ds), new_user(ds, "Mallory")
    post = make_post(ds)
    delivery = deliver(owner, post)
    (owner_msg,) = ds.send(owner, "/help")
    ds.press(owner, owner_msg, sign(owner, "ds", delivery), check=False, replies=1)
    ask(ds, owner, "My secret plan is to rewrite everything in Rust?")
    (own,) = ds.send(mallory, "/help")
    # the owner's button, replayed by Mallory; and a button signed for Mallory naming the owner's delivery
    assert ds.press(mallory, own, sign(owner, "ds", delivery), check=False) == "This button is not valid for you."
    assert ds.press(mallory, own, sign(mallory, "ds", delivery), check=False) == "This button is not valid for you."
    assert conversations(mallory) == [] and active_post(mallory) is None
    # /discuss of the same post is fine: a conversation of her own, without the owner's words
    ds.send(mallory, f"/discuss {post['hn_id']}")
    before = len(ds.llm.requests)
    ask(ds, mallory, "What did others say?")
    prompt = json.dumps(chat_bodies(ds.llm)[before:])
    assert "secret plan" not in prompt
    (mine,) = conversations(mallory)
    (theirs,) = conversations(owner)
    assert mine["id"] != theirs["id"] and len(theirs["messages"]) == 2 and theirs["ended_at"] is None
    assert all("secret" not in m["content"] for m in mine["messages"])


def test_daily_budget(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    execute(
        "INSERT INTO agent_calls (user_id, agent_type, model, input_tokens, output_tokens, cost_usd, purpose, "
        "success) VALUES (:u, 'discussion', 'gpt-4o', 1000, 1000, 0.60, 'reply', true)",
        u=user_id(uid),
    )
    (reply,) = ds.send(uid, "One more question?")
    assert reply.text == discuss.BUDGET_REACHED
    assert conversations(uid)[0]["messages"] == []
    ds.send(uid, "/done")
    (reply,) = ds.send(uid, "What is new on HN today?")
    assert reply.text == discuss.BUDGET_REACHED


def test_idle_text_gets_a_hint_or_a_short_answer(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    (hint,) = ds.send(uid, "hello there")
    assert hint.text == discuss.IDLE_HINT
    (answer,) = ds.send(uid, "What makes a good HN post?")
    assert answer.text == "Answer to «What makes a good HN post?»"
    (call,) = rows("SELECT * FROM agent_calls WHERE user_id = :u", u=user_id(uid))
    assert (call["agent_type"], call["purpose"], call["success"]) == ("discussion", "idle", True)
    assert conversations(uid) == []


def test_offline_provider_answers_when_the_model_fails(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    ds.llm.set_fault("error", count=2, status=503)  # both attempts fail: the offline provider answers
    reply = ask(ds, uid, "What share of vulnerabilities are memory safety bugs?")
    assert reply.startswith(INTRO)
    assert "two thirds of kernel vulnerabilities" in reply
    (conversation,) = conversations(uid)
    assert conversation["messages"][1]["model"] == "offline-extractive"
    calls = rows("SELECT model, success FROM agent_calls WHERE conversation_id = :c ORDER BY id", c=conversation["id"])
    assert [c["success"] for c in calls] == [False, False, True] and calls[-1]["model"] == "offline-extractive"
    # the reader has an answer, and the task that made it is a FAILURE (what Flower and the task log count),
    # naming the model's error; it is not retried: one answer went out
    ds.wait_until(
        lambda: "task=hnpal.discussions.message" in ds.worker.log() and "AnsweredOffline" in ds.worker.log(),
        what="the failed task's line",
    )
    [line] = [x for x in ds.worker.log().splitlines() if "AnsweredOffline" in x and "state=" in x]
    assert "state=FAILURE" in line and "503" in line and "the offline answer went out instead" in line
    assert len(conversations(uid)[0]["messages"]) == 2


def test_answer_task_is_idempotent(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    ask(ds, uid, "Once?")
    (conversation,) = conversations(uid)
    before = len(ds.server.messages(uid))
    requests = len(ds.llm.requests)
    done = ds.worker.log().count("'already-answered'")
    for _ in range(2):  # a redelivered task, and a duplicate
        enqueue(ds, "hnpal.discussions.reply", conversation["id"], 0, queue="llm")
    ds.wait_until(lambda: ds.worker.log().count("'already-answered'") >= done + 2, what="the tasks")
    assert len(conversations(uid)[0]["messages"]) == 2
    assert len(ds.server.messages(uid)) == before and len(ds.llm.requests) == requests


def test_long_answer_is_split_and_escaped(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    ds.send(uid, "The long version, please?", replies=2)
    wait_answers(uid, 1)
    first, second = ds.server.messages(uid)[-2:]
    assert first.text.startswith("<b>not bold</b> & word word")  # shown literally, not as markup
    assert second.text.endswith("word end.")
    assert len(first.text) <= 4096 and len(second.text) <= 4096
    (stored,) = conversations(uid)
    answer = stored["messages"][1]["content"]
    assert answer == "<b>not bold</b> & " + "word " * 1000 + "end."
    assert (first.text + " " + second.text).split() == answer.split()


def test_a_long_429_in_the_middle_of_an_answer_does_not_repeat_it(ds: DiscussionStack) -> None:
    """The answer's first message is out when Telegram asks to wait longer than a send waits in place
    (5 s): the rest of the answer still follows once, in place, and the model is not asked again (a
    retry of the task would make the answer again and send its first part twice)."""
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    requests = len(ds.llm.requests)
    ds.server.set_fault("sendMessage", "too_many_requests", skip=1, retry_after=6)  # the second part's
    try:
        ds.send(uid, "The long version, please?", replies=2)
        wait_answers(uid, 1)
    finally:
        ds.server.clear_faults()
    first, second = ds.server.messages(uid)[-2:]
    assert first.text.startswith("<b>not bold</b>") and second.text.endswith("word end.")
    texts = [m.text for m in ds.server.messages(uid)]
    assert texts.count(first.text) == 1 and texts.count(second.text) == 1
    assert ("sendMessage", 429) in ds.server.request_log
    assert len(ds.llm.requests) == requests + 1
    assert [m["role"] for m in conversations(uid)[0]["messages"]] == ["user", "assistant"]


def test_answer_to_a_user_who_blocked_the_bot(ds: DiscussionStack) -> None:
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    ds.server.block(uid)
    update = ds.server.send_user_message(uid, "Are you there?")  # writing unblocks in the sandbox: block again
    ds.server.block(uid)
    ds.wait_handled(update["update_id"])
    ds.wait_until(
        lambda: one("SELECT status FROM users WHERE telegram_id = :t", t=uid)["status"] == "blocked",
        what="the user marked blocked",
    )
    assert [m["role"] for m in conversations(uid)[0]["messages"]] == ["user"]  # kept; not answered


def test_a_discussion_message_is_answered_in_one_hop(ds: DiscussionStack) -> None:
    """The bot sends a message from a user in a discussion straight to the llm queue: that task handles
    the update and makes the answer (no reply task after it). Commands still go to the telegram queue."""
    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    before = {name: worker_mentions(ds, name) for name in
              ("hnpal.discussions.message", "hnpal.discussions.reply", "hnpal.telegram.handle")}  # fmt: skip
    assert ask(ds, uid, "One hop?") == "Answer to «One hop?»"
    assert worker_mentions(ds, "hnpal.discussions.message") == before["hnpal.discussions.message"] + 1
    assert worker_mentions(ds, "hnpal.discussions.reply") == before["hnpal.discussions.reply"]
    assert worker_mentions(ds, "hnpal.telegram.handle") == before["hnpal.telegram.handle"]
    ds.send(uid, "/help")
    ds.wait_until(lambda: worker_mentions(ds, "hnpal.telegram.handle") > before["hnpal.telegram.handle"],
                  what="/help handled on the telegram queue")  # fmt: skip
    (update,) = rows(
        "SELECT status FROM telegram_updates WHERE telegram_user_id = :t AND payload->'message'->>'text' = 'One hop?'",
        t=uid,
    )
    assert update["status"] == "processed"


def test_an_answer_lost_with_its_worker_is_made_on_redelivery(ds: DiscussionStack) -> None:
    """A worker died after storing the message (the update is processed) and before answering it: the
    redelivered task answers it, once; delivered again, it does nothing."""
    from hnpal.conversations import service

    uid = new_user(ds)
    post = make_post(ds)
    ds.send(uid, f"/discuss {post['hn_id']}")
    (conversation,) = conversations(uid)
    with session_scope() as session:
        index = service.append_user_message(session=session, conversation_id=conversation["id"], text="Lost?")
    update_id = one(
        "INSERT INTO telegram_updates (update_id, payload, telegram_user_id, chat_id, status, attempts) "
        "VALUES ((SELECT coalesce(max(update_id), 0) + 1000000 FROM telegram_updates), '{}', :t, :t, "
        "'processed', 1) RETURNING update_id",
        t=uid,
    )["update_id"]
    before = len(ds.server.messages(uid))
    enqueue(ds, "hnpal.discussions.message", update_id, queue="llm")
    (answer,) = ds.server.wait_for_messages(uid, before + 1, timeout=20)[before:]
    assert answer.text == "Answer to «Lost?»"
    messages = wait_answers(uid, 1)
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["reply_to"] == index
    requests = len(ds.llm.requests)

    def finished() -> int:
        return len(re.findall(r"Task hnpal\.discussions\.message\[[^\]]+\] succeeded", ds.worker.log()))

    done = finished()
    enqueue(ds, "hnpal.discussions.message", update_id, queue="llm")
    ds.wait_until(lambda: finished() > done, what="the second delivery")
    assert len(ds.server.messages(uid)) == before + 1 and len(ds.llm.requests) == requests
    assert len(conversations(uid)[0]["messages"]) == 2
