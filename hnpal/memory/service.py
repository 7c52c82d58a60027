"""Long-term memory: what HN Pal learns about a user, and what the user sees and controls.

Extraction (:func:`extract`, the ``hnpal.memory.extract`` task on the ``llm`` queue) runs once per
ended conversation. The model (or the offline heuristics of :mod:`hnpal.memory.offline`) answers JSON
``{"items": [{"type", "content", "confidence"}]}`` under :data:`EXTRACTION_SCHEMA`; every item is
validated with pydantic and an invalid one is dropped (an answer that is not JSON, or has no item list,
drops them all). Items below ``memory_min_confidence`` and near-duplicates of the user's active memory
(normalized text, ``memory_duplicate_similarity``) are dropped too; the rest are stored with source
``discussion``. One ``discussion_note`` ("Discussed <title> on <date>", with the model's note appended)
is stored for every extracted conversation, whatever the model answered.

Idempotence: the outcome is recorded in ``conversations.context_loaded["memory_extraction"]``, checked
before the call and again under a row lock before anything is written, so a redelivered or doubled task
stores nothing twice. The model is called outside any transaction.

Paused memory (``users.memory_enabled`` false): nothing is extracted and nothing is stored, not even the
discussion note, and the conversation is marked ``skipped`` (turning memory on later does not reach back
into conversations held while it was off). The same holds for an account being deleted.

Reactions: :func:`learn_from_reaction` adds an ``interest`` (source ``reaction``) once the user has liked
``memory_reaction_likes`` posts sharing a title keyword or a domain within ``memory_reaction_window_days``
(once per topic: a topic the user forgot is not learned again).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from config.settings import Settings, get_settings
from hnpal.conversations.models import Conversation
from hnpal.db.session import rowcount, session_scope
from hnpal.deliveries.models import Delivery
from hnpal.errors import HNPalError, NotYours
from hnpal.llm import sanitize
from hnpal.llm import service as llm
from hnpal.llm.base import LLMError, LLMRequest, Provider
from hnpal.memory.models import MAX_MEMORY_CHARS, MEMORY_TYPES, Memory, MemoryType
from hnpal.memory.offline import VOCABULARY  # importing it registers the offline "memory_extraction" handler
from hnpal.posts.models import Post
from hnpal.users.models import User

log = logging.getLogger(__name__)

MARKER = "memory_extraction"
MAX_ITEMS = 40  # items looked at per answer; a runaway list is cut
MAX_ITEM_CHARS = 1000  # an extracted item is a sentence or two, not an essay
KNOWN_IN_PROMPT = 60  # active memory items shown to the model so it does not repeat them
NOTE_TITLE_CHARS = 200
QUARANTINED_CHARS = 500  # of one rejected item (or answer) kept in the outcome for an operator to read
QUARANTINED_ITEMS = 10
GROUPS: dict[str, tuple[str, ...]] = {
    "interests": ("interest",),
    "discussions": ("discussion_note",),
    "about_you": ("work_context", "personal_context", "preference"),
    "notes": ("fact", "opinion", "connection"),
}
assert {t for types in GROUPS.values() for t in types} == set(MEMORY_TYPES)

EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": list(MEMORY_TYPES)},
                    "content": {"type": "string"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["type", "content", "confidence"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
SYSTEM_PROMPT = """You maintain the long-term memory of HN Pal, a Hacker News companion, about one user.
Read the discussion (the user and HN Pal talking about one Hacker News post) and extract what is
worth remembering about the USER for future conversations and for picking posts they will like.

Return JSON: {"items": [{"type": ..., "content": ..., "confidence": ...}]}.
Types: interest (a topic they care about, a few words), preference (how they like things),
work_context (their job, stack, projects), personal_context (other facts they shared about themselves),
fact (something they know or told), opinion (a view they hold), connection (a link they made between
this post and something else), discussion_note (one sentence: what this discussion was about and what
they concluded). Content: one short sentence, in English, about the user, at most 200 characters.
Confidence: 0 to 1, how sure you are that the item is true and lasting.
Only what the user said or clearly showed; never the assistant's opinions. Skip what is already known.
An empty list is a fine answer."""


class ExtractedItem(BaseModel):
    type: MemoryType
    content: str = Field(min_length=1, max_length=MAX_ITEM_CHARS)
    confidence: float = Field(ge=0, le=1)

    @field_validator("content")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = " ".join(sanitize.clean_text(value).split())  # no NUL or control character is ever stored
        if not value:
            raise ValueError("empty content")
        return value


class MalformedAnswer(HNPalError, ValueError):
    """The model's answer is not JSON, or not an object with an ``items`` list."""


