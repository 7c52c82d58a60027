"""Discussions about one post: start, switch, end, messages, the context, the window and the answers.

The Telegram handler (``hnpal/telegram/discuss.py``) starts and ends discussions and stores each user
message in the update's transaction; the answer is made by ``hnpal.discussions.reply`` on the ``llm``
queue (:func:`reply`). PostgreSQL is the source of truth: the conversation row (messages, totals, the
window's ``summary``/``summarized_count``, ``context_loaded``) and ``users.active_discussion_post_id``,
which the Redis FSM mirrors. Redis also caches the loaded context for the LLM workers; both are rebuilt
when missing.

Guarantees:

* a message is appended in one UPDATE guarded by the 1,000-message cap (a user message only while there
  is room for its answer too) and by ``ended_at IS NULL``; a message over 10,000 characters is refused
  before anything is written, so nothing is ever stored half-way;
* one user message is answered once: replies to one conversation run one at a time (an advisory lock),
  an answer records the newest user message it answers (``reply_to``), and a task for a message that is
  already answered does nothing. A worker lost between sending and recording may send one answer twice
  (never none);
* the prompt stays under ``HNPAL_DISCUSSION_PROMPT_MAX_BYTES`` however long the talk: older messages are
  folded into the running summary (by the model, or the offline heuristic) before they would push it over.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.conversations import offline  # noqa: F401  registers the offline "discussion" and "fold" answers
from hnpal.conversations import window as win
from hnpal.conversations.context import Context, load, stale
from hnpal.conversations.messages import append, append_assistant_message
from hnpal.conversations.models import MAX_MESSAGES, Conversation, EndReason
from hnpal.conversations.schemas import MAX_MESSAGE_CHARS, Message
from hnpal.db.session import get_engine
from hnpal.errors import Busy, HNPalError, WorkFailed
from hnpal.llm import sanitize
from hnpal.llm import service as llm
from hnpal.llm.base import LLMError, LLMRequest, LLMResult, Provider
from hnpal.posts.models import Post
from hnpal.review import service as review
from hnpal.state.service import set_state
from hnpal.state.store import BotState, FsmState, StateStore
from hnpal.telegram.render import esc
from hnpal.usage import allowance
from hnpal.usage.models import AgentCall
from hnpal.users.models import User

log = logging.getLogger(__name__)
LOCK_NAMESPACE = 0x44495343  # "DISC": advisory locks of discussion replies, keyed by conversation id
FOLD_PROMPT = (
    "You keep the running summary of a conversation between a user and HN Pal about the Hacker News post "
    "of the POST data block. Merge the summary so far with the new turns into one summary of at most 250 "
    "words: the user's questions, positions and anything they said about themselves, and the key points of "
    "the answers. Plain text."
)
QUESTION_WORDS = frozenset(
    "what why how who when where which whose can could should would is are was were do does did will "
    "explain tell compare summarize summarise define".split()
)
_FIRST_WORD = re.compile(r"[a-zA-Z']+")


BUDGET_REACHED = (
    "That's all the discussion I can do for you today: your daily allowance is used up. "
    "It renews at midnight UTC; digests and buttons work as usual meanwhile."
)


class Refused(HNPalError):
    """A user message that cannot be stored; ``str(exc)`` is the reply to the user."""


# --- lookups ----------------------------------------------------------------------------------------


def active_conversation(*, session: Session, user_id: int) -> Conversation | None:
    return session.scalars(
        select(Conversation)
        .where(Conversation.user_id == user_id, Conversation.ended_at.is_(None))
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(1)
    ).first()


def post_by_hn_id(*, session: Session, hn_id: int) -> Post | None:
    return session.scalars(select(Post).where(Post.hn_id == hn_id)).first()


def choose_provider(settings: Settings | None = None) -> Provider:
    """The paid model while it is configured, its key accepted and the day's budget lasts; offline
    otherwise."""
    from hnpal.llm import health

    settings = settings or get_settings()
    paid = llm.paid_provider(settings)
    if paid is None or not health.usable(settings) or not llm.budget_left(settings):
        return llm.offline_provider()
    return paid


def looks_like_question(text: str) -> bool:
    if "?" in text:
        return True
    match = _FIRST_WORD.search(text[:100])
    return match is not None and match.group(0).lower() in QUESTION_WORDS and len(text.split()) >= 3


def budget_reached(*, session: Session, user_id: int, settings: Settings | None = None) -> bool:
    """The user's discussion allowance for today (UTC): answers made, or dollars spent on them."""
    settings = settings or get_settings()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    answers, spent = session.execute(
        select(
            func.count().filter(AgentCall.success, AgentCall.purpose.in_(("reply", "idle"))),
            func.coalesce(func.sum(AgentCall.cost_usd), 0),
        ).where(AgentCall.user_id == user_id, AgentCall.agent_type == "discussion", AgentCall.called_at >= midnight)
    ).one()
    return answers >= settings.discussion_daily_messages or Decimal(spent or 0) >= settings.discussion_daily_usd


