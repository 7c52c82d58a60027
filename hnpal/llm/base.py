"""What every provider takes and returns, and how failures are told apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from hnpal.errors import HNPalError


@dataclass(frozen=True)
class LLMRequest:
    messages: list[dict[str, str]]
    max_tokens: int = 400
    temperature: float = 0.2
    json_schema: dict[str, Any] | None = None  # structured output: the answer must validate against it
    schema_name: str = "answer"
    # what the offline provider needs to do its job without a model
    hints: dict[str, Any] = field(default_factory=dict)


class Spend(Protocol):
    """What one model call cost: an LLMResult, or a stored draft's figures."""

    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cost_usd(self) -> Decimal: ...


@dataclass(frozen=True)
class LLMResult:
    text: str
    model: str
    provider: str  # openai | offline
    input_tokens: int
    output_tokens: int
    latency_ms: int
    cost_usd: Decimal = Decimal(0)
    # why the offline provider answered a call meant for the paid one: "auth" (the key is refused),
    # "budget" (the day's budget is spent); empty otherwise
    fallback: str = ""


class LLMError(HNPalError):
    """A failed call. ``transient`` errors are retried; the rest are recorded and not retried."""

    def __init__(
        self, message: str, *, transient: bool, retry_after: float | None = None, kind: str = "",
        answer: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.kind = kind
        self.answer = answer  # a malformed answer's (cleaned) text, cut: for an operator to read


class Provider(Protocol):
    name: str
    model: str

    def complete(self, request: LLMRequest) -> LLMResult: ...