@dataclass
class Parsed:
    items: list[ExtractedItem]
    invalid: list[str] = field(default_factory=list)  # why each rejected item was rejected
    rejected: list[str] = field(default_factory=list)  # the rejected items themselves (JSON, cut), quarantined


def parse_answer(text_: str) -> Parsed:
    """Validate a model answer item by item. Raises MalformedAnswer when nothing in it is usable."""
    try:
        sanitize.check_json(text_ or "")
        data = json.loads(text_)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedAnswer(f"not JSON: {exc}"[:300]) from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise MalformedAnswer("not an object with an 'items' list")
    parsed = Parsed(items=[])
    for n, raw in enumerate(data["items"][:MAX_ITEMS]):
        try:
            parsed.items.append(ExtractedItem.model_validate(raw))
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'item'}: {e['msg']}" for e in exc.errors())
            parsed.invalid.append(f"item {n}: {reasons}"[:300])
            parsed.rejected.append(json.dumps(raw, ensure_ascii=True)[:QUARANTINED_CHARS])
    if len(data["items"]) > MAX_ITEMS:
        parsed.invalid.append(f"{len(data['items']) - MAX_ITEMS} items past the first {MAX_ITEMS} ignored")
    return parsed


# --- similarity -------------------------------------------------------------------------------------