# --- start, switch, end -----------------------------------------------------------------------------


@dataclass
class Ended:
    conversation_id: int
    user_id: int
    telegram_id: int
    hn_id: int
    title: str
    memory_enabled: bool


@dataclass
class Started:
    conversation_id: int
    header: str
    resumed: bool = False
    ended: list[Ended] = field(default_factory=list)


def header(
    *, title: str, loaded: dict[str, Any] | None, idle_minutes: int, resumed: bool = False, hn_says: str | None = None
) -> str:
    """The "📖 Discussing: <title>" message: what was loaded, what HN says (the thread's comment summary,
    when the thread is lively enough to have one), and how to end."""
    from hnpal.telegram.render import hn_says_block

    loaded = loaded or {}
    article = loaded.get("article") or {}
    if article.get("loaded"):
        cut = ", cut to fit" if article.get("truncated") else ""
        what = f"the article ({article.get('words', 0):,} words, {article.get('tokens', 0):,} tokens{cut})"
    elif article.get("store_unavailable"):
        what = "the article and the thread: read when you ask"
    else:
        what = "the article: not available (I'll go by the title and the HN thread)"

    def count(part: str, one: str, many: str) -> str:
        n = int((loaded.get(part) or {}).get("count") or 0)
        return f"{n} {one if n == 1 else many}"

    parts = [
        what,
        count("comments", "top HN comment", "top HN comments"),
        count("memory", "thing I remember about you", "things I remember about you"),
        count("related", "related past conversation", "related past conversations"),
    ]
    lead = "Still discussing" if resumed else "Discussing"
    return (
        f"📖 {lead}: <b>{esc(title)}</b>\n\n"
        f"Loaded: {esc(' · '.join(parts))}.{hn_says_block(hn_says, 1200)}\n\n"
        f"Ask me anything about it. /done ends the discussion (it also closes after {idle_minutes} minutes "
        "of silence)."
    )


def end(*, session: Session, store: StateStore, user_id: int, telegram_id: int, reason: EndReason) -> list[Ended]:
    """End the user's active discussion(s): ``ended_at``, ``end_reason``, the users row's mirror and the
    Redis FSM. The caller enqueues ``hnpal.memory.extract`` for those with ``memory_enabled`` after commit."""
    rows = session.execute(
        update(Conversation)
        .where(Conversation.user_id == user_id, Conversation.ended_at.is_(None))
        .values(ended_at=func.greatest(func.now(), Conversation.started_at), end_reason=reason)
        .returning(Conversation.id, Conversation.post_id)
    ).all()
    session.execute(update(User).where(User.id == user_id).values(active_discussion_post_id=None))
    store.clear_fsm(telegram_id)
    return _ended(session, [r.id for r in rows])


def _ended(session: Session, ids: list[int]) -> list[Ended]:
    if not ids:
        return []
    rows = session.execute(
        select(Conversation.id, User.id.label("user_id"), User.telegram_id, User.memory_enabled, Post.hn_id, Post.title)
        .join(User, User.id == Conversation.user_id)
        .join(Post, Post.id == Conversation.post_id)
        .where(Conversation.id.in_(ids))
        .order_by(Conversation.id)
    ).all()
    return [Ended(r.id, r.user_id, r.telegram_id, r.hn_id, r.title, r.memory_enabled) for r in rows]


def _hn_says(session: Session, post_id: int) -> str | None:
    from hnpal.summaries.models import Summary

    return session.scalar(
        select(Summary.text).where(Summary.post_id == post_id, Summary.style == "comments", Summary.variant == "")
    )


