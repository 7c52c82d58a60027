"""Validated LLM accounting records."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AgentCallCreate(BaseModel):
    user_id: int | None = Field(default=None, gt=0)
    agent_type: str = Field(min_length=1, max_length=50)
    model: str = Field(min_length=1, max_length=50)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: Decimal = Field(ge=0)
    latency_ms: int = Field(ge=0)
    langfuse_trace_id: str | None = Field(default=None, max_length=255)
    conversation_id: int | None = Field(default=None, gt=0)
    success: bool = True
    error_message: str | None = None

    @model_validator(mode="after")
    def _error_when_failed(self) -> AgentCallCreate:
        if not self.success and not self.error_message:
            raise ValueError("a failed call needs an error_message")
        return self


class AgentCallRead(AgentCallCreate):
    model_config = ConfigDict(from_attributes=True)

    id: int
    called_at: datetime


class TokenUsageSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    date: date
    total_input_tokens: int = Field(ge=0)
    total_output_tokens: int = Field(ge=0)
    total_cost_usd: Decimal = Field(ge=0)
    summarization_tokens: int = Field(ge=0)
    discussion_tokens: int = Field(ge=0)
    memory_extraction_tokens: int = Field(ge=0)