def normalize(text_: str) -> str:
    """Lower case, accents and punctuation folded, whitespace collapsed: the form duplicates are told in."""
    folded = unicodedata.normalize("NFKD", text_.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w+#]+", " ", folded).split())


def similarity(a: str, b: str) -> float:
    """The larger of the character-sequence ratio and the word-set Jaccard index of the normalized texts."""
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    ratio = difflib.SequenceMatcher(None, na, nb, autojunk=False).ratio()
    wa, wb = set(na.split()), set(nb.split())
    jaccard = len(wa & wb) / len(wa | wb)
    return max(ratio, jaccard)


@dataclass
class Selection:
    keep: list[ExtractedItem]
    low_confidence: int = 0
    duplicates: int = 0


def select_items(
    items: list[ExtractedItem], existing: list[str], *, min_confidence: float, max_similarity: float
) -> Selection:
    """Drop items below ``min_confidence`` and items as similar as ``max_similarity`` to an existing text
    or to an item kept before them."""
    selection = Selection(keep=[])
    known = list(existing)
    for item in items:
        if item.confidence < min_confidence:
            selection.low_confidence += 1
            continue
        if any(similarity(item.content, other) >= max_similarity for other in known):
            selection.duplicates += 1
            continue
        selection.keep.append(item)
        known.append(item.content)
    return selection


# --- extraction -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    conversation_id: int
    status: str  # done | partial | malformed | failed | skipped | already | active | missing
    stored: list[int] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


class RetryLater(HNPalError):
    """A transient LLM failure on an attempt that may be retried; nothing was written."""


@dataclass
class _Material:
    user_id: int
    post_id: int
    title: str
    day: str
    transcript: str
    user_messages: list[str]
    known: list[str]
    interests: list[str]


def _messages_text(conversation: Conversation, max_chars: int) -> tuple[str, list[str]]:
    lines: list[str] = []
    said: list[str] = []
    for message in conversation.messages or []:
        if not isinstance(message, dict):
            continue
        body = message.get("content", message.get("text"))
        if not isinstance(body, str) or not body.strip():
            continue
        role = message.get("role")
        if role == "user":
            said.append(body)
        lines.append(f"{'User' if role == 'user' else 'HN Pal'}: {' '.join(body.split())}")
    transcript = "\n".join(lines)
    if conversation.summary:
        transcript = f"Summary of the earlier part: {conversation.summary}\n\n{transcript}"
    if len(transcript) > max_chars:
        transcript = "…" + transcript[-max_chars:]
    user_text = "\n".join(said)
    if len(user_text) > max_chars:
        said = [user_text[-max_chars:]]
    return transcript, said


def _marker(conversation: Conversation) -> dict[str, Any] | None:
    value = (conversation.context_loaded or {}).get(MARKER)
    return value if isinstance(value, dict) else None


def _mark(conversation: Conversation, marker: dict[str, Any]) -> None:
    conversation.context_loaded = {**(conversation.context_loaded or {}), MARKER: marker}  # a new dict: saved


def _blocked(user: User | None) -> str | None:
    if user is None or user.status == "deleted":
        return "account deleted"
    if not user.memory_enabled:
        return "memory paused"
    return None


def _load(conversation_id: int, settings: Settings) -> Outcome | _Material:
    with session_scope() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return Outcome(conversation_id, "missing")
        if _marker(conversation) is not None:
            return Outcome(conversation_id, "already", detail=dict(_marker(conversation) or {}))
        if conversation.ended_at is None:
            return Outcome(conversation_id, "active")
        user = session.get(User, conversation.user_id)
        reason = _blocked(user)
        if reason is not None:
            _mark(conversation, {"status": "skipped", "reason": reason, "at": datetime.now(UTC).isoformat()})
            return Outcome(conversation_id, "skipped", detail={"reason": reason})
        assert user is not None
        post = session.get(Post, conversation.post_id)
        transcript, said = _messages_text(conversation, settings.memory_extraction_max_chars)
        known = list(
            session.scalars(
                select(Memory.content)
                .where(Memory.user_id == user.id, Memory.active)
                .order_by(Memory.created_at.desc())
                .limit(KNOWN_IN_PROMPT)
            )
        )
        ended = conversation.ended_at
        return _Material(
            user_id=user.id,
            post_id=conversation.post_id,
            title=post.title if post is not None else "a Hacker News post",
            day=(ended if ended.tzinfo else ended.replace(tzinfo=UTC)).date().isoformat(),
            transcript=transcript,
            user_messages=said,
            known=known,
            interests=list(user.interests),
        )


def _provider(settings: Settings) -> Provider:
    from hnpal.llm import health

    paid = llm.paid_provider(settings)
    if paid is not None and health.usable(settings) and llm.budget_left(settings):
        return paid
    return llm.offline_provider()


def _request(material: _Material) -> LLMRequest:
    known = "\n".join(f"- {k}" for k in material.known) or "(nothing yet)"
    marker = sanitize.new_marker()
    user_prompt = "\n\n".join(
        sanitize.data_block(name, body, marker)
        for name, body in (
            ("POST", material.title),
            ("ALREADY KNOWN ABOUT THE USER", known),
            ("DISCUSSION", material.transcript or "(no messages)"),
        )
    )
    system = f"{SYSTEM_PROMPT}\n\n{sanitize.data_rules(marker)}"
    return LLMRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user_prompt}],
        max_tokens=700,
        temperature=0.0,
        json_schema=EXTRACTION_SCHEMA,
        schema_name="memory_extraction",
        hints={
            "task": "memory_extraction",
            "title": material.title,
            "user_messages": material.user_messages,
            "vocabulary": material.interests,
        },
    )


def note_text(title: str, day: str, note: str | None = None) -> str:
    title = " ".join(title.split())
    if len(title) > NOTE_TITLE_CHARS:
        title = title[: NOTE_TITLE_CHARS - 1].rstrip() + "…"
    text_ = f"Discussed “{title}” on {day}"
    if note:
        note = note.strip()
        text_ += f": {note}" if note.endswith(("”", '"', "?", "!", "…")) else f": {note.rstrip('.')}."
    return text_[:MAX_MEMORY_CHARS]


