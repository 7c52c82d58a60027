"""Summaries: one per (post, style, variant), generated once and shared by every user.

"Generated once" holds under concurrent requests and redelivered tasks: the work for one (post, style,
variant) runs under a PostgreSQL advisory lock (others back off and find the row when they retry), the
row is re-checked under the lock, and UNIQUE(post_id, style, variant) is the last guard. So LLM spend
grows with posts x styles, never with users.

Honest summaries: what a summary was made from is recorded (``basis``). When the article is missing,
paywalled or unusable, the summary says it comes from the title and comments only. Ask HN / Show HN
posts without a URL are summarized from their own text and the discussion.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from sqlalchemy import ColumnElement, Connection, Executable, and_, case, false, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from config.settings import Settings, get_settings
from hnpal.db.session import get_engine, session_scope
from hnpal.errors import Busy
from hnpal.llm import health, sanitize
from hnpal.llm import service as llm
from hnpal.llm.base import LLMError, LLMRequest, LLMResult, Provider
from hnpal.llm.tokens import fit_to_tokens, split_by_tokens, truncate_to_tokens
from hnpal.posts.models import MAX_SUMMARY_ATTEMPTS, Post
from hnpal.relevance import labels
from hnpal.review import service as review
from hnpal.summaries.models import SUMMARY_STYLES, THREAD_BASES, Summary
from hnpal.summaries.plain import plain_text

log = logging.getLogger(__name__)
TITLE_ONLY_PREFIX = "Summary from title and comments only (the article could not be read):"
# A post with no URL and no text (a title-only Ask HN, a poll without text): its thread is its substance.
NO_TEXT_PREFIX = "Summary from title and comments only (the post has no text of its own):"
PAYWALL = re.compile(
    r"subscribe to (continue|read)|to continue reading|already a subscriber|subscribers only|"
    r"create a free account to|sign in to (continue|read)|this content is for members",
    re.IGNORECASE,
)
MIN_ARTICLE_WORDS = 80
MAP_REDUCE_FACTOR = 3  # articles over this many times the input budget are summarized in parts first
MAX_ATTEMPTS = MAX_SUMMARY_ATTEMPTS  # failed runs of a post's default summary after which the sweep stops


@dataclass
class Material:
    basis: str  # article | post_text | title_and_comments | comments
    text: str
    comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    post_id: int
    style: str
    variant: str
    status: str  # generated | existing | refreshed | upgraded | skipped
    summary_id: int | None = None
    provider: str | None = None


@functools.cache
def prompt(style: str) -> str:
    return resources.files("hnpal.summaries").joinpath("prompts", f"{style}.md").read_text(encoding="utf-8").strip()


def interest_variant(interests: list[str] | None) -> str:
    """The cache key of a personalized summary: a hash of the normalized interest set."""
    normalized = sorted({" ".join(i.lower().split()) for i in interests or [] if i.strip()})
    if not normalized:
        return "none"
    return hashlib.sha256(json.dumps(normalized).encode()).hexdigest()[:32]


def _lock_key(post_id: int, style: str, variant: str) -> tuple[int, int]:
    return post_id, zlib.crc32(f"{style}:{variant}".encode()) & 0x7FFFFFFF


def usable_article(text: str | None) -> bool:
    if not text:
        return False
    words = text.split()
    if len(words) < MIN_ARTICLE_WORDS:
        return False
    return not (len(words) < 400 and PAYWALL.search(text))


def load_material(post: Post, store: Any) -> Material:
    comments: list[dict[str, Any]] = []
    # Read only what the flags say exists: a reader's miss makes RocksDB catch up with the writer.
    raw_comments = store.get_text(post.hn_id, "comments") if store is not None and post.comments_fetched_at else None
    if raw_comments:
        try:
            comments = json.loads(raw_comments).get("comments") or []
        except (ValueError, AttributeError):
            log.warning("comments of post %s are not valid JSON; ignored", post.id)
    article = None
    if store is not None and (post.has_markdown or post.has_text):
        article = store.get_text(post.hn_id, "markdown" if post.has_markdown else "text")
    # The submitter's own text of a post with a URL (a Show HN's words), read beside the article.
    own = store.get_text(post.hn_id, "hn_text") if store is not None and post.has_hn_text else None
    if post.url is None and article:
        return Material("post_text", article, comments)
    if usable_article(article):
        if own:
            return Material("article", f"{own}\n\n{article}", comments)
        return Material("article", article or "", comments)
    if own:  # the article is unreadable: the submitter's words say what the link is
        return Material("post_text", own, comments)
    thread = "\n\n".join(c["text"] for c in comments[:30] if c.get("text"))
    return Material("title_and_comments", thread, comments)


def _prefix(post: Post) -> str:
    return NO_TEXT_PREFIX if post.url is None else TITLE_ONLY_PREFIX


def wants_model(post: Post, settings: Settings) -> bool:
    """Whether the post's summaries are meant for the paid model (a key, and a score at the tier)."""
    return settings.openai_api_key is not None and post.score >= settings.llm_paid_min_score


