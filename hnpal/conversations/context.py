"""What a discussion knows when it starts: the article, the top HN comments, the user's memory and
related past conversations, cut to a token budget.

:func:`load` reads the content store (through the process's reader) and PostgreSQL and returns a
:class:`Context`: the text that goes into the prompt, the parts the offline provider works from, and a
record of what was loaded (``conversations.context_loaded``). The same function rebuilds the Redis copy
(``context:{telegram_id}:{post_id}``) when it expired or Redis lost it, so a rebuild gives what the start
gave (as long as the store and the memory did not change in between).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.conversations.models import Conversation
from hnpal.llm.offline import STOPWORDS
from hnpal.llm.tokens import count_tokens, fit_to_tokens
from hnpal.memory.models import Memory
from hnpal.posts.models import Post
from hnpal.telegram.render import HN_ITEM

log = logging.getLogger(__name__)
# Shares of the token budget; what a part does not use goes to the article.
MEMORY_SHARE = 0.12
RELATED_SHARE = 0.10
COMMENTS_SHARE = 0.30
MEMORY_ITEMS = 40
COMMENT_CHARS = 1200
_WORD = re.compile(r"[a-z0-9][a-z0-9+#]{2,}")
MEMORY_LABELS = {
    "interest": "Interest",
    "preference": "Preference",
    "work_context": "Work",
    "personal_context": "Personal",
    "discussion_note": "Earlier discussion",
    "fact": "Fact",
    "opinion": "Opinion",
    "connection": "Connection",
}


@dataclass
class Context:
    text: str
    title: str
    hn_id: int
    article: str = ""
    comments: list[dict[str, Any]] = field(default_factory=list)
    memory: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)
    loaded: dict[str, Any] = field(default_factory=dict)
    # [name, text] of each data block of the prompt, in order (the text is untrusted: fenced at prompt time)
    blocks: list[list[str]] = field(default_factory=list)

    def to_cache(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> Context | None:
        try:
            return cls(**{k: value[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


def keywords(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def _reader() -> Any:
    try:
        from hnpal.content.host import reader

        return reader()
    except Exception as exc:  # noqa: BLE001 - no store (yet) on this host: the discussion goes on without it
        log.warning("content store unavailable for a discussion: %s", exc)
        return None


def _article_and_comments(post: Post, store: Any) -> tuple[str, list[dict[str, Any]]]:
    if store is None:
        return "", []
    article = ""
    comments: list[dict[str, Any]] = []
    try:
        if post.has_markdown or post.has_text:
            article = store.get_text(post.hn_id, "markdown" if post.has_markdown else "text") or ""
        # the submitter's own words on a post with a URL (a Show HN's text), before the article
        own = store.get_text(post.hn_id, "hn_text") if getattr(post, "has_hn_text", False) else None
        if own:
            article = f"The submitter wrote:\n{own}" + (f"\n\nThe linked article:\n{article}" if article else "")
        if post.comments_fetched_at is not None:
            raw = store.get_text(post.hn_id, "comments")
            if raw:
                comments = [c for c in (json.loads(raw).get("comments") or []) if c.get("text")]
    except (ValueError, AttributeError) as exc:
        log.warning("content of post %s unreadable for a discussion: %s", post.hn_id, exc)
    except Exception as exc:  # noqa: BLE001 - a store error means "not available", said in the header
        log.warning("content store read for post %s failed: %s", post.hn_id, exc)
    return article, comments


def _memory(session: Session, user_id: int) -> list[Memory]:
    return list(
        session.scalars(
            select(Memory)
            .where(Memory.user_id == user_id, Memory.active)
            .order_by(Memory.confidence.desc(), Memory.updated_at.desc())
            .limit(MEMORY_ITEMS)
        )
    )


def _related(
    session: Session, *, user_id: int, post: Post, interests: list[str], exclude: int | None, limit: int
) -> list[tuple[int, str]]:
    """(conversation id, what it was about) for the user's past conversations that share keywords of
    this post's title or the user's interests, best overlap first, then the most recent."""
    if limit <= 0:
        return []
    wanted = keywords(post.title) | {w for i in interests for w in keywords(i)}
    if not wanted:
        return []
    forgotten = (
        select(Memory.id)
        .where(Memory.source_conversation_id == Conversation.id, Memory.user_id == user_id, ~Memory.active)
        .exists()
    )
    rows = session.execute(
        select(
            Conversation.id,
            Conversation.summary,
            Conversation.messages[0]["content"].astext.label("first"),  # not the whole talk: it may be large
            Post.title,
            Post.hn_id,
        )
        .join(Post, Post.id == Conversation.post_id)
        .where(Conversation.user_id == user_id, Conversation.post_id != post.id)
        .where(Conversation.id != exclude if exclude is not None else true())
        .where(~forgotten)  # the user forgot something learned from it: its words go nowhere again
        .order_by(Conversation.started_at.desc())
        .limit(100)
    ).all()
    notes = dict(
        session.execute(
            select(Memory.source_conversation_id, Memory.content).where(
                Memory.user_id == user_id,
                Memory.active,
                Memory.type == "discussion_note",
                Memory.source_conversation_id.in_([r.id for r in rows] or [0]),
            )
        ).all()
    )
    scored = []
    for order, row in enumerate(rows):
        overlap = len(keywords(row.title) & wanted)
        if overlap == 0:
            continue
        about = notes.get(row.id) or row.summary
        if not about:
            about = f"The user asked: {row.first[:300]}" if row.first else ""
        if not about:
            continue
        scored.append((-overlap, order, row.id, f"“{row.title}” (HN {row.hn_id}): {about[:800]}"))
    scored.sort()
    return [(cid, text) for _o, _r, cid, text in scored[:limit]]


def stale(*, session: Session, user_id: int, context: Context) -> bool:
    """Whether ``context`` carries something the user has since forgotten: a memory item no longer active,
    or a past conversation that is gone or had an item forgotten (``/memory forget``, ``/memory clear``)."""
    memory_ids = [int(i) for i in ((context.loaded.get("memory") or {}).get("ids") or [])]
    related_ids = [int(i) for i in ((context.loaded.get("related") or {}).get("conversation_ids") or [])]
    if not memory_ids and not related_ids:
        return False
    memory_kept = (
        select(Memory.id).where(Memory.id.in_(memory_ids), Memory.user_id == user_id, Memory.active).subquery()
    )
    related_kept = (
        select(Conversation.id)
        .where(Conversation.id.in_(related_ids), Conversation.user_id == user_id)
        .where(~select(Memory.id).where(Memory.source_conversation_id == Conversation.id, ~Memory.active).exists())
        .subquery()
    )
    still_memory, still_related = session.execute(
        select(select(func.count()).select_from(memory_kept).scalar_subquery(),
               select(func.count()).select_from(related_kept).scalar_subquery())
    ).one()  # fmt: skip
    return still_memory < len(set(memory_ids)) or still_related < len(set(related_ids))


def load(
    *,
    session: Session,
    user_id: int,
    post: Post,
    interests: list[str] | None = None,
    exclude_conversation: int | None = None,
    store: Any = None,
    settings: Settings | None = None,
) -> Context:
    """The context of a discussion of ``post`` for the user, within the token budget."""
    settings = settings or get_settings()
    model = settings.openai_model
    budget = settings.discussion_context_tokens
    if store is None:
        store = _reader()
    article, comments = _article_and_comments(post, store)
    comments = comments[: settings.discussion_comments]
    memory_rows = _memory(session, user_id)
    related = _related(
        session, user_id=user_id, post=post, interests=list(interests or []), exclude=exclude_conversation,
        limit=settings.discussion_related,
    )  # fmt: skip

    header = f"# {post.title}\nHN: {HN_ITEM.format(post.hn_id)}" + (f"\nURL: {post.url}" if post.url else "")
    used = count_tokens(header, model)

    def take(lines: list[str], limit: int) -> tuple[list[str], int, bool]:
        kept: list[str] = []
        total = 0
        for line in lines:
            n = count_tokens(line, model) + 1
            if total + n > limit:
                return kept, total, True
            kept.append(line)
            total += n
        return kept, total, False

    memory_lines = [f"- {MEMORY_LABELS.get(m.type, m.type)}: {m.content[:500]}" for m in memory_rows]
    memory_kept, memory_tokens, memory_cut = take(memory_lines, int(budget * MEMORY_SHARE))
    related_lines = [f"- {text}" for _cid, text in related]
    related_kept, related_tokens, related_cut = take(related_lines, int(budget * RELATED_SHARE))
    comment_lines = [
        f"- [#{c.get('id')}] {c.get('by') or 'anon'}: {' '.join(str(c['text']).split())[:COMMENT_CHARS]}"
        for c in comments
    ]
    comments_kept, comments_tokens, comments_cut = take(comment_lines, int(budget * COMMENTS_SHARE))
    article_budget = max(0, budget - used - memory_tokens - related_tokens - comments_tokens)
    article_text, article_tokens = fit_to_tokens(article, article_budget, model) if article else ("", 0)
    article_cut = bool(article) and article_tokens > article_budget

    sections = [header]
    blocks = [["POST", header.removeprefix("# ")]]
    if article_text:
        sections.append("## The article" + (" (cut)" if article_cut else "") + f"\n{article_text}")
        blocks.append(["ARTICLE" + (" (cut to fit)" if article_cut else ""), article_text])
    else:
        sections.append("## The article\n(not available: rely on the title and the HN thread)")
        blocks.append(["ARTICLE", "(not available: rely on the title and the HN thread)"])
    if comments_kept:
        sections.append("## Top HN comments\n" + "\n".join(comments_kept))
        blocks.append(["TOP HN COMMENTS", "\n".join(comments_kept)])
    if memory_kept:
        sections.append("## What you remember about the user\n" + "\n".join(memory_kept))
        blocks.append(["WHAT YOU REMEMBER ABOUT THE USER", "\n".join(memory_kept)])
    if related_kept:
        sections.append("## The user's related past conversations\n" + "\n".join(related_kept))
        blocks.append(["THE USER'S RELATED PAST CONVERSATIONS", "\n".join(related_kept)])
    text = "\n\n".join(sections)
    memory_ids = [m.id for m in memory_rows[: len(memory_kept)]]
    related_ids = [cid for cid, _ in related[: len(related_kept)]]
    loaded = {
        "budget_tokens": budget,
        "tokens": count_tokens(text, model),
        "article": {
            "loaded": bool(article_text),
            # the post has content but this process could not open the store: not worth caching
            "store_unavailable": store is None and bool(post.has_markdown or post.has_text or post.comments_fetched_at),
            "tokens": min(article_tokens, article_budget) if article_text else 0,
            "source_tokens": article_tokens,
            "words": len(article.split()),
            "truncated": article_cut,
        },
        "comments": {"count": len(comments_kept), "available": len(comments), "tokens": comments_tokens,
                     "truncated": comments_cut},
        "memory": {"count": len(memory_kept), "ids": memory_ids, "tokens": memory_tokens, "truncated": memory_cut},
        "related": {"count": len(related_kept), "conversation_ids": related_ids, "tokens": related_tokens,
                    "truncated": related_cut},
    }  # fmt: skip
    return Context(
        text=text,
        title=post.title,
        hn_id=post.hn_id,
        article=article_text,
        comments=[{"id": c.get("id"), "text": str(c["text"])[:COMMENT_CHARS]} for c in comments[: len(comments_kept)]],
        memory=[m.content for m in memory_rows[: len(memory_kept)]],
        related=[text for _cid, text in related[: len(related_kept)]],
        loaded=loaded,
        blocks=blocks,
    )