def extract(*, conversation_id: int, may_retry: bool = False, settings: Settings | None = None) -> Outcome:
    """Extract memory from one ended conversation (see the module docstring). With ``may_retry`` a
    transient LLM failure raises RetryLater (nothing written) instead of being recorded as final."""
    settings = settings or get_settings()
    loaded = _load(conversation_id, settings)
    if isinstance(loaded, Outcome):
        return loaded
    material = loaded
    items: list[ExtractedItem] = []
    detail: dict[str, Any] = {}
    status = "done"
    if material.user_messages:
        provider = _provider(settings)
        try:
            result = llm.call(
                _request(material),
                provider=provider,
                agent_type="memory_extraction",
                user_id=material.user_id,
                conversation_id=conversation_id,
                post_id=material.post_id,
                purpose="memory",
                settings=settings,
            )
        except LLMError as exc:
            if exc.transient and may_retry and exc.kind != "malformed":
                raise RetryLater(str(exc)) from exc
            status = "malformed" if exc.kind == "malformed" else "failed"
            detail["error"] = f"{exc.kind or 'error'}: {exc}"[:500]
            if exc.answer:
                detail["quarantined"] = [exc.answer[:QUARANTINED_CHARS]]
            log.warning("memory extraction of conversation %s: LLM call failed (%s)", conversation_id, exc)
        else:
            detail["model"] = result.model
            try:
                parsed = parse_answer(result.text)
            except MalformedAnswer as exc:
                status = "malformed"
                detail["error"] = str(exc)[:500]
                detail["quarantined"] = [result.text[:QUARANTINED_CHARS]]
                log.warning("memory extraction of conversation %s: answer rejected (%s)", conversation_id, exc)
            else:
                items = parsed.items
                if parsed.invalid:
                    detail["invalid"] = parsed.invalid[:10]
                    detail["quarantined"] = parsed.rejected[:QUARANTINED_ITEMS]
                    detail["invalid_count"] = len(parsed.invalid)
                    log.warning(
                        "memory extraction of conversation %s: %d invalid items dropped: %s",
                        conversation_id,
                        len(parsed.invalid),
                        "; ".join(parsed.invalid[:3]),
                    )
    return _store(conversation_id, material, items, status, detail, settings)


def _store(
    conversation_id: int,
    material: _Material,
    items: list[ExtractedItem],
    status: str,
    detail: dict[str, Any],
    settings: Settings,
) -> Outcome:
    """Store the note and the items; when the items cannot be stored, store the note alone and keep the
    items in the outcome (quarantined) for an operator to read."""
    try:
        return _store_once(conversation_id, material, items, status, detail, settings)
    except (DBAPIError, ValueError) as exc:
        if not items:
            raise
        log.warning("memory extraction of conversation %s: items not storable (%s); the note alone is stored",
                    conversation_id, exc)  # fmt: skip
        kept = [json.dumps(i.model_dump(), ensure_ascii=True)[:QUARANTINED_CHARS] for i in items]
        detail = {**detail, "store_error": str(exc)[:300],
                  "quarantined": (detail.get("quarantined") or []) + kept[:QUARANTINED_ITEMS]}  # fmt: skip
        return _store_once(conversation_id, material, [], "partial", detail, settings)


def _store_once(
    conversation_id: int,
    material: _Material,
    items: list[ExtractedItem],
    status: str,
    detail: dict[str, Any],
    settings: Settings,
) -> Outcome:
    with session_scope() as session:
        conversation = session.get(Conversation, conversation_id, with_for_update=True)
        if conversation is None:  # deleted meanwhile (/memory clear, /deletemydata purge)
            return Outcome(conversation_id, "missing")
        if _marker(conversation) is not None:  # another run finished first
            return Outcome(conversation_id, "already", detail=dict(_marker(conversation) or {}))
        user = session.get(User, conversation.user_id, with_for_update=True)
        now = datetime.now(UTC).isoformat()
        reason = _blocked(user)
        if reason is not None:  # paused (or deleted) while the model was thinking
            _mark(conversation, {"status": "skipped", "reason": reason, "at": now})
            return Outcome(conversation_id, "skipped", detail={"reason": reason})
        notes = sorted((i for i in items if i.type == "discussion_note"), key=lambda i: -i.confidence)
        others = [i for i in items if i.type != "discussion_note"]
        existing = list(
            session.scalars(select(Memory.content).where(Memory.user_id == material.user_id, Memory.active))
        )
        chosen = select_items(
            others,
            existing,
            min_confidence=settings.memory_min_confidence,
            max_similarity=settings.memory_duplicate_similarity,
        )
        note_detail = notes[0].content if notes and notes[0].confidence >= settings.memory_min_confidence else None
        rows = [
            Memory(
                user_id=material.user_id,
                type="discussion_note",
                content=note_text(material.title, material.day, note_detail),
                source_type="discussion",
                source_post_id=material.post_id,
                source_conversation_id=conversation_id,
                confidence=Decimal("1.0"),
            )
        ]
        rows += [
            Memory(
                user_id=material.user_id,
                type=item.type,
                content=item.content,
                source_type="discussion",
                source_post_id=material.post_id,
                source_conversation_id=conversation_id,
                confidence=Decimal(str(round(item.confidence, 2))),
            )
            for item in chosen.keep
        ]
        session.add_all(rows)
        session.flush()
        detail = {
            **detail,
            "stored": len(rows),
            "low_confidence": chosen.low_confidence,
            "duplicates": chosen.duplicates,
        }
        _mark(conversation, {"status": status, "at": now, **detail})
        return Outcome(conversation_id, status, stored=[r.id for r in rows], detail=detail)


