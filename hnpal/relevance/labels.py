"""What the configured model says a post is about: asked once per post, when it is summarized, with a key.

The offline topic model reads a title and a host, and misses what only knowing a name tells ("PlusCal
Tutorial" is formal methods; docs/performance.md has the misses). When an OpenAI-compatible model is
configured and ``HNPAL_LLM_TOPICS`` is on, the summarization of a post's default summary also asks it, in
one short call, which of the offline model's topics the post is about (at most three, the most important
first), from its title, its host and the start of what the summary read. Every post is asked, those below
the paid tier too (whose summary the offline summarizer makes): the question costs about a fortieth of a
paid summary, and the posts a reader's interests bring are seldom the day's best-rated.

The answer is untrusted data: only topics of the list are kept (each once, at most three, in the answer's
order); anything else is dropped, and an answer with no usable list counts as "none fits". The post's text
goes in a fenced data block (``hnpal.llm.sanitize``), never among the instructions. The topics are stored
in ``posts.llm_topics`` and blended into the post's topics (``hnpal.relevance.service.BLENDED``: the first
choice weighs at least ``LLM_WEIGHT``, the next ones 0.8 and 0.6 of it); a new offline model's
recomputation keeps them.

The call is accounted like every call (``agent_calls``: purpose ``topics``, the post's id) and held
against the daily budget. Without a key, with the key refused, past the budget or when the call fails, the
post keeps the offline model's topics: nothing is lost, and no retry is scheduled (the topics are an
improvement, never a requirement of a digest); the question comes again only if the post's default
summary is made again (re-made with the model once the key works, or for a grown thread).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT

from config.settings import Settings
from hnpal.llm import health, sanitize
from hnpal.llm import service as llm
from hnpal.llm.base import LLMError, LLMRequest
from hnpal.llm.offline import register
from hnpal.llm.tokens import truncate_to_tokens
from hnpal.relevance.features import host_of
from hnpal.relevance.model import topic_name, topic_names
from hnpal.relevance.service import BLEND_PARAMS, BLENDED

log = logging.getLogger(__name__)
MAX_CHOSEN = 3
TEXT_TOKENS = 250  # of what the summary read: enough to say what a post is about
ATTEMPTS = 2  # at most, whatever HNPAL_LLM_ATTEMPTS says: the topics are not worth holding a summary task for
PURPOSE = "topics"
BASES = {"article": "Start of the article", "post_text": "Start of the post's text",
         "title_and_comments": "Start of the discussion"}  # fmt: skip

SYSTEM = """You say what a Hacker News post is about, for readers who follow topics.
From the topics below, choose the ones the post is mainly about: at most three, the most important first,
each as the tag written before its name. Choose none when none fits; do not guess from a single word.
Answer in JSON: {{"topics": [tags]}}.

Topics (tag, and its name where the tag does not say it): {topics}"""


def _listing() -> str:
    shown = []
    for tag in topic_names():
        name = topic_name(tag)
        shown.append(tag if name.casefold() == tag.casefold() else f"{tag} ({name})")
    return ", ".join(shown)


def schema() -> dict[str, Any]:
    """The structured answer: a list of tags of the offline model's topics (the length is cut here:
    strict structured outputs accept no maxItems)."""
    return {
        "type": "object",
        "properties": {"topics": {"type": "array", "items": {"type": "string", "enum": list(topic_names())}}},
        "required": ["topics"],
        "additionalProperties": False,
    }


def request(*, title: str, url: str | None, domain: str | None, material: str, basis: str) -> LLMRequest:
    marker = sanitize.new_marker()
    host = host_of(url, domain)
    body = f"Title: {title}\n" + (f"Site: {host}\n" if host else "Site: none (a text post on Hacker News)\n")
    if material.strip():
        body += f"\n{BASES.get(basis, 'Text')}:\n{truncate_to_tokens(material, TEXT_TOKENS)}"
    return LLMRequest(
        messages=[
            {"role": "system", "content": f"{SYSTEM.format(topics=_listing())}\n\n{sanitize.data_rules(marker)}"},
            {"role": "user", "content": sanitize.data_block("POST", body, marker)},
        ],
        max_tokens=60,
        temperature=0.0,
        json_schema=schema(),
        schema_name="post_topics",
        hints={"task": PURPOSE},
    )


def chosen(answer: str) -> list[str]:
    """The topics of an (untrusted) answer: tags of the list only, each once, at most MAX_CHOSEN, in order."""
    try:
        data = json.loads(answer)
    except ValueError:
        return []
    items = data.get("topics") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    known = set(topic_names())
    out: list[str] = []
    for item in items:
        tag = item.strip().lower() if isinstance(item, str) else None
        if tag in known and tag not in out:
            out.append(tag)
        if len(out) == MAX_CHOSEN:
            break
    return out


# Once per post (llm_topics IS NULL). A post whose topics the offline model has not computed yet keeps them
# NULL (its classification blends these in); one that has them gets the blend now. Two statements: each
# reads the row it writes, so a classification running at the same time cannot undo either.
_STORE_ALONE = text(
    "UPDATE posts SET llm_topics = :chosen WHERE id = :id AND llm_topics IS NULL AND topics IS NULL"
).bindparams(bindparam("chosen", type_=ARRAY(TEXT)))
_STORE_BLENDED = text(
    f"""
    UPDATE posts p SET llm_topics = :chosen,
                       {BLENDED.format(topics="p.topics", weights="p.topic_weights", llm="CAST(:chosen AS text[])")}
    WHERE p.id = :id AND p.llm_topics IS NULL AND p.topics IS NOT NULL
    """  # noqa: S608 - this module's constant SQL only
).bindparams(bindparam("chosen", type_=ARRAY(TEXT)))


def label(
    *,
    post_id: int,
    title: str,
    url: str | None,
    domain: str | None,
    material: str,
    basis: str,
    settings: Settings,
    connection: Connection,
) -> list[str] | None:
    """Ask the configured model what the post is about and store it (see the module docstring); the
    caller's autocommit ``connection`` writes the accounting and the topics. Returns the topics stored,
    or None when the model was not asked (off, no key, key refused, budget spent) or the call failed."""
    if not settings.llm_topics:
        return None
    provider = llm.paid_provider(settings)
    # llm.call would hand a refused key or a spent budget to the offline provider, whose answer is no label:
    # not asking at all saves that call and its accounting row
    if provider is None or not health.usable(settings) or not llm.budget_left(settings):
        return None
    ask = request(title=title, url=url, domain=domain, material=material, basis=basis)
    brief = settings.model_copy(update={"llm_attempts": min(settings.llm_attempts, ATTEMPTS)})
    try:
        result = llm.call(
            ask, provider=provider, agent_type="summarization", post_id=post_id, purpose=PURPOSE, settings=brief,
            connection=connection,
        )  # fmt: skip
    except LLMError as exc:
        log.warning("post %s keeps the offline model's topics: the model's labels failed (%s)", post_id, exc)
        return None
    if result.provider == "offline":  # the budget ran out or the key was refused meanwhile
        return None
    topics = chosen(result.text)
    connection.execute(_STORE_ALONE, {"id": post_id, "chosen": topics})
    connection.execute(_STORE_BLENDED, {"id": post_id, "chosen": topics, **BLEND_PARAMS})
    log.info("post %s: the model says %s", post_id, ", ".join(topics) or "no topic of the list")
    return topics


# The offline provider answers only when the paid call falls back (budget, refused key): "asked nobody",
# which label() ignores.
register(PURPOSE, lambda hints: json.dumps({"topics": []}))
