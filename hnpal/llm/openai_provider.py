"""The OpenAI provider, on the ``openai`` SDK: any OpenAI-compatible server works (vLLM, Ollama, LM
Studio, a proxy) through HNPAL_OPENAI_BASE_URL. The SDK's own retries are off: HN Pal retries
transient errors itself (honouring Retry-After) so that every attempt is accounted for."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from hnpal.llm.base import LLMError, LLMRequest, LLMResult


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIProvider:
    name = "openai"

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout: float) -> None:
        self.model = model
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def complete(self, request: LLMRequest) -> LLMResult:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
            }
        started = time.perf_counter()
        try:
            # The SDK's own request path (auth, timeouts, status errors, response model) without
            # ``chat.completions.create``'s recursive TypedDict transform of the body: our body is plain
            # JSON already, and the transform costs ~7 ms of CPU per discussion prompt.
            response = self.client.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)
        except openai.RateLimitError as exc:
            raise LLMError(
                f"rate limited: {exc.message}", transient=True, retry_after=_retry_after(exc), kind="429"
            ) from None
        except openai.APITimeoutError:
            raise LLMError("timed out", transient=True, kind="timeout") from None
        except openai.APIConnectionError as exc:
            raise LLMError(f"connection error: {exc}", transient=True, kind="connection") from None
        except openai.InternalServerError as exc:
            raise LLMError(f"server error {exc.status_code}", transient=True, kind=str(exc.status_code)) from None
        except openai.BadRequestError as exc:
            kind = "context_length" if "context_length" in str(exc.code or exc.message) else "400"
            raise LLMError(f"bad request: {exc.message}", transient=False, kind=kind) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMError(f"not authorized: {exc.message}", transient=False, kind="auth") from None
        except openai.NotFoundError as exc:  # no such model (or no such endpoint): the setting is wrong
            raise LLMError(f"not found: {exc.message}", transient=False, kind="model") from None
        except openai.APIStatusError as exc:
            transient = exc.status_code == 408 or exc.status_code >= 500
            raise LLMError(
                f"HTTP {exc.status_code}: {exc.message}", transient=transient, kind=str(exc.status_code)
            ) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as exc:
            raise LLMError(f"malformed response: {exc}", transient=True, kind="malformed") from None
        latency_ms = int((time.perf_counter() - started) * 1000)
        if not getattr(response, "choices", None) or response.choices[0].message is None:
            # no choices, or not a chat completion at all (a proxy's HTML error page parses as a str)
            raise LLMError("response without choices", transient=True, kind="malformed")
        # The answer is checked (cleaned, empty, JSON) by hnpal.llm.service.call, after its usage is recorded.
        text = response.choices[0].message.content or ""
        usage = response.usage
        return LLMResult(
            text=text,
            model=response.model or self.model,
            provider=self.name,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
        )
