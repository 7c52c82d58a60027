"""The users, costs, pipeline and analytics pages, and the user actions (silence with an end, export),
through the real app and database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hnpal.db.session import session_scope
from hnpal.review import service as review
from tests.conftest import execute, one, rows
from tests.console.test_review import held_answer, make_user


def test_costs_page_reads_the_daily_rollup_and_todays_top_spenders(signed_in) -> None:  # type: ignore[no-untyped-def]
    user_id, _ = make_user(username="bigspender")
    model = f"model-{user_id}"
    for agent_type, cost in (("discussion", "0.25"), ("discussion", "0.50"), ("summarization", "0.125")):
        execute(
            "INSERT INTO agent_calls (user_id, agent_type, model, input_tokens, output_tokens, cost_usd) "
            "VALUES (:u, :a, :m, 100, 10, :c)",
            u=user_id, a=agent_type, m=model, c=cost,
        )  # fmt: skip
    daily = rows("SELECT agent_type, calls, input_tokens, cost_usd FROM llm_cost_daily WHERE model = :m "
                 "ORDER BY agent_type", m=model)  # fmt: skip
    assert [(d["agent_type"], d["calls"], d["input_tokens"], float(d["cost_usd"])) for d in daily] == [
        ("discussion", 2, 200, 0.75), ("summarization", 1, 100, 0.125)]  # fmt: skip
    execute(
        "INSERT INTO user_token_usage (user_id, date, total_input_tokens, total_output_tokens, total_cost_usd) "
        "VALUES (:u, (now() AT TIME ZONE 'UTC')::date, 300, 30, 999)",
        u=user_id,
    )
    client, _, _ = signed_in("reviewer")
    page = client.get("/costs").text
    assert model in page and "discussions" in page and "summaries" in page
    top = page[page.index('id="top-users"') :]
    assert f'/users/{user_id}"' in top and "bigspender" in top
    assert "bigspender" in client.get("/costs?top_days=7").text
    viewer, _, _ = signed_in("viewer")
    assert "bigspender" not in viewer.get("/costs").text


def test_pipeline_and_analytics_pages(signed_in) -> None:  # type: ignore[no-untyped-def]
    item_id, _ = held_answer()
    with session_scope() as session:
        review.decide(session, item_id=item_id, operator="tester", action="edit", edited="Better.", tags=["tone"])
    client, _, _ = signed_in("viewer")
    pipeline = client.get("/pipeline").text
    assert "Crawl outcomes" in pipeline and "Queue depths" in pipeline and 'href="http://127.0.0.1:5555"' in pipeline
    analytics = client.get("/analytics").text
    latency = analytics[analytics.index('id="latency"') : analytics.index('id="tags"')]
    assert "answer" in latency
    assert "tone" in analytics[analytics.index('id="tags"') :]


def test_silence_with_an_end_and_its_audit(signed_in) -> None:  # type: ignore[no-untyped-def]
    user_id, _ = make_user()
    client, name, csrf = signed_in("reviewer")
    refused = client.post(f"/users/{user_id}/silence", data={"csrf": csrf, "reason": "  "})
    assert "silencing needs a reason" in refused.text
    client.post(f"/users/{user_id}/silence", data={"csrf": csrf, "reason": "spam", "hours": "2"})
    row = one("SELECT silenced, silence_reason, silenced_until, updated_by FROM user_protocol WHERE user_id = :u",
              u=user_id)  # fmt: skip
    assert row["silenced"] and row["silence_reason"] == "spam" and row["updated_by"] == name
    assert timedelta(hours=1.9) < row["silenced_until"] - datetime.now(UTC) <= timedelta(hours=2)
    with session_scope() as session:
        assert review.silenced(session, user_id) is not None
    execute("UPDATE user_protocol SET silenced_until = now() - interval '1 second' WHERE user_id = :u", u=user_id)
    with session_scope() as session:
        assert review.silenced(session, user_id) is None  # over at its end, by itself
    page = client.get(f"/users/{user_id}").text
    assert "protocol.silence" in page and name in page
    audit = one("SELECT operator, details FROM audit_log WHERE action = 'protocol.silence' AND subject_user_id = :u",
                u=user_id)  # fmt: skip
    assert audit["operator"] == name and audit["details"]["reason"] == "spam"


def test_quarantined_messages_expire_after_seven_days() -> None:
    user_id, telegram_id = make_user()
    with session_scope() as session:
        from hnpal.users.models import User

        user = session.get(User, user_id)
        review.silence(session, user_id=user_id, operator="tester", reason="x")
        session.flush()
        assert review.quarantine(session, user=user, update_id=None, message={"text": "one"}) is True
        assert review.quarantine(session, user=user, update_id=None, message={"text": "two"}) is False  # one notice
    held = rows("SELECT id, expires_at FROM quarantine_messages WHERE user_id = :u ORDER BY id", u=user_id)
    assert all(timedelta(days=6.9) < h["expires_at"] - datetime.now(UTC) <= timedelta(days=7) for h in held)
    execute("UPDATE quarantine_messages SET expires_at = now() - interval '1 second' WHERE id = :i", i=held[0]["id"])
    with session_scope() as session:
        assert review.sweep(session).expired >= 1
    assert [r["status"] for r in rows("SELECT status FROM quarantine_messages WHERE user_id = :u ORDER BY id",
                                       u=user_id)] == ["expired", "held"]  # fmt: skip


def test_export_from_the_user_page_is_audited(signed_in) -> None:  # type: ignore[no-untyped-def]
    user_id, _ = make_user(username="exported")
    client, name, csrf = signed_in("reviewer")
    response = client.post(f"/users/{user_id}/export", data={"csrf": csrf, "format": "json"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"] and "exported" in response.text
    audit = one("SELECT operator, actor_type FROM audit_log WHERE action = 'data.export' AND subject_user_id = :u",
                u=user_id)  # fmt: skip
    assert audit == {"operator": name, "actor_type": "operator"}


HOSTILE = [
    "<script>alert(1)</script>",
    '"><svg onload=alert(2)>',
    "' onmouseover='alert(3)",
    "javascript:alert(4)",
    "</textarea><script>alert(5)</script>",
]


def test_hostile_strings_are_escaped_everywhere(signed_in) -> None:  # type: ignore[no-untyped-def]
    from hnpal.db.session import get_engine
    from tests.deliveries.conftest import unique_id

    bad = " ".join(HOSTILE)
    user_id, _ = make_user(username="x" + str(unique_id()), first_name=bad)
    post_id = rows(
        "INSERT INTO posts (hn_id, type, title, url, score) VALUES (:h, 'story', :t, 'javascript:alert(6)', 1) "
        "RETURNING id", h=unique_id(), t=bad,
    )[0]["id"]  # fmt: skip
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        item_id = review.hold_answer(
            conn, user_id=user_id, chat_id=1, reason=bad, draft=bad, question=bad, post_id=post_id,
            prompt=[{"role": "system", "content": bad}, {"role": "user", "content": "ARTICLE " + bad}], results=[],
        )  # fmt: skip
    client, _, _ = signed_in("reviewer")
    for path in (f"/review/{item_id}", "/queue", f"/users/{user_id}", f"/users?q={user_id}", "/users"):
        html = client.get(path).text
        assert "<script" not in html and "<svg" not in html, path
        assert 'href="javascript' not in html.lower(), path
        assert "onmouseover='" not in html, path  # the quote that would break out of an attribute is escaped
    item_page = client.get(f"/review/{item_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in item_page
    assert "&lt;/textarea&gt;&lt;script&gt;" in item_page  # the edit box holds it as text