# --- reactions --------------------------------------------------------------------------------------

REACTION_NOISE = frozenset(
    """show ask tell hn launch launched introducing announcing release released why how what guide using use
    built build building first year years day days week part via better best faster new now need needs
    get got make made way vs people thing things time good bad just like one two more less story stories
    free simple small big fast slow modern old future state life world home work working real full hard
    easy inside behind beyond through toward towards""".split()
)
SHORT_TOPICS = frozenset({"ai", "go", "ml", "ui", "ux", "vr", "ar", "os", "c", "r"})
GENERIC_DOMAINS = frozenset(
    """github.com gitlab.com youtube.com youtu.be medium.com twitter.com x.com reddit.com
    news.ycombinator.com docs.google.com substack.com en.wikipedia.org""".split()
)
_HN_PREFIX = re.compile(r"^\s*(?:show|ask|tell|launch)\s+hn\s*:\s*", re.IGNORECASE)


def _named(word: str, post: Post) -> bool:
    """Whether the title names ``word`` as a topic: a known topic, or spelled like a name or a term
    ("Rust", "SQLite", "C++") somewhere other than the title's first word (capitalized by grammar)."""
    if word in SHORT_TOPICS or word in {v.casefold() for v in VOCABULARY}:
        return True
    title = _HN_PREFIX.sub("", post.title)
    for match in re.finditer(r"(?<![a-z0-9+#])" + re.escape(word) + r"(?![a-z0-9+#])", title, flags=re.IGNORECASE):
        surface = match.group(0)
        first = not title[: match.start()].strip()
        if any(c in surface for c in "+#") or (surface[0].isupper() and not first):
            return True
    return False


def _candidates(post: Post) -> list[str]:
    from hnpal.llm.offline import STOPWORDS

    words = []
    domain = (post.domain or "").lower()
    for word in post.keywords or []:
        if not word or word in STOPWORDS or word in REACTION_NOISE or word.isdigit():
            continue
        if word == domain:
            if domain not in GENERIC_DOMAINS:
                words.append(word)
            continue
        if len(word) < 3 and word not in SHORT_TOPICS:
            continue
        if re.fullmatch(r"[\d.]+[a-z]{0,2}", word):  # 3.12, 2024, 10x, 5k
            continue
        if _named(word, post):
            words.append(word)
    return list(dict.fromkeys(words))


def _surface(word: str, post: Post) -> str:
    """The keyword as the title spells it ("Rust", "SQLite"), or the domain."""
    if word == (post.domain or "").lower():
        return word
    match = re.search(r"(?<![a-z0-9+#])" + re.escape(word) + r"(?![a-z0-9+#])", post.title, flags=re.IGNORECASE)
    return match.group(0) if match else word