def start(*, session: Session, store: StateStore, user: User, post: Post, settings: Settings | None = None) -> Started:
    """Enter the DISCUSSION state for ``post``: a new conversation with its context loaded (the current
    one is ended with ``switch``), or the current one again when it is about the same post."""
    settings = settings or get_settings()
    current = active_conversation(session=session, user_id=user.id)
    state = FsmState(state=BotState.DISCUSSION, data={"active_post_id": post.hn_id})
    if current is not None and current.post_id == post.id:
        set_state(session=session, store=store, telegram_id=user.telegram_id, state=state)
        text = header(title=post.title, loaded=current.context_loaded, idle_minutes=settings.discussion_idle_minutes,
                      resumed=True, hn_says=_hn_says(session, post.id))  # fmt: skip
        return Started(current.id, text, resumed=True)
    ended = end(session=session, store=store, user_id=user.id, telegram_id=user.telegram_id, reason="switch")
    conversation = Conversation(user_id=user.id, post_id=post.id, agent_model=choose_provider(settings).model[:50])
    session.add(conversation)
    session.flush()
    context = load(
        session=session, user_id=user.id, post=post, interests=list(user.interests or []),
        exclude_conversation=conversation.id, settings=settings,
    )  # fmt: skip
    conversation.context_loaded = context.loaded
    if not context.loaded["article"]["store_unavailable"]:  # else the LLM worker loads it (it has the store)
        store.set_context(user.telegram_id, post.hn_id, context.to_cache())
    set_state(session=session, store=store, telegram_id=user.telegram_id, state=state)
    text = header(title=post.title, loaded=context.loaded, idle_minutes=settings.discussion_idle_minutes,
                  hn_says=_hn_says(session, post.id))  # fmt: skip
    if ended:
        text = f"Your discussion of “{esc(ended[0].title)}” is saved and closed.\n\n" + text
    log.info("user %s discusses post %s (conversation %s)", user.id, post.hn_id, conversation.id)
    return Started(conversation.id, text, ended=ended)


# --- messages ---------------------------------------------------------------------------------------


def check_user_text(text: str) -> None:
    if len(text) > MAX_MESSAGE_CHARS:
        raise Refused(
            f"That message is {len(text):,} characters long; I take at most {MAX_MESSAGE_CHARS:,} per message. "
            "Nothing was saved: please send it shorter or in parts."
        )
    if not text.strip():
        raise Refused("That message is empty: nothing was saved.")


def append_user_message(*, session: Session, conversation_id: int, text: str) -> int:
    """Store one user message (one UPDATE: the cap, with room left for its answer, and the conversation
    still open are checked in it). Returns its index. Raises Refused with the reply to send."""
    check_user_text(text)
    message = Message(role="user", content=text, timestamp=datetime.now(UTC)).model_dump(mode="json")
    length = session.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            Conversation.ended_at.is_(None),
            func.jsonb_array_length(Conversation.messages) + 2 <= MAX_MESSAGES,
        )
        .values(messages=append([message]), last_message_at=func.now())
        .returning(func.jsonb_array_length(Conversation.messages))
    ).scalar()
    if length is None:
        ended = session.scalar(select(Conversation.ended_at).where(Conversation.id == conversation_id))
        if ended is not None:
            raise Refused("This discussion has just been closed. Tap 💬 under a post or send /discuss HN_ID.")
        raise Refused(
            f"This discussion has reached its limit of {MAX_MESSAGES:,} messages, so that one was not saved. "
            "Send /done to close it, then start a fresh one with 💬 or /discuss HN_ID."
        )
    return length - 1


# The common case of a message in a discussion, in one statement: the user's open conversation, the
# day's discussion allowance and the message cap (with room for the answer) checked, the message appended.
APPEND_TO_ACTIVE = text(
    """
    WITH spent AS (
        SELECT count(*) FILTER (WHERE success AND purpose IN ('reply', 'idle')) AS answers,
               coalesce(sum(cost_usd), 0) AS usd
        FROM agent_calls
        WHERE user_id = :user_id AND agent_type = 'discussion' AND called_at >= :midnight
    )
    UPDATE conversations c SET messages = c.messages || CAST(:message AS jsonb), last_message_at = now()
    FROM spent
    WHERE c.id = (SELECT max(id) FROM conversations WHERE user_id = :user_id AND ended_at IS NULL)
      AND jsonb_array_length(c.messages) + 2 <= :max_messages
      AND spent.answers < :max_answers AND spent.usd < :max_usd
    RETURNING c.id, jsonb_array_length(c.messages) - 1 AS message_index
    """
)


