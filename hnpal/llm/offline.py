"""The offline provider: an extractive summarizer that needs no network and no key.

It ranks the article's own sentences (content-word frequency, a lead bonus, and a style bias: numbers
and technical terms for ``technical``, money and market words for ``business``, the reader's interests
for ``personalized``) and returns the best ones in article order, so every sentence of a summary comes
from the article body. Deterministic; zero cost; real token counts.

Other tasks (a discussion answer, a memory extraction) are answered by handlers that their own domain
registers with :func:`register` when its offline module is imported; this package imports no domain. The
domain service that builds such a request imports that module, so every process that can ask for the task
has its handler.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from hnpal.llm.base import LLMError, LLMRequest, LLMResult
from hnpal.llm.tokens import count_messages, count_tokens

MODEL = "offline-extractive"
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[a-z][a-z0-9+#'-]{1,}")
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just like may me might more most must
    my myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
    such than that the their theirs them themselves then there these they this those through to too under until
    up us very was we were what when where which while who whom why will with would you your yours yourself
    yourselves one two new many much even still yet get got make made says said way well""".split()
)
BOILERPLATE = re.compile(
    r"cookie|subscribe|sign up|sign in|log in|newsletter|all rights reserved|javascript|advertis|"
    r"share this|follow us|privacy policy|terms of (use|service)|click here|read more",
    re.IGNORECASE,
)
TECHNICAL = frozenset(
    """api latency throughput database index query kernel compiler runtime memory cache thread process cpu gpu
    protocol algorithm benchmark performance storage network server client library framework language type
    function code bug crash release version architecture model training inference tokens vector schema
    concurrency lock queue rust python go java javascript typescript sql postgres linux""".split()
)
BUSINESS = frozenset(
    """revenue profit cost costs price pricing customers customer market funding raised valuation startup
    company companies growth sales margin business investors acquisition billion million percent users
    subscription enterprise competitors strategy contract budget spend spending""".split()
)
SENTENCES_PER_STYLE = {"basic": 3, "technical": 3, "business": 3, "concise": 1, "personalized": 3}

Handler = Callable[[dict[str, Any]], str]
_HANDLERS: dict[str, Handler] = {}


def register(task: str, handler: Handler) -> None:
    """Answer requests whose ``hints["task"]`` is ``task`` with ``handler(hints)`` (the text returned).
    Registering the same task again replaces the handler (a re-imported module stays harmless)."""
    _HANDLERS[task] = handler


def split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    for paragraph in text.splitlines():  # extracted text and markdown keep one paragraph per line
        paragraph = " ".join(paragraph.split())
        if not paragraph or paragraph.startswith(("#", "|", "```")):
            continue
        sentences.extend(s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip())
    return sentences


def _usable(sentence: str) -> bool:
    words = sentence.split()
    return 6 <= len(words) <= 80 and not BOILERPLATE.search(sentence) and sentence[-1:] in ".!?\"')"


def content_words(sentence: str) -> list[str]:
    return [w for w in _WORD.findall(sentence.lower()) if w not in STOPWORDS]


def rank_sentences(text: str, *, style: str = "basic", interests: list[str] | None = None) -> list[tuple[int, str]]:
    """(position, sentence) pairs, best first."""
    sentences = [s for s in split_sentences(text) if _usable(s)]
    if not sentences:
        return []
    frequency = Counter(w for s in sentences for w in set(content_words(s)))
    interest_words = {w for phrase in interests or [] for w in content_words(phrase)}
    scored = []
    for position, sentence in enumerate(sentences):
        words = content_words(sentence)
        if not words:
            continue
        score = sum(math.log1p(frequency[w]) for w in words) / math.sqrt(len(words))
        score *= 1.0 + 0.6 / (1 + position)  # the lead usually says what the piece is about
        lowered = set(words)
        if style == "technical":
            score *= 1.0 + 0.35 * len(lowered & TECHNICAL) + (0.3 if re.search(r"\d", sentence) else 0.0)
        elif style == "business":
            score *= 1.0 + 0.45 * len(lowered & BUSINESS) + (0.4 if re.search(r"[$€£%]|\bpercent\b", sentence) else 0)
        elif style == "personalized" and interest_words:
            score *= 1.0 + 0.8 * len(lowered & interest_words)
        scored.append((score, position, sentence))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [(position, sentence) for _score, position, sentence in scored]


def summarize_text(text: str, *, style: str = "basic", interests: list[str] | None = None) -> str:
    ranked = rank_sentences(text, style=style, interests=interests)
    if not ranked:
        return ""
    keep = sorted(ranked[: SENTENCES_PER_STYLE.get(style, 3)])
    return " ".join(sentence for _position, sentence in keep)


def summarize_comments(comments: list[dict[str, Any]], *, limit: int = 4) -> str:
    """The main viewpoints of a thread: the most representative top-level comments, with ids cited."""
    usable = [c for c in comments if c.get("text")]
    if not usable:
        return ""
    frequency = Counter(w for c in usable for w in set(content_words(c["text"])))
    scored = []
    for order, comment in enumerate(usable):
        words = content_words(comment["text"])
        if len(words) < 4:
            continue
        score = sum(math.log1p(frequency[w]) for w in set(words)) / math.sqrt(len(set(words)))
        score *= 1.0 + 0.5 / (1 + comment.get("depth", 0)) + 0.3 / (1 + order)
        scored.append((score, order, comment))
    scored.sort(key=lambda item: (-item[0], item[1]))
    lines = []
    for _score, _order, comment in sorted(scored[:limit], key=lambda item: item[1]):
        first = next((s for s in split_sentences(comment["text"]) if len(s.split()) >= 4), comment["text"])
        if len(first) > 240:
            first = first[:237].rsplit(" ", 1)[0] + "..."
        lines.append(f"- {first} [#{comment['id']}]")
    return "\n".join(lines)


class OfflineProvider:
    name = "offline"
    model = MODEL

    def complete(self, request: LLMRequest) -> LLMResult:
        started = time.perf_counter()
        hints = request.hints
        task = hints.get("task", "summary")
        handler = _HANDLERS.get(task)
        if handler is not None:
            return self._result(request, handler(hints), started)
        if request.json_schema is not None and task not in ("summary", "comments"):
            raise LLMError(f"the offline provider has no handler for {task!r}", transient=False, kind="unsupported")
        if task == "comments":
            text = summarize_comments(hints.get("comments") or [])
        else:
            text = summarize_text(
                hints.get("source_text") or "", style=hints.get("style", "basic"), interests=hints.get("interests")
            )
        if not text:
            text = hints.get("fallback") or ""
        if not text:
            raise LLMError("nothing to summarize", transient=False, kind="empty_input")
        prefix = hints.get("prefix")
        if prefix:
            text = f"{prefix} {text}"
        return self._result(request, text, started)

    def _result(self, request: LLMRequest, text: str, started: float) -> LLMResult:
        return LLMResult(
            text=text,
            model=MODEL,
            provider=self.name,
            input_tokens=count_messages(request.messages, MODEL),
            output_tokens=count_tokens(text, MODEL),
            latency_ms=int((time.perf_counter() - started) * 1000),
        )
