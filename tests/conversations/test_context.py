"""Context load: what goes in, the token budget, and the record of it (real PostgreSQL and RocksDB)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from config.settings import get_settings
from hnpal.content.store import ContentStore
from hnpal.conversations.context import load
from hnpal.ingest.comments import thread_document
from hnpal.llm.tokens import count_tokens
from hnpal.posts.models import Post


def _user(session, telegram_id: int) -> int:  # type: ignore[no-untyped-def]
    return session.execute(
        text("INSERT INTO users (telegram_id, first_name) VALUES (:t, 'Ada') RETURNING id"), {"t": telegram_id}
    ).scalar_one()


def _post(session, hn_id: int, title: str, **flags: object) -> Post:  # type: ignore[no-untyped-def]
    session.execute(
        text("INSERT INTO posts (hn_id, type, title, url) VALUES (:h, 'story', :t, 'https://example.org/x')"),
        {"h": hn_id, "t": title},
    )
    post = session.query(Post).filter(Post.hn_id == hn_id).one()
    for key, value in flags.items():
        setattr(post, key, value)
    session.flush()
    return post


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    with ContentStore.open_writer(tmp_path / "content", block_cache_mb=8) as opened:
        yield opened


def test_context_is_cut_to_the_budget_and_recorded(db_session, store, settings_env) -> None:  # type: ignore[no-untyped-def]
    settings_env(discussion_context_tokens=1500, discussion_comments=50, discussion_related=2)
    uid = _user(db_session, 8_100_001)
    article = "\n\n".join(f"Paragraph {n} explains how the write-ahead log keeps data safe." for n in range(2000))
    comments = [{"id": 9000 + n, "by": "u", "depth": 0, "text": f"Comment {n} on fsync batching."} for n in range(60)]
    post = _post(
        db_session, 940_000_001, "Write-ahead logging in PostgreSQL", has_markdown=True,
        comments_fetched_at=datetime.now(UTC),
    )  # fmt: skip
    store.put(post.hn_id, markdown=article, comments=thread_document(post.hn_id, comments, 60))
    memory_ids = [
        db_session.execute(
            text("INSERT INTO memory (user_id, type, content) VALUES (:u, :t, :c) RETURNING id"),
            {"u": uid, "t": kind, "c": content},
        ).scalar_one()
        for kind, content in (("fact", "Runs PostgreSQL at work"), ("interest", "Databases"))
    ]
    db_session.execute(
        text("INSERT INTO memory (user_id, type, content, active) VALUES (:u, 'fact', 'Forgotten fact', false)"),
        {"u": uid},
    )
    related = _post(db_session, 940_000_002, "PostgreSQL logging internals")
    unrelated = _post(db_session, 940_000_003, "Gardening with kids")
    ids = {}
    for past, summary in ((related, "Talked about WAL archiving."), (unrelated, "Talked about tomatoes.")):
        ids[past.hn_id] = db_session.execute(
            text(
                "INSERT INTO conversations (user_id, post_id, summary, ended_at, end_reason) "
                "VALUES (:u, :p, :s, now(), 'done') RETURNING id"
            ),
            {"u": uid, "p": past.id, "s": summary},
        ).scalar_one()

    asked = _post(db_session, 940_000_005, "Databases on tiny machines")  # related through the interest
    ids[asked.hn_id] = db_session.execute(
        text(
            "INSERT INTO conversations (user_id, post_id, messages, started_at, ended_at, end_reason) VALUES "
            "(:u, :p, CAST(:m AS jsonb), now() - interval '1 day', now(), 'timeout') RETURNING id"
        ),
        {
            "u": uid,
            "p": asked.id,
            "m": json.dumps([{"role": "user", "content": "Is SQLite enough?", "timestamp": "x"}]),
        },
    ).scalar_one()

    context = load(session=db_session, user_id=uid, post=post, interests=["Databases"], store=store)
    loaded = context.loaded
    assert json.loads(json.dumps(loaded)) == loaded  # stored as JSONB as it is
    assert loaded["budget_tokens"] == 1500
    assert count_tokens(context.text, get_settings().openai_model) <= 1500 + 50
    assert loaded["article"]["loaded"] and loaded["article"]["truncated"]
    assert loaded["article"]["source_tokens"] > 1500 and 0 < loaded["article"]["tokens"] < 1500
    assert loaded["comments"]["available"] == 50 and 0 < loaded["comments"]["count"] < 50
    assert loaded["comments"]["truncated"]
    assert sorted(loaded["memory"]["ids"]) == sorted(memory_ids) and loaded["memory"]["count"] == 2
    # best keyword overlap first ("postgresql" and "logging"), then the one sharing the interest
    assert loaded["related"]["conversation_ids"] == [ids[related.hn_id], ids[asked.hn_id]]
    assert "Talked about WAL archiving." in context.text and "tomatoes" not in context.text
    assert "“Databases on tiny machines” (HN 940000005): The user asked: Is SQLite enough?" in context.text
    assert "Forgotten fact" not in context.text
    assert "Paragraph 0 explains" in context.text and "Paragraph 1999" not in context.text
    assert context.text.index("## The article") < context.text.index("## Top HN comments")


def test_context_without_content(db_session, store) -> None:  # type: ignore[no-untyped-def]
    uid = _user(db_session, 8_100_002)
    post = _post(db_session, 940_000_004, "Nothing stored for this one")
    context = load(session=db_session, user_id=uid, post=post, store=store)
    assert not context.loaded["article"]["loaded"] and not context.loaded["article"]["store_unavailable"]
    assert context.loaded["comments"]["count"] == 0 and context.loaded["memory"]["count"] == 0
    assert "(not available: rely on the title and the HN thread)" in context.text


def test_the_submitters_own_text_is_in_the_context(db_session, store) -> None:  # type: ignore[no-untyped-def]
    uid = _user(db_session, 8_100_003)
    words = "Hi HN, we built this after an fsync batching bug cost us a week."
    post = _post(db_session, 940_000_005, "Show HN: Batching fsync", has_markdown=True, has_hn_text=True)
    store.put(post.hn_id, markdown="The write-up of the batching design.", hn_text=words)
    context = load(session=db_session, user_id=uid, post=post, store=store)
    assert context.loaded["article"]["loaded"]
    assert context.article.index(words) < context.article.index("The write-up of the batching design.")
    # with no article stored, the submitter's words are the whole of it
    bare = _post(db_session, 940_000_006, "Show HN: Only words", has_hn_text=True)
    store.put(bare.hn_id, hn_text=words)
    assert words in load(session=db_session, user_id=uid, post=bare, store=store).article