def choose_provider(post: Post, settings: Settings) -> Provider:
    """The paid model for posts above the score tier while the daily budget lasts and the key is
    accepted; offline otherwise."""
    paid = llm.paid_provider(settings)
    if paid is None or post.score < settings.llm_paid_min_score:
        return llm.offline_provider()
    if not health.usable(settings) or not llm.budget_left(settings):
        return llm.offline_provider()
    return paid


def _request(
    post: Post,
    style: str,
    material: Material,
    provider: Provider,
    interests: list[str] | None,
    settings: Settings,
) -> tuple[LLMRequest, list[LLMRequest]]:
    """The final request, and the map requests to run first when the article is very long."""
    marker = sanitize.new_marker()
    system = f"{prompt(style)}\n\n{sanitize.data_rules(marker)}"
    budget = settings.summary_input_tokens
    source = material.text
    source_tokens = 0
    header = f"Title: {post.title}\n" + (f"URL: {post.url}\n" if post.url else "")
    if style == "comments":
        thread = "\n".join(f"[#{c['id']}] {c.get('by') or 'anon'}: {c['text']}" for c in material.comments)
        body = header + "\nComment thread:\n" + truncate_to_tokens(thread, budget, provider.model)
    elif material.basis == "title_and_comments":
        missing = "The post has no text of its own." if post.url is None else "The article could not be read."
        body = header + f"\n{missing} Comments:\n" + truncate_to_tokens(source, budget)
    elif material.basis == "post_text":
        thread = "\n".join(f"- {c['text']}" for c in material.comments[:20])
        body = header + "\nPost text:\n" + truncate_to_tokens(source, budget) + "\n\nDiscussion:\n" + thread
        body = truncate_to_tokens(body, budget * 2)
    else:
        if provider.name == "offline":  # ranks the whole text itself; the prompt is only accounted
            body, source_tokens = header + "\nArticle:\n" + source, 0
        else:
            fitted, source_tokens = fit_to_tokens(source, budget, provider.model)
            body = header + "\nArticle:\n" + fitted
    hints: dict[str, Any] = {
        "task": "comments" if style == "comments" else "summary",
        "style": style,
        "source_text": source,
        "interests": interests,
        "comments": material.comments,
        "fallback": post.title,
        "prefix": _prefix(post) if material.basis == "title_and_comments" and style != "comments" else None,
    }
    max_tokens = 80 if style == "concise" else settings.openai_max_tokens
    maps: list[LLMRequest] = []
    if (
        style != "comments"
        and provider.name != "offline"  # extractive ranking reads the whole text at no cost
        and material.basis == "article"
        and source_tokens > MAP_REDUCE_FACTOR * budget
    ):
        for part in split_by_tokens(source, budget, provider.model):
            maps.append(
                LLMRequest(
                    messages=[
                        {"role": "system", "content": f"{prompt('map')}\n\n{sanitize.data_rules(marker)}"},
                        {"role": "user", "content": sanitize.data_block("ARTICLE PART", part, marker)},
                    ],
                    max_tokens=200,
                    temperature=settings.openai_temperature,
                    # the offline provider answers a part when the day's budget runs out mid-article
                    hints={"task": "summary", "style": style, "source_text": part, "fallback": post.title},
                )
            )
    data = sanitize.data_block("MATERIAL", body, marker)
    if style == "personalized":
        data = sanitize.data_block("READER'S INTERESTS", ", ".join(interests or []) or "none given", marker) + (
            f"\n\n{data}"
        )
    request = LLMRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": data}],
        max_tokens=max_tokens,
        temperature=settings.openai_temperature,
        hints=hints,
    )
    return request, maps


