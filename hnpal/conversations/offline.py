"""Discussion answers without a model (the offline provider's ``discussion`` and ``fold`` tasks).

An honest extractive answer: the sentences of the article and the comments that share the most content
words with the question (weighted by how rare the word is in the material), said to be quoted, with the
comment ids cited. When nothing matches, it says so and gives the article's lead instead. ``fold``
condenses older turns into a running summary: the earlier summary, then one line per turn.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hnpal.llm.offline import content_words, register, split_sentences

INTRO = "(Offline answer: no language model is reachable, so here is what the material itself says.)"
MAX_QUOTES = 3
FOLD_LINE_CHARS = 220
FOLD_MAX_CHARS = 5000


def _candidates(hints: dict[str, Any]) -> list[tuple[str, str]]:
    """(source label, sentence) pairs from the article and the comments."""
    found = [("article", s) for s in split_sentences(hints.get("article") or "") if 4 <= len(s.split()) <= 80]
    for comment in hints.get("comments") or []:
        for sentence in split_sentences(str(comment.get("text") or "")):
            if 4 <= len(sentence.split()) <= 80:
                found.append((f"comment #{comment.get('id')}", sentence))
    return found


def answer(hints: dict[str, Any]) -> str:
    question = str(hints.get("question") or "")
    title = str(hints.get("title") or "")
    wanted = set(content_words(question))
    candidates = _candidates(hints)
    if not candidates:
        if hints.get("idle"):
            return (
                f"{INTRO}\nI can answer questions about a post best: tap 💬 Discuss under one, or send /discuss HN_ID."
            )
        return (
            f"{INTRO}\nI have neither the article nor its comments for “{title}”, so I can't answer "
            "from them. Open the HN discussion, or try again later."
        )
    frequency = Counter(w for _src, s in candidates for w in set(content_words(s)))
    scored = []
    for order, (source, sentence) in enumerate(candidates):
        words = set(content_words(sentence))
        overlap = words & wanted
        if not overlap:
            continue
        score = sum(1.0 / math.log1p(frequency[w] + 1) for w in overlap) / math.sqrt(len(words) or 1)
        scored.append((score, order, source, sentence))
    scored.sort(key=lambda item: (-item[0], item[1]))
    if not scored:
        lead = [s for src, s in candidates if src == "article"][:2] or [candidates[0][1]]
        return (
            f"{INTRO}\nThe article and the thread don't seem to address that directly. "
            f"What “{title}” is mainly about:\n" + "\n".join(f"• {s}" for s in lead)
        )
    quotes = sorted(scored[:MAX_QUOTES], key=lambda item: item[1])
    lines = [f"• {sentence} ({source})" for _score, _order, source, sentence in quotes]
    return f"{INTRO}\nOn “{question[:120]}”, the most relevant passages:\n" + "\n".join(lines)


def fold(hints: dict[str, Any]) -> str:
    """The earlier summary plus one short line per folded turn, kept within FOLD_MAX_CHARS (oldest
    lines give way first)."""
    lines = []
    for message in hints.get("messages") or []:
        content = " ".join(str(message.get("content") or "").split())
        first = next(iter(split_sentences(content)), content)
        if len(first) > FOLD_LINE_CHARS:
            first = first[: FOLD_LINE_CHARS - 1].rsplit(" ", 1)[0] + "…"
        who = "HN Pal" if message.get("role") == "assistant" else "User"
        lines.append(f"{who}: {first}")
    previous = str(hints.get("summary") or "").strip()
    text = "\n".join(([previous] if previous else []) + lines)
    while len(text) > FOLD_MAX_CHARS and "\n" in text:
        text = text.split("\n", 1)[1]
    return text[-FOLD_MAX_CHARS:]


register("discussion", answer)
register("fold", fold)