def append_to_active(
    *, session: Session, user_id: int, text_: str, settings: Settings | None = None
) -> tuple[int, int] | None:
    """Store a message in the user's open conversation when nothing stands in the way (one statement):
    (conversation id, message index), or None when there is no open conversation, the day's allowance
    is used up or the conversation is full; the caller then asks why (:func:`active_conversation`,
    :func:`budget_reached`, :func:`append_user_message`)."""
    check_user_text(text_)
    settings = settings or get_settings()
    message = Message(role="user", content=text_, timestamp=datetime.now(UTC)).model_dump(mode="json")
    row = session.execute(
        APPEND_TO_ACTIVE,
        {
            "user_id": user_id,
            "midnight": datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0),
            "message": json.dumps([message]),
            "max_messages": MAX_MESSAGES,
            "max_answers": settings.discussion_daily_messages,
            "max_usd": settings.discussion_daily_usd,
        },
    ).first()
    return None if row is None else (row.id, row.message_index)


UNANSWERED = text(
    """
    SELECT c.id, jsonb_array_length(c.messages) - 1 AS message_index
    FROM conversations c JOIN users u ON u.id = c.user_id
    WHERE u.telegram_id = :telegram_id AND c.ended_at IS NULL AND c.messages -> -1 ->> 'role' = 'user'
    ORDER BY c.id DESC LIMIT 1
    """
)


def unanswered(*, conn: Connection, telegram_id: int) -> tuple[int, int] | None:
    """(conversation id, message index) of the user's open conversation when its last message is the
    user's, waiting for an answer; else None."""
    row = conn.execute(UNANSWERED, {"telegram_id": telegram_id}).first()
    return None if row is None else (row.id, row.message_index)


def _answered(messages: list[dict[str, Any]], index: int) -> bool:
    return any(
        m.get("role") == "assistant" and isinstance(m.get("reply_to"), int) and m["reply_to"] >= index for m in messages
    )


# --- context and prompt -----------------------------------------------------------------------------


def context_for(
    *, session: Session, store: StateStore, telegram_id: int, user: User, post: Post, conversation_id: int | None
) -> tuple[Context, bool]:
    """The discussion's context from Redis, or rebuilt from the content store and PostgreSQL (and cached
    again) when the key expired or Redis lost it. Returns it and whether it was rebuilt."""
    cached = store.get_context(telegram_id, post.hn_id)
    context = Context.from_cache(cached) if cached is not None else None
    if context is not None and not stale(session=session, user_id=user.id, context=context):
        return context, False
    context = load(
        session=session, user_id=user.id, post=post, interests=list(user.interests or []),
        exclude_conversation=conversation_id,
    )  # fmt: skip
    store.set_context(telegram_id, post.hn_id, context.to_cache())
    log.info("discussion context of user %s, post %s rebuilt", telegram_id, post.hn_id)
    return context, True


@dataclass
class Plan:
    """How one answer's prompt is made: what is folded, what goes verbatim."""

    new_index: int
    fold_from: int
    fold_upto: int
    prompt: win.Prompt | None = None


def plan(
    *, messages: list[dict[str, Any]], summarized_count: int, new_index: int, context_text: str, settings: Settings
) -> Plan:
    budget = win.history_budget(
        cap=settings.discussion_prompt_max_bytes,
        persona=win.PERSONA,
        new_message=str(messages[new_index].get("content") or ""),
        context_bytes=win.size(context_text),
    )
    upto = win.plan_window(
        messages, summarized_count=summarized_count, new_index=new_index,
        window=settings.discussion_window_messages, budget=budget,
    )  # fmt: skip
    return Plan(new_index, summarized_count, upto)


def prompt_for(
    *, messages: list[dict[str, Any]], summary: str | None, summarized_count: int, new_index: int,
    context_text: str, settings: Settings, blocks: list[list[str]] | None = None,
) -> win.Prompt:  # fmt: skip
    return win.build_prompt(
        persona=win.PERSONA,
        context=context_text,
        blocks=blocks,
        summary=summary,
        history=messages[summarized_count:new_index],
        new_message=str(messages[new_index].get("content") or ""),
        cap=settings.discussion_prompt_max_bytes,
    )