def _generate(
    post: Post,
    style: str,
    material: Material,
    provider: Provider,
    interests: list[str] | None,
    settings: Settings,
    conn: Connection | None = None,
) -> tuple[LLMResult, int, int]:
    request, maps = _request(post, style, material, provider, interests, settings)
    input_tokens = output_tokens = 0
    if maps:
        parts = []
        for map_request in maps:
            part = llm.call(map_request, provider=provider, agent_type="summarization", post_id=post.id,
                            purpose=f"{style}:map", connection=conn)  # fmt: skip
            parts.append(part.text)
            input_tokens += part.input_tokens
            output_tokens += part.output_tokens
        header = f"Title: {post.title}\nURL: {post.url}\n\nSummaries of the article's parts, in order:\n"
        marker = sanitize.new_marker()
        system = prompt(style) + f"\n\n{sanitize.data_rules(marker)}"
        data = sanitize.data_block("MATERIAL", header + "\n\n".join(parts), marker)
        if style == "personalized":
            wanted = ", ".join(interests or []) or "none given"
            data = sanitize.data_block("READER'S INTERESTS", wanted, marker) + f"\n\n{data}"
        request = LLMRequest(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": data}],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            hints=request.hints,
        )
    result = llm.call(
        request, provider=provider, agent_type="summarization", post_id=post.id, purpose=style, connection=conn
    )
    # Shown in Telegram's HTML mode: no Markdown marks (a comment summary keeps its "- " lines).
    text = result.text if style == "comments" else plain_text(result.text)
    if material.basis == "title_and_comments" and style != "comments" and not text.startswith(_prefix(post)):
        text = f"{_prefix(post)} {text}"
    result = LLMResult(text, result.model, result.provider, result.input_tokens, result.output_tokens,
                       result.latency_ms, result.cost_usd, result.fallback)  # fmt: skip
    return result, input_tokens + result.input_tokens, output_tokens + result.output_tokens


# A summary that read the thread (a comment summary, or one of THREAD_BASES) is made again once the thread
# has grown by this factor since, at most MAX_REFRESHES times.
THREAD_GROWTH = 1.5
MAX_REFRESHES = 3


def _needs_comment_refresh(summary: Summary, post: Post) -> bool:
    """The summary read the thread, and the thread has grown by half since (at most three times)."""
    base = summary.source_comment_count or 0
    follows = summary.style == "comments" or summary.basis in THREAD_BASES
    return follows and summary.refresh_count < MAX_REFRESHES and base > 0 and post.comment_count >= base * THREAD_GROWTH


def _thread_grown(comment_count: ColumnElement[int] | InstrumentedAttribute[int]) -> ColumnElement[bool]:
    """:func:`_needs_comment_refresh` in SQL, for a Summary row and its post's ``comment_count``."""
    base = func.coalesce(Summary.source_comment_count, 0)
    return and_(
        or_(Summary.style == "comments", Summary.basis.in_(THREAD_BASES)),
        Summary.refresh_count < MAX_REFRESHES,
        base > 0,
        comment_count >= base * THREAD_GROWTH,
    )


