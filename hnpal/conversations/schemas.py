"""Validated conversation data (≤ 1000 messages, each ≤ 10,000 characters, role enum)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hnpal.conversations.models import MAX_MESSAGES

MAX_MESSAGE_CHARS = 10_000


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)
    timestamp: datetime


class ConversationCreate(BaseModel):
    user_id: int = Field(gt=0)
    post_id: int = Field(gt=0)
    agent_model: str = Field(default="gpt-4o-mini", min_length=1, max_length=50)


class ConversationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    post_id: int
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    total_input_tokens: int = Field(default=0, ge=0)
    total_output_tokens: int = Field(default=0, ge=0)
    total_cost_usd: Decimal = Field(default=Decimal(0), ge=0)
    agent_model: str | None = None
    context_loaded: dict | None = None
    started_at: datetime
    ended_at: datetime | None = None
    last_message_at: datetime


class ConversationAppend(BaseModel):
    """One new message with the cost of producing it."""

    message: Message
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: Decimal = Field(ge=0)