class AnsweredOffline(WorkFailed):
    """The model failed for good on a discussion answer (its retries spent; the failed calls are in
    ``agent_calls``), and the offline answer went out instead: the reader has an answer, and the task ends
    in FAILURE so that Flower and the task log count the model's failure. Nothing retries it."""


def _complete(
    request: LLMRequest, *, provider: Provider, conn: Connection | None, failures: list[str] | None = None,
    **account: Any,
) -> LLMResult:  # fmt: skip
    """One discussion call; when the paid model finally fails, the offline provider answers instead (and
    ``failures``, when given, gets what went wrong)."""
    try:
        return llm.call(request, provider=provider, agent_type="discussion", connection=conn, **account)
    except LLMError as exc:
        if provider.name == "offline":
            raise
        log.warning("discussion call failed (%s); the offline provider answers instead", exc)
        if failures is not None:
            failures.append(f"{type(exc).__name__}: {exc}")
        return llm.call(request, provider=llm.offline_provider(), agent_type="discussion", connection=conn, **account)


def _fold(
    *, conn: Connection, provider: Provider, title: str, summary: str | None, turns: list[dict[str, Any]],
    settings: Settings, **account: Any,
) -> tuple[str, LLMResult]:  # fmt: skip
    transcript = "\n".join(
        f"{'HN Pal' if m.get('role') == 'assistant' else 'User'}: {m.get('content') or ''}" for m in turns
    )
    transcript, _ = win.cut_bytes(transcript, settings.discussion_prompt_max_bytes // 2)
    marker = sanitize.new_marker()
    data = "\n\n".join(
        sanitize.data_block(name, body, marker)
        for name, body in (("POST", title), ("SUMMARY SO FAR", summary or "(none)"), ("NEW TURNS", transcript))
    )
    request = LLMRequest(
        messages=[
            {"role": "system", "content": f"{FOLD_PROMPT}\n\n{sanitize.data_rules(marker)}"},
            {"role": "user", "content": data},
        ],
        max_tokens=400,
        temperature=settings.openai_temperature,
        hints={"task": "fold", "summary": summary or "", "messages": turns},
    )
    result = _complete(request, provider=provider, conn=conn, purpose="fold", **account)
    text, _ = win.cut_bytes(result.text.strip(), win.SUMMARY_MAX_BYTES)
    return text, result


# --- answering --------------------------------------------------------------------------------------


def reply(
    *,
    conversation_id: int,
    message_index: int,
    outbox: Any = None,
    store: StateStore | None = None,
    settings: Settings | None = None,
) -> str:
    """Answer user message ``message_index`` of the conversation (and any sent after it). Returns what
    happened: answered, already-answered, ended, missing or invalid. Raises Busy when another worker is
    answering in this conversation."""
    settings = settings or get_settings()
    key = (LOCK_NAMESPACE, conversation_id)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(select(func.pg_try_advisory_lock(*key))).scalar():
            raise Busy(f"conversation {conversation_id} is being answered elsewhere")
        try:
            return _reply_locked(conn, conversation_id, message_index, outbox, store or StateStore(), settings)
        finally:
            try:
                conn.execute(select(func.pg_advisory_unlock(*key)))
            except DBAPIError:  # the connection is gone, and its session-level lock with it
                log.warning("could not release the reply lock of conversation %s", conversation_id)


def _reply_locked(
    conn: Connection, conversation_id: int, index: int, outbox: Any, store: StateStore, settings: Settings
) -> str:
    with Session(bind=conn, expire_on_commit=False) as session:
        row = session.execute(
            select(Conversation, User, Post)
            .join(User, User.id == Conversation.user_id)
            .join(Post, Post.id == Conversation.post_id)
            .where(Conversation.id == conversation_id)
        ).first()
        if row is None:
            return "missing"
        conversation, user, post = row
        messages = list(conversation.messages)
        if not 0 <= index < len(messages) or messages[index].get("role") != "user":
            return "invalid"
        if _answered(messages, index):
            return "already-answered"
        if review.held_answer_exists(conn, conversation.id, index):  # held for a person: decided there
            return "held"
        if conversation.ended_at is not None and conversation.end_reason in ("cleared", "deleted"):
            return "ended"
        context, _rebuilt = context_for(
            session=session, store=store, telegram_id=user.telegram_id, user=user, post=post,
            conversation_id=conversation.id,
        )  # fmt: skip
        session.expunge_all()
    new_index = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    provider = choose_provider(settings)
    # One answer of the user's allowance is held before any call (a burst cannot pass the cap together),
    # settled by the calls' own rows, refunded when no answer is made.
    unsummarized = messages[conversation.summarized_count :]
    reservation = _reserve_answer(user.id, provider, [{"content": context.text}, *unsummarized], settings, conn)
    if reservation is None:
        _send(outbox, user.telegram_id, BUDGET_REACHED)
        log.info("conversation %s: message %s not answered, the daily allowance is used up", conversation.id, index)
        return "budget"
    try:
        return _answer(conn, conversation, user, post, messages, new_index, context, provider, outbox, settings)
    finally:
        allowance.release(reservation, conn)


def _reserve_answer(
    user_id: int, provider: Provider, messages: list[dict[str, Any]], settings: Settings, conn: Connection
) -> int | None:
    usd = Decimal(0)
    if provider.name != "offline":
        usd = allowance.estimate_usd(provider.model, messages, settings.discussion_max_tokens, settings)
    return allowance.reserve_answer(user_id=user_id, usd=usd, settings=settings, connection=conn)


def _answer(
    conn: Connection, conversation: Conversation, user: User, post: Post, messages: list[dict[str, Any]],
    new_index: int, context: Context, provider: Provider, outbox: Any, settings: Settings,
) -> str:  # fmt: skip
    account = {"user_id": user.id, "conversation_id": conversation.id, "post_id": post.id}
    results: list[LLMResult] = []
    summary, summarized = conversation.summary, conversation.summarized_count
    window = plan(messages=messages, summarized_count=summarized, new_index=new_index, context_text=context.text,
                  settings=settings)  # fmt: skip
    if window.fold_upto > summarized:  # not folded ahead (the last fold failed, or a long message came)
        summary, folded = _fold(
            conn=conn, provider=provider, title=post.title, summary=summary,
            turns=messages[summarized : window.fold_upto], settings=settings, **account,
        )  # fmt: skip
        results.append(folded)
        conn.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id, Conversation.summarized_count == summarized)
            .values(summary=summary, summarized_count=window.fold_upto)
        )
        summarized = window.fold_upto
    prompt = prompt_for(messages=messages, summary=summary, summarized_count=summarized, new_index=new_index,
                        context_text=context.text, settings=settings, blocks=context.blocks)  # fmt: skip
    question = str(messages[new_index].get("content") or "")
    request = LLMRequest(
        messages=prompt.messages,
        max_tokens=settings.discussion_max_tokens,
        temperature=settings.openai_temperature,
        hints={"task": "discussion", "question": question, "title": post.title, "article": context.article,
               "comments": context.comments},
    )  # fmt: skip
    failures: list[str] = []
    result = _complete(request, provider=provider, conn=conn, failures=failures, purpose="reply", **account)
    results.append(result)
    text = result.text.strip()[:MAX_MESSAGE_CHARS]
    reason = review.answer_hold_reason(conn, user.id, settings)
    if reason is not None:  # a person reads it first; the reader hears it is being checked
        if review.hold_answer(
            conn, user_id=user.id, chat_id=user.telegram_id, reason=reason, draft=text or "…", question=question,
            prompt=prompt.messages, results=results, conversation_id=conversation.id, message_index=new_index,
            post_id=post.id, settings=settings,
        ) is not None:  # fmt: skip
            _send(outbox, user.telegram_id, review.HOLD_NOTICE)
        return "held"
    _send(outbox, user.telegram_id, text)
    if not append_assistant_message(conn=conn, conversation_id=conversation.id, text=text, reply_to=new_index,
                                    results=results):  # fmt: skip
        log.warning("answer to message %s of conversation %s was not recorded", new_index, conversation.id)
    log.info(
        "conversation %s: answered message %s (%s bytes of prompt, %s verbatim, %s folded)",
        conversation.id, new_index, prompt.bytes, prompt.verbatim, summarized,
    )  # fmt: skip
    # Fold ahead, after the answer is out: the next message's window starts at new_index + 2 - window, so
    # the turns before it are summarized now, off the user's wait (a model call each time otherwise).
    ahead = new_index + 2 - settings.discussion_window_messages
    if ahead > summarized:
        _fold_ahead(conn, conversation.id, post.title, summary, summarized, messages[summarized:ahead], provider,
                    settings, account)  # fmt: skip
    if failures:  # answered, but not by the model: counted as the failure it is
        raise AnsweredOffline(
            f"conversation {conversation.id}, message {new_index}: the model failed ({failures[-1]}); "
            "the offline answer went out instead"
        )
    return "answered"