def summarize(
    *,
    post_id: int,
    style: str,
    interests: list[str] | None = None,
    store: Any = None,
    settings: Settings | None = None,
    upgrade: bool = False,
) -> Outcome:
    """Make sure the (post, style) summary exists; generate it at most once. Raises Busy or LLMError.

    ``upgrade``: a summary the offline summarizer made because the model refused the key is made again
    with the model (when the key is accepted now); the post keeps its place in digests.

    One pooled connection in autocommit mode does all of it, one statement per step: look for the row
    and, only when it is missing, take a session-level advisory lock (one statement); read the post and
    the row again under the lock (a fresh snapshot sees whatever the previous holder committed); call
    the model (each attempt's agent_calls row is written on this same connection); write the summary and
    the post's columns in one statement; release the lock only after that write is committed, so a
    second worker that gets the lock next always finds the row. No transaction stays open while the
    model is working.
    """
    if style not in SUMMARY_STYLES:
        raise ValueError(f"unknown summary style {style!r}; choose from {SUMMARY_STYLES}")
    settings = settings or get_settings()
    variant = interest_variant(interests) if style == "personalized" else ""
    match = (Summary.post_id == post_id, Summary.style == style, Summary.variant == variant)
    key = _lock_key(post_id, style, variant)
    existing_row = select(Summary.id).where(*match)
    lock: ColumnElement[Any] = func.pg_try_advisory_lock(*key)
    if style != "comments" and not upgrade:  # a comment summary may need a refresh: it always locks
        # the summary as it stands, unless it read the thread and the thread has grown by half since
        count = select(Post.comment_count).where(Post.id == Summary.post_id).scalar_subquery()
        existing_row = existing_row.where(~_thread_grown(count))
        lock = case((~existing_row.exists(), lock), else_=false())
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        existing_id, locked = conn.execute(select(existing_row.scalar_subquery(), lock)).one()
        if existing_id is not None and style != "comments" and not upgrade:
            return Outcome(post_id, style, variant, "existing", existing_id)
        if not locked:
            raise Busy(f"summary ({post_id}, {style}) is being generated elsewhere")
        try:
            with Session(bind=conn, expire_on_commit=False) as session:
                row = session.execute(
                    select(Post, Summary).outerjoin(Summary, and_(*match)).where(Post.id == post_id)
                ).first()
                if row is None:
                    return Outcome(post_id, style, variant, "skipped")
                post, existing = row
                session.expunge_all()
            return _summarize_locked(conn, post, existing, style, variant, interests, store, settings, upgrade)
        finally:
            try:
                conn.execute(select(func.pg_advisory_unlock(*key)))
            except DBAPIError:  # the connection is gone, and its session-level lock with it
                log.warning("could not release the summary lock for post %s; its connection was lost", post_id)


