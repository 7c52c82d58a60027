"""Memory extraction after a discussion: the offline heuristics, the sandbox LLM's structured answers
(valid, malformed, wrongly typed), the filters (confidence, near-duplicates), paused memory, and
idempotence, against the real PostgreSQL (and a real worker on the llm queue for the task)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pytest

from hnpal.llm import service as llm
from hnpal.memory import service
from hnpal.memory.offline import extract as offline_extract
from hnpal.sandbox.llm_api import LLMServer
from tests.conftest import use_sandbox_llm
from tests.memory.conftest import Factory, memory_rows, one, rows

TALK = [
    ("user", "I work at a bank on payment systems. Could Rust replace our C++ services?"),
    ("assistant", "The article says the rewrite cut latency by half and removed a class of memory bugs."),
    ("user", "We use PostgreSQL everywhere. Does the post say anything about Rust and PostgreSQL drivers?"),
    ("assistant", "Yes: the authors used a pure-Rust driver."),
]


def marker(conversation_id: int) -> dict:
    row = one("SELECT context_loaded FROM conversations WHERE id = :c", c=conversation_id)
    assert row is not None
    return row["context_loaded"][service.MARKER]


@pytest.fixture(autouse=True)
def _fresh_spend() -> None:
    llm.forget_spend()


@pytest.fixture
def paid(llm_server, settings_env):
    use_sandbox_llm(settings_env, llm_server, llm_attempts="2")
    return llm_server


# --- offline --------------------------------------------------------------------------------------


def test_offline_heuristics_answer_valid_json() -> None:
    said = [m for r, m in TALK if r == "user"]
    answer = json.loads(offline_extract({"title": "Show HN: A Rust rewrite of SQLite", "user_messages": said}))
    parsed = service.parse_answer(json.dumps(answer))
    assert parsed.invalid == []
    found = {(i.type, i.content) for i in parsed.items}
    assert ("interest", "Rust") in found and ("interest", "PostgreSQL") in found
    assert ("work_context", "Works at a bank on payment systems") in found
    assert any(i.type == "discussion_note" for i in parsed.items)
    assert ("interest", "SQLite") not in found  # in the title, but the user never mentioned it
    assert not any(i.content == "Go" for i in parsed.items)  # "go" the verb is not the language
    verb = json.loads(offline_extract({"title": "x", "user_messages": ["Let's go home now."]}))["items"]
    assert [(i["type"], i["content"]) for i in verb] == [("discussion_note", "Said: “Let's go home now.”")]
    assert json.loads(offline_extract({"title": "x", "user_messages": []})) == {"items": []}


def test_offline_extraction_stores_note_and_interests(make: Factory) -> None:
    user = make.user()
    post = make.post("Rewriting the payment core in Rust")
    cid = make.conversation(user, post, TALK)
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "done"
    stored = memory_rows(user["id"])
    assert [r["id"] for r in stored] == outcome.stored
    assert all(r["source_type"] == "discussion" and r["source_post_id"] == post["id"] for r in stored)
    assert all(r["source_conversation_id"] == cid and r["active"] for r in stored)
    notes = [r for r in stored if r["type"] == "discussion_note"]
    assert len(notes) == 1
    today = datetime.now(UTC).date().isoformat()
    assert notes[0]["content"] == (
        f"Discussed “Rewriting the payment core in Rust” on {today}: Asked: “Could Rust replace our C++ services?”; "
        "“Does the post say anything about Rust and PostgreSQL drivers?”"
    )
    interests = {r["content"] for r in stored if r["type"] == "interest"}
    assert {"Rust", "PostgreSQL"} <= interests
    assert marker(cid)["status"] == "done" and marker(cid)["stored"] == len(stored)
    call = one("SELECT * FROM agent_calls WHERE conversation_id = :c", c=cid)
    assert call["agent_type"] == "memory_extraction" and call["model"] == "offline-extractive"
    assert call["user_id"] == user["id"] and call["success"]
    usage = one("SELECT memory_extraction_tokens FROM user_token_usage WHERE user_id = :u", u=user["id"])
    assert usage["memory_extraction_tokens"] > 0


def test_extraction_runs_once_even_when_doubled(make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post(), TALK)
    results: list[service.Outcome] = []
    threads = [threading.Thread(target=lambda: results.append(service.extract(conversation_id=cid))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.status for o in results) == ["already", "already", "done"]
    count = len(memory_rows(user["id"]))
    again = service.extract(conversation_id=cid)
    assert again.status == "already" and again.stored == []
    assert len(memory_rows(user["id"])) == count
    assert len([r for r in memory_rows(user["id"]) if r["type"] == "discussion_note"]) == 1


def test_paused_memory_extracts_and_stores_nothing(make: Factory) -> None:
    """Decision: paused memory means HN Pal learns nothing from the conversation, not even the discussion
    note; the conversation is marked skipped, so turning memory on later does not reach back into it."""
    user = make.user(memory_enabled=False)
    cid = make.conversation(user, make.post(), TALK)
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "skipped" and outcome.detail == {"reason": "memory paused"}
    assert memory_rows(user["id"]) == []
    assert rows("SELECT * FROM agent_calls WHERE conversation_id = :c", c=cid) == []  # no model call either
    assert marker(cid)["status"] == "skipped"
    from hnpal.db.session import session_scope
    from hnpal.users.models import User

    with session_scope() as session:
        session.get(User, user["id"]).memory_enabled = True
    assert service.extract(conversation_id=cid).status == "already"
    assert memory_rows(user["id"]) == []


def test_active_or_missing_conversations_are_left_alone(make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post(), TALK, ended=False)
    assert service.extract(conversation_id=cid).status == "active"
    assert memory_rows(user["id"]) == []
    loaded = one("SELECT context_loaded FROM conversations WHERE id = :c", c=cid)["context_loaded"]
    assert service.MARKER not in loaded
    assert service.extract(conversation_id=2_000_000_000).status == "missing"


def test_near_duplicates_and_low_confidence_are_dropped() -> None:
    items = [
        service.ExtractedItem(type="interest", content="rust!", confidence=0.9),
        service.ExtractedItem(type="interest", content="Rust programming", confidence=0.9),
        service.ExtractedItem(type="fact", content="Runs PostgreSQL 16 in production", confidence=0.9),
        service.ExtractedItem(type="fact", content="runs postgresql 16 in production.", confidence=0.95),
        service.ExtractedItem(type="opinion", content="Thinks ORMs are overrated", confidence=0.3),
    ]
    selection = service.select_items(items, ["Rust"], min_confidence=0.6, max_similarity=0.85)
    assert [i.content for i in selection.keep] == ["Rust programming", "Runs PostgreSQL 16 in production"]
    assert selection.duplicates == 2 and selection.low_confidence == 1
    assert service.similarity("Works on payment systems at a bank", "works on payment systems at a bank") == 1.0
    assert service.similarity("Likes Rust", "Dislikes Java") < 0.85


def test_duplicates_of_active_memory_only(make: Factory) -> None:
    user = make.user()
    make.memory(user, "Rust")  # active: an extracted "Rust" repeats it
    make.memory(user, "PostgreSQL", active=False)  # forgotten: not a duplicate, new evidence brings it back
    cid = make.conversation(user, make.post(), TALK)
    outcome = service.extract(conversation_id=cid)
    assert outcome.detail["duplicates"] >= 1
    new = [r for r in memory_rows(user["id"]) if r["source_conversation_id"] == cid]
    assert "Rust" not in {r["content"] for r in new}
    assert "PostgreSQL" in {r["content"] for r in new}


# --- the sandbox LLM (OpenAI-compatible, structured output) ---------------------------------------


def test_sandbox_structured_answer_is_validated_and_filtered(paid: LLMServer, make: Factory, settings_env) -> None:
    user = make.user()
    make.memory(user, "Distributed systems")
    post = make.post("Kafka at scale")
    cid = make.conversation(user, post, TALK)
    paid.set_responder(
        lambda body: {
            "items": [
                {"type": "discussion_note", "content": "They compared Kafka with their queue", "confidence": 0.9},
                {"type": "work_context", "content": "Works at a bank on payment systems", "confidence": 0.95},
                {"type": "interest", "content": "distributed systems", "confidence": 0.9},  # duplicate
                {"type": "opinion", "content": "Might dislike Java", "confidence": 0.2},  # too unsure
            ]
        }
    )
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "done"
    assert outcome.detail["duplicates"] == 1 and outcome.detail["low_confidence"] == 1
    new = {r["type"]: r for r in memory_rows(user["id"]) if r["source_conversation_id"] == cid}
    assert set(new) == {"discussion_note", "work_context"}
    day = datetime.now(UTC).date().isoformat()
    note = f"Discussed “Kafka at scale” on {day}: They compared Kafka with their queue."
    assert new["discussion_note"]["content"] == note
    assert float(new["work_context"]["confidence"]) == 0.95
    [request] = [r for r in paid.requests if r.get("response_format")]
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == service.EXTRACTION_SCHEMA
    assert "Works at a bank" not in request["messages"][0]["content"]
    assert "I work at a bank" in request["messages"][1]["content"]  # the transcript
    assert "Distributed systems" in request["messages"][1]["content"]  # what is known already
    call = one("SELECT * FROM agent_calls WHERE conversation_id = :c", c=cid)
    assert call["model"] == "sandbox-model" and call["success"] and call["cost_usd"] > 0


def test_sandbox_default_answer_passes_the_strict_schema(paid: LLMServer, make: Factory) -> None:
    """The sandbox checks the strict structured-output rules (a 400 otherwise) and answers an instance of
    the schema: the answer is accepted as it is."""
    user = make.user()
    cid = make.conversation(user, make.post(), TALK)
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "done", outcome.detail
    assert len(memory_rows(user["id"])) >= 1


def test_malformed_json_keeps_the_note_and_does_not_loop(paid: LLMServer, make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post("Malformed"), TALK)
    paid.set_responder(lambda body: '{"items": [{"type": "fact", "content": "unterminated')
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "malformed"
    [note] = memory_rows(user["id"])
    assert note["type"] == "discussion_note" and note["content"].startswith("Discussed “Malformed” on ")
    assert marker(cid)["status"] == "malformed" and "JSON" in marker(cid)["error"]
    calls = rows("SELECT success FROM agent_calls WHERE conversation_id = :c", c=cid)
    assert [c["success"] for c in calls] == [False, False]  # HNPAL_LLM_ATTEMPTS=2, then it stops
    assert service.extract(conversation_id=cid).status == "already"
    assert len(rows("SELECT id FROM agent_calls WHERE conversation_id = :c", c=cid)) == 2


def test_a_failed_extraction_task_is_a_failure_not_a_success(paid: LLMServer, make: Factory) -> None:
    """The task records the outcome, then ends in FAILURE (what Flower counts); a second run finds it done."""
    from hnpal.errors import WorkFailed
    from tasks.memory import extract

    user = make.user()
    cid = make.conversation(user, make.post("Refused"), TALK)
    paid.set_fault("bad_request")
    result = extract.apply(args=[cid])
    paid.clear_faults()
    assert result.state == "FAILURE" and isinstance(result.result, WorkFailed), result.result
    assert marker(cid)["status"] == "failed"
    assert extract.apply(args=[cid]).get()["status"] == "already"


def test_answer_without_items_list_is_malformed(paid: LLMServer, make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post(), TALK)
    paid.set_responder(lambda body: {"memories": [{"type": "fact", "content": "x", "confidence": 1}]})
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "malformed" and "items" in outcome.detail["error"]
    assert [r["type"] for r in memory_rows(user["id"])] == ["discussion_note"]


def test_wrongly_typed_items_are_dropped_one_by_one(paid: LLMServer, make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post(), TALK)
    paid.set_responder(
        lambda body: {
            "items": [
                {"type": "hobby", "content": "Sailing", "confidence": 0.9},  # not a memory type
                {"type": "fact", "content": 123, "confidence": 0.9},  # not a string
                {"type": "fact", "content": "Uses Kafka", "confidence": "high"},  # not a number
                {"type": "fact", "content": "Uses Kafka", "confidence": 1.5},  # out of range
                {"type": "fact", "content": "   ", "confidence": 0.9},  # empty
                "a bare string",
                {"type": "fact", "content": "Runs Kafka at work", "confidence": 0.9},
            ]
        }
    )
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "done"
    assert outcome.detail["invalid_count"] == 6
    assert sorted(r["content"] for r in memory_rows(user["id"]) if r["type"] != "discussion_note") == [
        "Runs Kafka at work"
    ]


def test_transient_failure_retries_only_when_allowed(paid: LLMServer, make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post(), TALK)
    paid.set_fault("error", status=503)
    with pytest.raises(service.RetryLater):
        service.extract(conversation_id=cid, may_retry=True)
    assert memory_rows(user["id"]) == []  # nothing written: the retry starts clean
    outcome = service.extract(conversation_id=cid, may_retry=False)  # the last attempt records the failure
    assert outcome.status == "failed" and "503" in outcome.detail["error"]
    assert [r["type"] for r in memory_rows(user["id"])] == ["discussion_note"]


# --- the task on a real worker --------------------------------------------------------------------


@pytest.mark.slow
def test_task_runs_on_the_llm_queue(make: Factory, spawn_worker) -> None:
    from hnpal.celery import app

    user = make.user()
    cid = make.conversation(user, make.post("Queue me"), TALK)
    worker = spawn_worker("llm", pool="threads", concurrency=2)
    worker.wait_ready()
    app.send_task("hnpal.memory.extract", args=[cid])
    app.send_task("hnpal.memory.extract", args=[cid])  # a duplicate message stores nothing twice
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = one("SELECT context_loaded FROM conversations WHERE id = :c", c=cid)["context_loaded"]
        if service.MARKER in done and "already" in worker.log():
            break
        time.sleep(0.2)
    assert marker(cid)["status"] == "done", worker.log()
    assert len([r for r in memory_rows(user["id"]) if r["type"] == "discussion_note"]) == 1


# --- hostile answers ---------------------------------------------------------------------------------


def test_nul_and_control_characters_are_cleaned_before_they_are_stored(paid: LLMServer, make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post("Control"), TALK)
    paid.set_responder(
        lambda body: {
            "items": [
                {"type": "work_context", "content": "Works\u0000 at a bank\u001b[31m on payments", "confidence": 0.9},
                {"type": "discussion_note", "content": "Compared\u0000 queues\u0007", "confidence": 0.9},
            ]
        }
    )
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "done", outcome.detail
    new = {r["type"]: r["content"] for r in memory_rows(user["id"])}
    assert new["work_context"] == "Works at a bank[31m on payments"
    assert new["discussion_note"].endswith(": Compared queues.")
    [call] = rows("SELECT success, input_tokens, cost_usd FROM agent_calls WHERE conversation_id = :c", c=cid)
    assert call["success"] and call["input_tokens"] > 0 and call["cost_usd"] > 0


def test_deeply_nested_answer_keeps_the_note_quarantines_the_rest_and_records_usage(
    paid: LLMServer, make: Factory
) -> None:
    user = make.user()
    cid = make.conversation(user, make.post("Nested"), TALK)
    paid.set_responder(lambda body: '{"items": ' + "[" * 100_000 + "]" * 100_000 + "}")
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "malformed"
    [note] = memory_rows(user["id"])
    assert note["type"] == "discussion_note" and note["content"].startswith("Discussed “Nested” on ")
    assert "nested" in marker(cid)["error"] and marker(cid)["quarantined"][0].startswith('{"items": [[[')
    calls = rows("SELECT success, input_tokens, cost_usd FROM agent_calls WHERE conversation_id = :c", c=cid)
    assert len(calls) == 2 and all(not c["success"] and c["input_tokens"] > 0 and c["cost_usd"] > 0 for c in calls)
    assert service.extract(conversation_id=cid).status == "already"


def test_rejected_items_are_quarantined_beside_what_was_stored(paid: LLMServer, make: Factory) -> None:
    user = make.user()
    cid = make.conversation(user, make.post(), TALK)
    paid.set_responder(
        lambda body: {
            "items": [
                {"type": "fact", "content": "Runs Kafka at work", "confidence": 0.9},
                {"type": "fact", "content": {"deep": [[["x"]]]}, "confidence": 0.9},
            ]
        }
    )
    outcome = service.extract(conversation_id=cid)
    assert outcome.status == "done"
    assert sorted(r["content"] for r in memory_rows(user["id"]) if r["type"] == "fact") == ["Runs Kafka at work"]
    assert marker(cid)["quarantined"] == ['{"type": "fact", "content": {"deep": [[["x"]]]}, "confidence": 0.9}']