def _fold_ahead(
    conn: Connection, conversation_id: int, title: str, summary: str | None, summarized: int,
    turns: list[dict[str, Any]], provider: Provider, settings: Settings, account: dict[str, Any],
) -> None:  # fmt: skip
    """Fold ``turns`` (the messages from ``summarized`` on) into the summary, with their cost in the
    conversation's totals. A failure only logs: the next answer folds them before it is made."""
    try:
        summary, folded = _fold(conn=conn, provider=provider, title=title, summary=summary, turns=turns,
                                settings=settings, **account)  # fmt: skip
    except LLMError as exc:
        log.warning("conversation %s: folding ahead failed (%s); the next answer folds first", conversation_id, exc)
        return
    conn.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.summarized_count == summarized)
        .values(
            summary=summary,
            summarized_count=summarized + len(turns),
            total_input_tokens=Conversation.total_input_tokens + folded.input_tokens,
            total_output_tokens=Conversation.total_output_tokens + folded.output_tokens,
            total_cost_usd=Conversation.total_cost_usd + folded.cost_usd,
        )
    )


def _send(outbox: Any, chat_id: int, text: str) -> None:
    """An answer, in as many messages as it needs; once its first is out, the rest follow in place,
    through a 429 too (``reply=True``): a retry of the task would make and send the answer again."""
    if outbox is None:
        from hnpal.telegram.outbox import TelegramOutbox

        outbox = TelegramOutbox(reply=True)
    for part in win.split_message(text or "…"):
        outbox.send(chat_id, esc(part))