def _summarize_locked(
    conn: Connection,
    post: Post,
    existing: Summary | None,
    style: str,
    variant: str,
    interests: list[str] | None,
    store: Any,
    settings: Settings,
    upgrade: bool = False,
) -> Outcome:
    post_id = post.id
    refreshing = False
    if existing is not None:
        if upgrade and style != "comments":
            if existing.model != llm.offline_provider().model or not wants_model(post, settings):
                return Outcome(post_id, style, variant, "existing", existing.id)
            if not health.usable(settings):  # still refused: the sweep asks again once it works
                return Outcome(post_id, style, variant, "existing", existing.id, "offline")
        elif not _needs_comment_refresh(existing, post):
            return Outcome(post_id, style, variant, "existing", existing.id)
        refreshing = True
    if store is None:
        from hnpal.content.host import reader

        store = reader()
    material = load_material(post, store)
    if style == "comments":
        if len(material.comments) < 1 or post.comment_count < settings.comments_summary_min:
            return Outcome(post_id, style, variant, "skipped")
        material = Material("comments", "", material.comments)
    elif material.basis == "title_and_comments" and not material.text and not post.title:
        return Outcome(post_id, style, variant, "skipped")
    provider = choose_provider(post, settings)
    meant_for_model = wants_model(post, settings)
    # Each attempt's agent_calls row is committed as it happens, so spend survives a failed write here.
    try:
        result, input_tokens, output_tokens = _generate(post, style, material, provider, interests, settings, conn)
    except LLMError as exc:
        if provider.name == "offline" or not health.is_down_error(exc) or upgrade:
            raise
        # The key or the model is refused (hnpal.llm.health stopped paid calls and alerted): readers get
        # the offline summary now, and the sweep makes it again with the model once the key works.
        provider = llm.offline_provider()
        result, input_tokens, output_tokens = _generate(post, style, material, provider, interests, settings, conn)
    offline_meanwhile = meant_for_model and result.provider == "offline" and not health.usable(settings)
    if upgrade and result.provider == "offline":  # refused again (or the budget ran out): keep what is there
        assert existing is not None
        return Outcome(post_id, style, variant, "existing", existing.id, "offline")
    values = {
        "post_id": post_id,
        "style": style,
        "variant": variant,
        "text": result.text,
        "model": result.model[:50],
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "basis": material.basis,
        "source_comment_count": post.comment_count if style == "comments" or material.basis in THREAD_BASES else None,
    }
    stmt = insert(Summary).values(values)
    if refreshing and upgrade:
        stmt = stmt.on_conflict_do_update(
            index_elements=[Summary.post_id, Summary.style, Summary.variant],
            set_={**{k: stmt.excluded[k] for k in ("text", "model", "input_tokens", "output_tokens", "basis")},
                  "updated_at": func.now()},
        )  # fmt: skip
    elif refreshing:
        stmt = stmt.on_conflict_do_update(
            index_elements=[Summary.post_id, Summary.style, Summary.variant],
            set_={**{k: stmt.excluded[k] for k in ("text", "model", "input_tokens", "output_tokens",
                                                   "source_comment_count")},
                  "refresh_count": Summary.__table__.c.refresh_count + 1, "updated_at": func.now()},
        )  # fmt: skip
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=[Summary.post_id, Summary.style, Summary.variant])
    returning = stmt.returning(Summary.id)
    write: Executable = returning
    hold = None
    if style == settings.summary_default_style and not refreshing:
        hold = review.summary_hold_reason(
            conn, basis=material.basis, text_=result.text, score=post.score or 0, model=result.model, settings=settings
        )
    if style == settings.summary_default_style:
        # The default style also fills the post's columns: one statement (a data-modifying CTE), so
        # both land together. A summary held for review is stored but its post has no summarized_at
        # (no digest selects it) until a person decides.
        inserted = returning.cte("inserted")
        columns: dict[str, Any] = {
            "summary": result.text,
            "summary_model": result.model[:50],
            "summary_tokens": input_tokens + output_tokens,
            "summary_prompt_type": style,
            "summary_basis": material.basis,
            "summary_status": "held" if hold else "offline" if offline_meanwhile else "done",
            "summary_error": f"summarized offline: {_refusal(settings)}"[:2000] if offline_meanwhile else None,
        }
        if not upgrade and not refreshing:  # a re-made summary keeps the post's place in digests
            columns["summarized_at"] = None if hold else datetime.now(UTC)
        else:
            columns["summary_attempts"] = 0
        update = Post.__table__.update().where(Post.id == post_id).values(**columns)
        write = select(inserted.c.id).add_cte(update.cte("post_update"))
    summary_id = conn.execute(write).scalar()
    if hold and summary_id is not None:
        request, _maps = _request(post, style, material, provider, interests, settings)
        review.hold_summary(
            conn, post_id=post_id, summary_id=summary_id, reason=hold, draft=result.text,
            prompt=request.messages, model=result.model, input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd=result.cost_usd, settings=settings,
        )  # fmt: skip
        log.info("summary of post %s held for review: %s", post_id, hold)
    if style == settings.summary_default_style and post.llm_topics is None:
        # once per post, with a key (whoever made the summary: the question costs a fortieth of a paid summary):
        # what the model says the post is about (the post's topics blend it in)
        labels.label(
            post_id=post_id, title=post.title, url=post.url, domain=post.domain, material=material.text,
            basis=material.basis, settings=settings, connection=conn,
        )  # fmt: skip
    status = "upgraded" if upgrade else "refreshed" if refreshing else "generated"
    log.info("summary %s of post %s (%s, %s): %s", style, post_id, material.basis, result.provider, status)
    return Outcome(post_id, style, variant, status, summary_id, result.provider)


def _refusal(settings: Settings) -> str:
    try:
        return health.read(settings).error or "the model refused the key"
    except Exception:  # noqa: BLE001 - only words for the operator
        return "the model refused the key"