def learn_from_reaction(
    *, session: Session, user: User, delivery_id: int, settings: Settings | None = None
) -> list[str]:
    """After a 👍: the topics (title keywords or the domain) of this post that the user has now liked
    often enough become ``interest`` memory rows (source ``reaction``). Returns what was learned."""
    settings = settings or get_settings()
    if not user.memory_enabled or user.status == "deleted":
        return []
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.user_id != user.id or delivery.reaction != "up":
        return []
    post = session.get(Post, delivery.post_id)
    if post is None:
        return []
    candidates = _candidates(post)
    if not candidates:
        return []
    since = datetime.now(UTC) - timedelta(days=settings.memory_reaction_window_days)
    liked = session.execute(
        text(
            "SELECT k.word, count(DISTINCT d.post_id) AS posts FROM deliveries d JOIN posts p ON p.id = d.post_id "
            "CROSS JOIN LATERAL unnest(p.keywords) AS k(word) "
            "WHERE d.user_id = :user_id AND d.reaction = 'up' AND d.reacted_at >= :since AND k.word = ANY(:words) "
            "GROUP BY k.word HAVING count(DISTINCT d.post_id) >= :likes ORDER BY posts DESC, k.word"
        ),
        {"user_id": user.id, "since": since, "words": candidates, "likes": settings.memory_reaction_likes},
    ).all()
    if not liked:
        return []
    # Any interest ever held, forgotten ones included: a topic is learned once.
    held = session.scalars(select(Memory.content).where(Memory.user_id == user.id, Memory.type == "interest"))
    known = {normalize(content) for content in held}
    learned = []
    for word, posts in liked:
        name = _surface(word, post)
        if normalize(name) in known or normalize(word) in known:
            continue
        session.add(
            Memory(
                user_id=user.id,
                type="interest",
                content=name,
                source_type="reaction",
                source_post_id=post.id,
                confidence=Decimal(str(min(0.95, 0.5 + 0.1 * posts))),
            )
        )
        known.add(normalize(name))
        learned.append(name)
    if learned:
        session.flush()
        log.info("user %s: interests learned from reactions: %s", user.id, learned)
    return learned


# --- what the user sees and controls ----------------------------------------------------------------


def grouped(*, session: Session, user_id: int, per_group: int = 12) -> dict[str, tuple[list[Memory], int]]:
    """Active memory by group (see GROUPS): the newest ``per_group`` items of each and its total."""
    result: dict[str, tuple[list[Memory], int]] = {}
    for name, types in GROUPS.items():
        condition = (Memory.user_id == user_id, Memory.active, Memory.type.in_(types))
        total = session.scalar(select(func.count()).select_from(Memory).where(*condition)) or 0
        rows = session.scalars(
            select(Memory).where(*condition).order_by(Memory.created_at.desc(), Memory.id.desc()).limit(per_group)
        ).all()
        result[name] = (list(rows), int(total))
    return result


def active_page(*, session: Session, user_id: int, page: int, per_page: int) -> tuple[list[Memory], int, int]:
    """One page of the user's active memory, newest first: (rows, total, the page actually shown)."""
    condition = (Memory.user_id == user_id, Memory.active)
    total = int(session.scalar(select(func.count()).select_from(Memory).where(*condition)) or 0)
    pages = max(1, -(-total // per_page))
    page = min(max(page, 0), pages - 1)
    rows = session.scalars(
        select(Memory)
        .where(*condition)
        .order_by(Memory.created_at.desc(), Memory.id.desc())
        .offset(page * per_page)
        .limit(per_page)
    ).all()
    return list(rows), total, page


def forget(*, session: Session, user: User, memory_id: int) -> Memory:
    """Deactivate one of the user's items; an interest chosen at onboarding leaves users.interests too."""
    from hnpal.privacy.service import audit

    item = session.get(Memory, memory_id, with_for_update=True)
    if item is None or item.user_id != user.id:
        raise NotYours(f"memory {memory_id} is not this user's")
    if item.active:
        item.active = False
        if item.type == "interest":
            wanted = item.content.casefold()
            user.interests = [i for i in user.interests if i.casefold() != wanted]
        audit(session=session, action="memory.forget", user=user, details={"memory_id": item.id, "type": item.type})
        session.flush()
    return item


def set_enabled(*, session: Session, user: User, enabled: bool) -> None:
    from hnpal.privacy.service import audit

    if user.memory_enabled == enabled:
        return
    user.memory_enabled = enabled
    audit(session=session, action="memory.resume" if enabled else "memory.pause", user=user)
    session.flush()


def clear(*, session: Session, user: User) -> dict[str, int]:
    """Forget everything: every memory item inactive, the onboarding interests dropped, every conversation
    deleted (an active discussion is ended first; the caller clears the user's Redis keys)."""
    from hnpal.privacy.service import audit, end_active_discussion

    end_active_discussion(session=session, user=user, reason="cleared")
    forgotten = rowcount(
        session.execute(update(Memory).where(Memory.user_id == user.id, Memory.active).values(active=False))
    )
    conversations = rowcount(session.execute(delete(Conversation).where(Conversation.user_id == user.id)))
    user.interests = []
    counts = {"memory_forgotten": int(forgotten or 0), "conversations_deleted": int(conversations or 0)}
    audit(session=session, action="memory.clear", user=user, details=counts)
    session.flush()
    return counts
