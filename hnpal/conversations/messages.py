"""Appending to a conversation's stored messages: one UPDATE that adds to the JSONB array (and, for an
answer, the conversation's token and cost totals), never past MAX_MESSAGES. Shared by the discussion
service and the human review of held answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, literal, update
from sqlalchemy.dialects.postgresql import JSONB

from hnpal.conversations.models import MAX_MESSAGES, Conversation
from hnpal.conversations.schemas import MAX_MESSAGE_CHARS, Message
from hnpal.llm import sanitize
from hnpal.llm.base import Spend


def append(messages: list[dict[str, Any]]) -> Any:
    """``messages || <these>``: the SQL expression that appends to the stored array."""
    return Conversation.messages.op("||")(literal(messages, JSONB))


def append_assistant_message(
    *, conn: Connection, conversation_id: int, text: str, reply_to: int, results: Sequence[Spend]
) -> bool:
    """Record an answer with its tokens and cost (and the conversation's totals) in one UPDATE; False
    when that message was answered already or the conversation is full."""
    input_tokens = sum(r.input_tokens for r in results)
    output_tokens = sum(r.output_tokens for r in results)
    cost = sum((r.cost_usd for r in results), Decimal(0))
    text = sanitize.clean_text(text, MAX_MESSAGE_CHARS) or "…"  # what was sent is stored, whatever made it
    message = {
        **Message(role="assistant", content=text, timestamp=datetime.now(UTC)).model_dump(mode="json"),
        "reply_to": reply_to,
        "model": results[-1].model if results else None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": str(cost),
    }
    done = conn.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            func.jsonb_array_length(Conversation.messages) < MAX_MESSAGES,
            ~Conversation.messages.contains([{"role": "assistant", "reply_to": reply_to}]),
        )
        .values(
            messages=append([message]),
            total_input_tokens=Conversation.total_input_tokens + input_tokens,
            total_output_tokens=Conversation.total_output_tokens + output_tokens,
            total_cost_usd=Conversation.total_cost_usd + cost,
            last_message_at=func.now(),
        )
        .returning(Conversation.id)
    ).scalar()
    return done is not None