def mark_failed(*, post_id: int, error: Exception, upgrade: bool = False) -> None:
    """A run failed (the model's last retry, or anything after it): keep the post, the reason and the
    count. Transient failures go to the sweep until :data:`MAX_ATTEMPTS` runs failed; a failure that
    retrying cannot cure counts as all of them at once. Then the post is listed by ``hnpal quarantine``
    (kind ``summary``) and the model is not asked again.

    ``upgrade``: the run was re-making an offline summary with the model; the post keeps its offline
    summary (and its status: ``offline``, or ``done`` for a post that rose to the paid tier) while the
    count grows, so that the sweep stops asking after :data:`MAX_ATTEMPTS`."""
    transient = error.transient if isinstance(error, LLMError) else True
    reason = str(error) if isinstance(error, LLMError) else f"{type(error).__name__}: {error}"
    attempts = Post.summary_attempts + 1 if transient else func.greatest(Post.summary_attempts + 1, MAX_ATTEMPTS)
    with session_scope() as session:
        if upgrade:
            session.execute(
                Post.__table__.update()
                .where(Post.id == post_id, Post.summary_status.in_(("offline", "done")))
                .values(summary_error=reason[:2000], summary_attempts=attempts)
            )
            return
        session.execute(
            Post.__table__.update()
            .where(Post.id == post_id, Post.summary_status.in_(("pending", "failed")))
            .values(summary_status="failed", summary_error=reason[:2000], summary_attempts=attempts)
        )


def mark_skipped(*, post_id: int) -> None:
    """The post has nothing to summarize (no title, text or comments): ``skipped``, which the sweep does not
    ask again (otherwise it stays ``pending`` and is enqueued at every sweep, for ever)."""
    with session_scope() as session:
        session.execute(
            Post.__table__.update()
            .where(Post.id == post_id, Post.summary_status.in_(("pending", "failed")))
            .values(summary_status="skipped", summary_error="nothing to summarize: no title, text or comments")
        )


def due_for_sweep(*, session: Session, limit: int) -> list[int]:
    """Posts with content whose default summary failed transiently (fewer than MAX_ATTEMPTS times) or
    never ran."""
    return list(
        session.scalars(
            select(Post.id)
            .where(Post.is_crawl_success, Post.summary_status.in_(("pending", "failed")))
            .where(Post.summary_attempts < MAX_ATTEMPTS)
            .order_by(Post.id)
            .limit(limit)
        )
    )


def risen_due(*, session: Session, settings: Settings, limit: int) -> list[int]:
    """Posts summarized offline because their score was below the paid tier, which have risen to it since
    (most posts are summarized minutes after they appear, long before they reach the front page), and that
    digests may still pick (summarized within the digest look-back): to be made again with the model, the
    best first. Empty when no paid model can be asked now (no key, the key refused, the day's budget
    spent): nothing is enqueued that would only be made offline again."""
    if llm.paid_provider(settings) is None or not health.usable(settings) or not llm.budget_left(settings):
        return []
    since = datetime.now(UTC) - timedelta(hours=settings.digest_lookback_hours)
    return list(
        session.scalars(
            select(Post.id)
            .where(Post.summary_status == "done", Post.summary_model == llm.offline_provider().model)
            .where(Post.score >= settings.llm_paid_min_score, Post.summarized_at > since)
            .where(Post.summary_attempts < MAX_ATTEMPTS)
            .order_by(Post.score.desc(), Post.id)
            .limit(limit)
        )
    )


def offline_due(*, session: Session, limit: int) -> list[int]:
    """Posts summarized offline while the model refused the key, to be made again with the model (fewer
    than MAX_ATTEMPTS failed tries)."""
    return list(
        session.scalars(
            select(Post.id)
            .where(Post.summary_status == "offline", Post.summary_attempts < MAX_ATTEMPTS)
            .order_by(Post.id)
            .limit(limit)
        )
    )


def offline_styles(*, post_id: int, settings: Settings | None = None) -> list[str]:
    """The post's other shared styles still made by the offline summarizer (to be made again too)."""
    settings = settings or get_settings()
    with session_scope() as session:
        return list(
            session.scalars(
                select(Summary.style).where(
                    Summary.post_id == post_id, Summary.variant == "", Summary.model == llm.offline_provider().model,
                    Summary.style.not_in(("comments", "personalized", settings.summary_default_style)),
                )
            )
        )  # fmt: skip


def comment_refresh_due(*, session: Session, limit: int) -> list[int]:
    """Posts whose comment count grew by 50% since a summary read their thread (their comment summary, or
    their summary when they have no readable article; at most 3 refreshes each)."""
    return list(
        session.scalars(
            select(Summary.post_id)
            .join(Post, Post.id == Summary.post_id)
            .where(_thread_grown(Post.comment_count))
            .distinct()
            .limit(limit)
        )
    )
