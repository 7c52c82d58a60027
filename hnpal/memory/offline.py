"""Memory extraction without a model: the offline provider's heuristics (``hints["task"] ==
"memory_extraction"``).

From what the user wrote in a discussion (never from the assistant's replies: those are not facts
about the user) it finds

* ``interest`` items: topics of a known vocabulary, and the post title's own keywords, that the user
  mentioned (confidence grows with the number of mentions);
* ``work_context`` / ``preference`` items from plain first-person phrases ("I work on ...",
  "I prefer ...");
* one ``discussion_note``: what the user asked, in their own words (their first questions, shortened),
  or what they said when they asked nothing.

The answer is JSON that validates against :data:`hnpal.memory.service.EXTRACTION_SCHEMA`, so the
service treats it exactly like a model's answer. Deterministic.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hnpal.llm.offline import STOPWORDS, register

# Topics worth remembering as interests when the user brings them up (the onboarding topics and more).
VOCABULARY = (
    "AI", "LLM", "Machine learning", "Programming", "Rust", "Python", "Go", "JavaScript", "TypeScript", "Java",
    "C++", "Haskell", "Elixir", "Zig", "WebAssembly", "Databases", "PostgreSQL", "SQLite", "Security",
    "Privacy", "Cryptography", "Linux", "Open source", "Startups", "Hardware", "Science", "Space", "Web",
    "Cloud", "Kubernetes", "Distributed systems", "Compilers", "Operating systems", "Networking", "Robotics",
    "Climate", "Energy", "Economics", "Design", "Gaming", "Math", "Physics", "Biology",
)  # fmt: skip
# Words of HN titles that say nothing about a topic.
TITLE_NOISE = frozenset(
    """show ask tell launch launched introducing announcing release released why how what guide using use
    built build building first years year day days week part via better best faster slower toward towards
    against without people thing things time good bad""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#.-]*[A-Za-z0-9+#]|[A-Za-z]")
_WORK = re.compile(r"\bI(?:'m| am)? (?:work(?:ing)?|employed) (at|on|with|in|as) ([^.,;:!?\n]{2,80})", re.IGNORECASE)
_PREFER = re.compile(r"\bI (?:really )?(?:prefer|love|like|enjoy) ([^.,;:!?\n]{3,80})", re.IGNORECASE)
_NOTE_QUOTES = 2
_NOTE_QUOTE_CHARS = 120


def _mentions(text: str, phrase: str) -> int:
    """How often ``phrase`` occurs in ``text`` as whole words (plural allowed). Case-insensitive, except
    for two-letter phrases: "Go" and "AI" are names, "go" is a verb."""
    pattern = r"(?<![A-Za-z0-9])" + re.escape(phrase) + r"(?:s|es)?(?![A-Za-z0-9+#])"
    return len(re.findall(pattern, text, flags=0 if len(phrase) <= 2 else re.IGNORECASE))


def _title_keywords(title: str) -> list[str]:
    words = []
    for word in _WORD.findall(title):
        low = word.casefold()
        if low in STOPWORDS or low in TITLE_NOISE or low.isdigit():
            continue
        if len(word) < 3 and not (word.isupper() and len(word) >= 2):
            continue
        if word[0].isupper() or word.isupper() or any(c in word for c in "+#"):  # names and terms, not verbs
            words.append(word)
    return list(dict.fromkeys(words))


def _confidence(mentions: int) -> float:
    return min(0.95, 0.55 + 0.15 * mentions)


def extract(hints: dict[str, Any]) -> str:
    """The extraction as JSON text: ``{"items": [{"type", "content", "confidence"}, ...]}``."""
    texts = [str(t) for t in hints.get("user_messages") or [] if str(t).strip()]
    said = "\n".join(texts)
    title = str(hints.get("title") or "")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(kind: str, content: str, confidence: float) -> None:
        content = " ".join(content.split())[:300]
        key = f"{kind}:{content.casefold()}"
        if content and key not in seen:
            seen.add(key)
            items.append({"type": kind, "content": content, "confidence": round(confidence, 2)})

    vocabulary = list(dict.fromkeys([*VOCABULARY, *(str(v) for v in hints.get("vocabulary") or [])]))
    for phrase in [*vocabulary, *_title_keywords(title)]:
        count = _mentions(said, phrase)
        if count:
            add("interest", phrase, _confidence(count))
    for match in _WORK.finditer(said):
        add("work_context", f"Works {match.group(1).lower()} {match.group(2).strip()}", 0.8)
    for match in _PREFER.finditer(said):
        add("preference", f"Likes {match.group(1).strip()}", 0.7)

    note = _note(texts)
    if note:
        add("discussion_note", note, 0.9)
    return json.dumps({"items": items}, ensure_ascii=False)


_QUESTION = re.compile(r"[^.!?\n]*\?")


def _note(texts: list[str]) -> str:
    """The user's own words: their first two questions (or, without one, their first message), quoted."""
    questions = [" ".join(q.split()) for text in texts for q in _QUESTION.findall(text) if len(q.split()) >= 2]
    quoted = questions[:_NOTE_QUOTES] or [" ".join(texts[0].split())] if texts else []
    if not quoted:
        return ""
    parts = "; ".join(f"“{_shorten(q, _NOTE_QUOTE_CHARS)}”" for q in quoted)
    return f"{'Asked' if questions else 'Said'}: {parts}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


register("memory_extraction", extract)
