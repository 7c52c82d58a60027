"""Discussion answers to a user under review are held for a person (policy ``protocol``): the reader hears
a notice, the decided text arrives and goes in the conversation's history; a silenced user's messages
in a discussion are quarantined and cost no model call."""

from __future__ import annotations

import time

from hnpal.db.session import session_scope
from hnpal.review import service as review
from hnpal.telegram.callbacks import sign
from tests.conftest import one, rows
from tests.conversations.conftest import DiscussionStack
from tests.conversations.test_discussions import ask, conversations, deliver, make_post, new_user, user_id


def _discussing(ds: DiscussionStack) -> int:
    uid = new_user(ds)
    post = make_post(ds)
    delivery = deliver(uid, post)
    (own,) = ds.send(uid, "/help")
    ds.press(uid, own, sign(uid, "ds", delivery), check=False, replies=1)
    return uid


def test_held_answer_is_decided_and_enters_the_history(ds: DiscussionStack) -> None:
    uid = _discussing(ds)
    uid_db = user_id(uid)
    with session_scope() as session:
        review.set_review(session, user_id=uid_db, operator="tester", on=True, reason="test")
    calls = len(ds.llm.requests)
    (notice,) = ds.send(uid, "Why Rust in the kernel?", replies=1)
    assert notice.text == review.HOLD_NOTICE
    assert len(ds.llm.requests) == calls + 1  # the model was asked once; its answer waits
    item = one("SELECT id, message_index, draft, conversation_id FROM review_items WHERE user_id = :u", u=uid_db)
    assert item["message_index"] == 0 and item["draft"] == "Answer to «Why Rust in the kernel?»"
    assert [m["role"] for m in conversations(uid)[-1]["messages"]] == ["user"]

    # a redelivered answer task does not ask the model again, nor send a second notice
    from hnpal.conversations import service as talk

    assert talk.reply(conversation_id=item["conversation_id"], message_index=0) == "held"

    with session_scope() as session:
        decision = review.decide(session, item_id=item["id"], operator="tester", action="edit",
                                 edited="Because memory safety.", tags=["tone"])  # fmt: skip
    assert review.send(decision.send_id) == "sent"
    ds.wait_messages(uid, len(ds.server.messages(uid)) or 1)
    assert ds.server.messages(uid)[-1].text == "Because memory safety."
    history = conversations(uid)[-1]["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "Why Rust in the kernel?"), ("assistant", "Because memory safety.")]  # fmt: skip
    assert history[1]["reply_to"] == 0

    # review ended: the next answer goes out at once, with the decided text in its history
    with session_scope() as session:
        review.set_review(session, user_id=uid_db, operator="tester", on=False)
    assert ask(ds, uid, "And compile times?") == "Answer to «And compile times?»"
    last = ds.llm.requests[-1]["messages"]
    assert [m["content"] for m in last[2:]] == ["Why Rust in the kernel?", "Because memory safety.",
                                                 "And compile times?"]  # fmt: skip


def test_silenced_user_in_a_discussion_costs_no_model_call(ds: DiscussionStack) -> None:
    uid = _discussing(ds)
    uid_db = user_id(uid)
    with session_scope() as session:
        review.silence(session, user_id=uid_db, operator="tester", reason="flood")
    calls = len(ds.llm.requests)
    (notice,) = ds.send(uid, "First while silenced?", replies=1)
    assert notice.text == review.SILENCED_NOTICE
    assert ds.send(uid, "Second while silenced?", replies=0) == []
    # privacy commands still work
    (export,) = ds.send(uid, "/export", replies=1)
    assert export.document is not None
    time.sleep(0.5)
    assert len(ds.llm.requests) == calls
    held = rows("SELECT text, status FROM quarantine_messages WHERE user_id = :u ORDER BY id", u=uid_db)
    assert [h["text"] for h in held] == ["First while silenced?", "Second while silenced?"]
    assert conversations(uid)[-1]["messages"] == []
    with session_scope() as session:
        assert review.unsilence(session, user_id=uid_db, operator="tester", held="drop") == 2
    assert {h["status"] for h in rows("SELECT status FROM quarantine_messages WHERE user_id = :u", u=uid_db)} == {
        "dropped"}  # fmt: skip
    assert ask(ds, uid, "Back again?") == "Answer to «Back again?»"
