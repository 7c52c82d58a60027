"""The review queue: what is held, deciding through the console, the send that follows (exactly once),
timeouts, the edit taxonomy, held summaries and digests."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hnpal.db.session import get_engine, session_scope
from hnpal.review import service as review
from hnpal.sandbox.telegram_api import TelegramServer
from tests.conftest import execute, one, rows
from tests.deliveries.conftest import unique_id


class _Result:
    def __init__(self, text: str = "draft", model: str = "sandbox-model") -> None:
        self.text, self.model, self.input_tokens, self.output_tokens = text, model, 120, 30
        self.cost_usd = Decimal("0.000180")


def make_user(*, username: str | None = None, first_name: str = "Ada") -> tuple[int, int]:
    telegram_id = unique_id()
    found = rows(
        "INSERT INTO users (telegram_id, username, first_name) VALUES (:t, :u, :f) RETURNING id",
        t=telegram_id, u=username or f"u{uuid.uuid4().hex[:8]}", f=first_name,
    )  # fmt: skip
    return found[0]["id"], telegram_id


def held_answer(
    *, draft: str = "The storage engine batches fsync calls.", username: str | None = None, first_name: str = "Ada",
    due_in: timedelta = timedelta(hours=1),
) -> tuple[int, int]:  # fmt: skip
    """A held answer to a fresh user (as :func:`hnpal.conversations.service.idle_answer` stores one);
    returns (item id, user id)."""
    user_id, telegram_id = make_user(username=username, first_name=first_name)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        item_id = review.hold_answer(
            conn, user_id=user_id, chat_id=telegram_id, reason="user under review: test", draft=draft,
            question="How does it batch?", prompt=[{"role": "user", "content": "How does it batch?"}],
            results=[_Result(draft)],
        )  # fmt: skip
    execute("UPDATE review_items SET due_at = now() + make_interval(secs => :s) WHERE id = :i",
            s=due_in.total_seconds(), i=item_id)  # fmt: skip
    return item_id, user_id


@pytest.fixture
def telegram() -> TelegramServer:  # type: ignore[misc]
    with TelegramServer() as server:
        yield server


@pytest.fixture
def outbox(telegram: TelegramServer, settings_env):  # type: ignore[no-untyped-def]
    settings_env(telegram_token=telegram.token, telegram_base_url=telegram.base_url,
                 console_login_attempts="1000", console_login_address_attempts="1000")  # fmt: skip
    from hnpal.telegram.outbox import TelegramOutbox

    return TelegramOutbox(reply=True)


def chat_of(item_id: int) -> int:
    return one("SELECT chat_id FROM review_items WHERE id = :i", i=item_id)["chat_id"]


def test_edit_with_two_tags_sends_the_edited_text_once(signed_in, telegram, outbox) -> None:  # type: ignore[no-untyped-def]
    item_id, user_id = held_answer(draft="A wrong draft.")
    chat = chat_of(item_id)
    telegram.add_user(chat, "Ada")
    client, name, csrf = signed_in("reviewer")
    page = client.get(f"/review/{item_id}")
    assert "A wrong draft." in page.text and "user under review: test" in page.text and "sandbox-model" in page.text
    # an edit needs a tag: refused, nothing decided
    refused = client.post(f"/review/{item_id}/decide", data={"csrf": csrf, "action": "edit", "text": "Better."})
    assert refused.status_code == 409 and "choose at least one edit tag" in refused.text
    assert one("SELECT status FROM review_items WHERE id = :i", i=item_id)["status"] == "pending"
    done = client.post(
        f"/review/{item_id}/decide",
        data={"csrf": csrf, "action": "edit", "text": "The corrected answer.", "tags": ["factual error", "tone"]},
    )
    assert done.status_code == 200 and f"item {item_id}: edited" in done.text
    item = one("SELECT status, final_text, tags, decided_by FROM review_items WHERE id = :i", i=item_id)
    assert item == {"status": "edited", "final_text": "The corrected answer.", "tags": ["factual error", "tone"],
                    "decided_by": name}  # fmt: skip
    send = one("SELECT id, status, text FROM review_sends WHERE review_id = :i", i=item_id)
    assert send["status"] == "pending" and send["text"] == "The corrected answer."
    audit = one("SELECT operator, details FROM audit_log WHERE action = 'review.edited' AND subject_user_id = :u",
                u=user_id)  # fmt: skip
    assert audit["operator"] == name and audit["details"]["tags"] == ["factual error", "tone"]
    # the send task, twice (a redelivered message): one message
    assert review.send(send["id"], outbox=outbox) == "sent"
    assert review.send(send["id"], outbox=outbox) == "taken"
    assert [m.text for m in telegram.messages(chat)] == ["The corrected answer."]
    # deciding again is refused
    again = client.post(f"/review/{item_id}/decide", data={"csrf": csrf, "action": "approve"})
    assert again.status_code == 409 and "already decided" in again.text


def test_reject_sends_the_polite_fallback(signed_in, telegram, outbox) -> None:  # type: ignore[no-untyped-def]
    item_id, _ = held_answer(draft="Something unsafe.")
    chat = chat_of(item_id)
    telegram.add_user(chat, "Ada")
    client, _, csrf = signed_in("reviewer")
    client.post(f"/review/{item_id}/decide", data={"csrf": csrf, "action": "reject"})
    send = one("SELECT id FROM review_sends WHERE review_id = :i", i=item_id)
    assert review.send(send["id"], outbox=outbox) == "sent"
    assert [m.text for m in telegram.messages(chat)] == [review.REJECT_FALLBACK]


def test_a_stale_claim_is_taken_over_and_the_sweep_resends(telegram, outbox, settings_env) -> None:  # type: ignore[no-untyped-def]
    item_id, _ = held_answer(draft="Approved text.")
    chat = chat_of(item_id)
    telegram.add_user(chat, "Ada")
    with session_scope() as session:
        decision = review.decide(session, item_id=item_id, operator="tester", action="approve")
    # a sender claimed it and died before sending (kill -9): the claim is fresh, so nobody else sends yet
    execute("UPDATE review_sends SET status = 'sending', claimed_at = now() WHERE id = :s", s=decision.send_id)
    assert review.send(decision.send_id, outbox=outbox) == "taken"
    with session_scope() as session:
        assert decision.send_id not in review.sweep(session).sends
    execute("UPDATE review_sends SET claimed_at = now() - interval '10 minutes' WHERE id = :s", s=decision.send_id)
    with session_scope() as session:
        assert decision.send_id in review.sweep(session).sends
    assert review.send(decision.send_id, outbox=outbox) == "sent"
    assert review.send(decision.send_id, outbox=outbox) == "taken"
    assert [m.text for m in telegram.messages(chat)] == ["Approved text."]


def test_timeout_follows_the_policy_default(settings_env, telegram, outbox) -> None:  # type: ignore[no-untyped-def]
    late, _ = held_answer(draft="Nobody looked.", due_in=timedelta(seconds=-1))
    waiting, _ = held_answer(draft="Still has time.")
    with session_scope() as session:
        swept = review.sweep(session)
    assert late in swept.decided and waiting not in swept.decided
    item = one("SELECT status, decided_by FROM review_items WHERE id = :i", i=late)
    assert item == {"status": "rejected", "decided_by": "timeout"}  # HNPAL_REVIEW_TIMEOUT_ANSWER=reject
    assert one("SELECT text FROM review_sends WHERE review_id = :i", i=late)["text"] == review.REJECT_FALLBACK
    settings_env(review_timeout_answer="approve", telegram_token=telegram.token,
                 telegram_base_url=telegram.base_url)  # fmt: skip
    execute("UPDATE review_items SET due_at = now() - interval '1 second' WHERE id = :i", i=waiting)
    with session_scope() as session:
        review.sweep(session)
    assert one("SELECT status FROM review_items WHERE id = :i", i=waiting)["status"] == "approved"
    assert one("SELECT action FROM audit_log WHERE details->>'item' = :i", i=str(waiting))["action"] == \
        "review.approved"  # fmt: skip


def test_admins_add_tags_and_the_seeded_taxonomy_is_there(signed_in) -> None:  # type: ignore[no-untyped-def]
    names = [r["name"] for r in rows("SELECT name FROM edit_tags ORDER BY id")]
    assert names[:7] == ["factual error", "hallucination", "tone", "too long", "formatting", "unsafe", "other"]
    client, _, csrf = signed_in("reviewer")
    assert client.post("/tags/add", data={"csrf": csrf, "name": "outdated"}).status_code == 403
    client, name, csrf = signed_in("admin")
    assert client.post("/tags/add", data={"csrf": csrf, "name": "outdated"}).status_code == 200
    item_id, _ = held_answer()
    client.post(f"/review/{item_id}/decide",
                data={"csrf": csrf, "action": "edit", "text": "Fixed.", "tags": ["outdated"]})  # fmt: skip
    assert one("SELECT tags FROM review_items WHERE id = :i", i=item_id)["tags"] == ["outdated"]
    analytics = client.get("/analytics")
    assert "outdated" in analytics.text and "sandbox-model" in analytics.text


def test_unknown_tag_is_refused(signed_in) -> None:  # type: ignore[no-untyped-def]
    item_id, _ = held_answer()
    client, _, csrf = signed_in("reviewer")
    refused = client.post(f"/review/{item_id}/decide",
                          data={"csrf": csrf, "action": "edit", "text": "x", "tags": ["made up"]})  # fmt: skip
    assert refused.status_code == 409 and "unknown edit tag" in refused.text


# --- summaries -------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from hnpal.content import ContentStore

    with ContentStore.open_writer(tmp_path / "content.rocksdb") as s:
        yield s


def _summarizable_post(store, *, score: int, text: str | None) -> int:  # type: ignore[no-untyped-def]
    from hnpal.posts.models import Post

    hn_id = unique_id()
    if text:
        store.put(hn_id, text=text, markdown=text)
    with session_scope() as session:
        post = Post(hn_id=hn_id, type="story", title=f"Held story {hn_id}", url=f"https://example.com/{hn_id}",
                    score=score, comment_count=0, has_text=bool(text), has_markdown=bool(text),
                    is_crawl_success=True, crawl_status="success")  # fmt: skip
        session.add(post)
        session.flush()
        return post.id


ARTICLE = " ".join(f"Sentence {i} explains how the queue keeps work safe across restarts." for i in range(30))


def test_flagged_summary_is_held_out_of_digests_until_approved(store, settings_env, signed_in) -> None:  # type: ignore[no-untyped-def]
    from hnpal.summaries import service as summaries

    settings_env(review_summaries="flagged", review_score_threshold="500", console_login_attempts="1000",
                 console_login_address_attempts="1000")  # fmt: skip
    plain = _summarizable_post(store, score=100, text=ARTICLE)
    hot = _summarizable_post(store, score=900, text=ARTICLE)
    summaries.summarize(post_id=plain, style="basic", store=store)
    summaries.summarize(post_id=hot, style="basic", store=store)
    held = one("SELECT id, reason, draft FROM review_items WHERE post_id = :p", p=hot)
    assert held is not None and "score 900 above 500" in held["reason"]
    hot_post = one("SELECT summary_status, summarized_at FROM posts WHERE id = :p", p=hot)
    assert hot_post == {"summary_status": "held", "summarized_at": None}  # no digest selects it
    plain_item = one("SELECT reason, model FROM review_items WHERE post_id = :p", p=plain)
    assert plain_item is not None and "model offline-extractive not seen before" in plain_item["reason"]
    assert "not seen before" in held["reason"]
    client, _, csrf = signed_in("reviewer")
    page = client.get(f"/review/{held['id']}")
    assert "Sentence 1 explains" in page.text  # the draft made from the article
    client.post(f"/review/{held['id']}/decide",
                data={"csrf": csrf, "action": "edit", "text": "A clearer summary.", "tags": ["too long"]})  # fmt: skip
    after = one("SELECT summary_status, summary, summarized_at FROM posts WHERE id = :p", p=hot)
    assert after["summary_status"] == "done" and after["summary"] == "A clearer summary."
    assert after["summarized_at"] is not None
    assert one("SELECT text FROM summaries WHERE id = (SELECT summary_id FROM review_items WHERE id = :i)",
               i=held["id"])["text"] == "A clearer summary."  # fmt: skip
    assert one("SELECT count(*) AS n FROM review_sends WHERE review_id = :i", i=held["id"])["n"] == 0
    # a person approved one of this model's summaries: the next ordinary post is not held
    later = _summarizable_post(store, score=100, text=ARTICLE)
    summaries.summarize(post_id=later, style="basic", store=store)
    assert one("SELECT id FROM review_items WHERE post_id = :p", p=later) is None
    assert one("SELECT summary_status FROM posts WHERE id = :p", p=later)["summary_status"] == "done"


def test_rejected_summary_keeps_the_post_out(store, settings_env) -> None:  # type: ignore[no-untyped-def]
    from hnpal.summaries import service as summaries

    settings_env(review_summaries="all")
    post_id = _summarizable_post(store, score=10, text=ARTICLE)
    summaries.summarize(post_id=post_id, style="basic", store=store)
    item = one("SELECT id FROM review_items WHERE post_id = :p", p=post_id)
    with session_scope() as session:
        review.decide(session, item_id=item["id"], operator="tester", action="reject")
    assert one("SELECT summary_status, summarized_at FROM posts WHERE id = :p", p=post_id) == {
        "summary_status": "rejected", "summarized_at": None}  # fmt: skip


def test_policy_off_holds_nothing(store, settings_env) -> None:  # type: ignore[no-untyped-def]
    from hnpal.summaries import service as summaries

    settings_env(review_summaries="off")
    post_id = _summarizable_post(store, score=5000, text=None)
    summaries.summarize(post_id=post_id, style="basic", store=store)
    assert one("SELECT id FROM review_items WHERE post_id = :p", p=post_id) is None
    assert one("SELECT summary_status FROM posts WHERE id = :p", p=post_id)["summary_status"] == "done"


def test_queue_page_lists_pending_items_oldest_first(signed_in) -> None:  # type: ignore[no-untyped-def]
    first, _ = held_answer(draft="first held")
    second, _ = held_answer(draft="second held")
    client, _, _ = signed_in("viewer")
    text = client.get("/queue?kind=answer").text
    assert text.index(f'/review/{first}"') < text.index(f'/review/{second}"')