def mark_blocked(*, conversation_id: int) -> None:
    """Telegram refused an answer (403): the user blocked the bot; writing to it again unblocks them."""
    from hnpal.db.session import session_scope

    with session_scope() as session:
        session.execute(
            update(User)
            .where(User.id == select(Conversation.user_id).where(Conversation.id == conversation_id).scalar_subquery())
            .where(User.status != "deleted")
            .values(status="blocked")
        )


def idle_answer(*, user_id: int, text: str, outbox: Any = None, settings: Settings | None = None) -> str:
    """A short general answer to free text outside a discussion."""
    settings = settings or get_settings()
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        telegram_id = conn.execute(select(User.telegram_id).where(User.id == user_id)).scalar()
        if telegram_id is None:
            return "missing"
        question, _ = win.cut_bytes(text, settings.discussion_prompt_max_bytes // 2)
        request = LLMRequest(
            messages=[{"role": "system", "content": win.IDLE_PERSONA}, {"role": "user", "content": question}],
            max_tokens=min(200, settings.discussion_max_tokens),
            temperature=settings.openai_temperature,
            hints={"task": "discussion", "question": question, "idle": True},
        )
        provider = choose_provider(settings)
        reservation = _reserve_answer(user_id, provider, request.messages, settings, conn)
        if reservation is None:  # the allowance was used up by answers in flight since the check
            _send(outbox, telegram_id, BUDGET_REACHED)
            return "budget"
        try:
            result = _complete(request, provider=provider, conn=conn, user_id=user_id, purpose="idle")
        finally:
            allowance.release(reservation, conn)
        text = result.text.strip()[:MAX_MESSAGE_CHARS]
        reason = review.answer_hold_reason(conn, user_id, settings)
        if reason is not None:
            review.hold_answer(
                conn, user_id=user_id, chat_id=telegram_id, reason=reason, draft=text or "…", question=question,
                prompt=request.messages, results=[result], settings=settings,
            )  # fmt: skip
            _send(outbox, telegram_id, review.HOLD_NOTICE)
            return "held"
    _send(outbox, telegram_id, text)
    return "answered"


# --- leaving ----------------------------------------------------------------------------------------


def close_idle(*, session: Session, now: datetime | None = None, settings: Settings | None = None,
               limit: int = 500) -> list[Ended]:  # fmt: skip
    """End conversations silent for ``HNPAL_DISCUSSION_IDLE_MINUTES`` (``timeout``) and clear the users'
    mirror. The caller clears the Redis FSM, tells the users and enqueues the extraction after commit."""
    settings = settings or get_settings()
    cutoff = (now or datetime.now(UTC)) - timedelta(minutes=settings.discussion_idle_minutes)
    due = (
        select(Conversation.id)
        .where(Conversation.ended_at.is_(None), Conversation.last_message_at < cutoff)
        .order_by(Conversation.last_message_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(
        session.scalars(
            update(Conversation)
            .where(Conversation.id.in_(due), Conversation.ended_at.is_(None))
            .values(ended_at=func.greatest(func.now(), Conversation.started_at), end_reason="timeout")
            .returning(Conversation.id)
        )
    )
    ended = _ended(session, ids)
    for item in ended:
        session.execute(
            update(User)
            .where(and_(User.id == item.user_id, User.active_discussion_post_id == item.hn_id))
            .values(active_discussion_post_id=None)
        )
    return ended


def closed_notice(title: str, settings: Settings | None = None) -> str:
    minutes = (settings or get_settings()).discussion_idle_minutes
    return (
        f"⏱ The discussion of “{esc(title)}” was closed after {minutes} minutes of silence, and saved. "
        "Tap 💬 under a post or send /discuss HN_ID to start another."
    )


def clear_fsm_if(store: StateStore, telegram_id: int, hn_id: int) -> None:
    """Clear the Redis FSM of a discussion that was closed, unless the user moved on to another post."""
    state = store.get_fsm(telegram_id)
    if (
        state is not None
        and state.state == BotState.DISCUSSION
        and state.data.get("active_post_id") not in (None, hn_id)
    ):
        return
    store.clear_fsm(telegram_id)


# --- stats (hnpal memory stats) -----------------------------------------------------------------------


def stats(*, session: Session, telegram_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """Context size, history length and whether compression applied, for the user's latest discussion."""
    settings = settings or get_settings()
    user = session.scalars(select(User).where(User.telegram_id == telegram_id)).first()
    if user is None:
        raise LookupError(f"no user with Telegram id {telegram_id}")
    total = session.scalar(select(func.count()).select_from(Conversation).where(Conversation.user_id == user.id))
    row = session.execute(
        select(Conversation, Post)
        .join(Post, Post.id == Conversation.post_id)
        .where(Conversation.user_id == user.id)
        .order_by(Conversation.ended_at.is_(None).desc(), Conversation.started_at.desc(), Conversation.id.desc())
        .limit(1)
    ).first()
    result: dict[str, Any] = {"telegram_id": telegram_id, "conversations": total or 0, "latest": None}
    if row is None:
        return result
    conversation, post = row
    messages = conversation.messages
    loaded = conversation.context_loaded or {}
    latest: dict[str, Any] = {
        "conversation_id": conversation.id,
        "post": f"{post.title} (HN {post.hn_id})",
        "status": "active" if conversation.ended_at is None else f"ended ({conversation.end_reason})",
        "context_tokens": loaded.get("tokens", 0),
        "context_budget_tokens": loaded.get("budget_tokens", settings.discussion_context_tokens),
        "article_tokens": (loaded.get("article") or {}).get("tokens", 0),
        "comments": (loaded.get("comments") or {}).get("count", 0),
        "memory_items": (loaded.get("memory") or {}).get("count", 0),
        "related_conversations": (loaded.get("related") or {}).get("count", 0),
        "messages": len(messages),
        "history_chars": sum(len(str(m.get("content") or "")) for m in messages),
        "summarized_count": conversation.summarized_count,
        "summary_chars": len(conversation.summary or ""),
        "verbatim": len(messages) - conversation.summarized_count,
        "compression_applied": conversation.summarized_count > 0,
        "prompt_cap_bytes": settings.discussion_prompt_max_bytes,
        "total_tokens": conversation.total_input_tokens + conversation.total_output_tokens,
        "total_cost_usd": str(conversation.total_cost_usd),
    }
    result["latest"] = latest
    return result
