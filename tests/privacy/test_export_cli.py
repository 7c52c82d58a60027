"""``hnpal user export``, run as an operator runs it (a real process on the test database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.memory.conftest import Factory, rows


def hnpal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hnpal.cli.main", *args], env=dict(os.environ), capture_output=True, timeout=120
    )


def test_user_export_json_to_stdout_and_markdown_to_a_file(make: Factory, tmp_path: Path) -> None:
    user = make.user(interests=["Databases"])
    post = make.post("Postgres internals")
    make.delivery(user, post, saved=True, reaction="up")
    make.conversation(user, post, [("user", "How does MVCC work?"), ("assistant", "Row versions.")])
    make.memory(user, "Databases")

    result = hnpal("user", "export", str(user["telegram_id"]))
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert data["profile"]["telegram_id"] == user["telegram_id"]
    assert data["saved_posts"][0]["hn_id"] == post["hn_id"]
    assert data["conversations"][0]["messages"][0]["content"] == "How does MVCC work?"
    assert [m["content"] for m in data["memory"]] == ["Databases"]

    result = hnpal("user", "export", str(user["telegram_id"]), "--format", "md", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    [written] = list(tmp_path.iterdir())
    assert written.suffix == ".md" and f"wrote {written.stat().st_size:,} bytes to {written}" in result.stderr.decode()
    text = written.read_text()
    assert "# Your data at HN Pal" in text and "- **You**: How does MVCC work?" in text

    audit = rows(
        "SELECT actor_type, actor_id, details FROM audit_log WHERE subject_user_id = :u AND action = 'data.export' "
        "ORDER BY id",
        u=user["id"],
    )
    assert [(a["actor_type"], a["actor_id"], a["details"]["format"]) for a in audit] == [
        ("admin", None, "json"),
        ("admin", None, "md"),
    ]


def test_user_export_refuses_bad_input(make: Factory, tmp_path: Path) -> None:
    missing = hnpal("user", "export", "999999999")
    assert missing.returncode == 1 and b"no user with Telegram id 999999999" in missing.stderr
    user = make.user()
    bad = hnpal("user", "export", str(user["telegram_id"]), "--format", "pdf")
    assert bad.returncode == 2 and b"--format must be json or md" in bad.stderr
    nowhere = hnpal("user", "export", str(user["telegram_id"]), "--output", str(tmp_path / "no" / "such.json"))
    assert nowhere.returncode == 2 and b"does not exist" in nowhere.stderr
    assert rows("SELECT id FROM audit_log WHERE subject_user_id = :u", u=user["id"]) == []


def test_user_export_includes_reviewed_answers_kept_messages_and_the_protocol(make: Factory, tmp_path: Path) -> None:
    """What a person held for review and what was kept while the user was silenced are the user's data too."""
    from hnpal.db.session import get_engine, session_scope
    from hnpal.review import service as review
    from hnpal.users.models import User

    user = make.user()
    post = make.post("Postgres internals")
    with session_scope() as session:
        review.set_review(session, user_id=user["id"], operator="ops", on=True, reason="new account")
        review.silence(session, user_id=user["id"], operator="ops", reason="flooding")
        account = session.get(User, user["id"])
        assert account is not None
        review.quarantine(session, user=account, update_id=None, message={"text": "are you there?"})
    with get_engine().begin() as conn:
        review.hold_answer(
            conn, user_id=user["id"], chat_id=user["telegram_id"], reason="under review: new account",
            draft="MVCC keeps row versions.", question="How does MVCC work?", prompt=[], results=[],
            post_id=post["id"],
        )  # fmt: skip

    result = hnpal("user", "export", str(user["telegram_id"]))
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    [held] = data["reviewed_answers"]
    assert (held["question"], held["draft"], held["status"], held["sent"]) == (
        "How does MVCC work?", "MVCC keeps row versions.", "pending", None,
    )  # fmt: skip
    assert held["post"]["hn_id"] == post["hn_id"] and held["held_because"] == "under review: new account"
    [kept] = data["quarantined_messages"]
    assert (kept["text"], kept["status"]) == ("are you there?", "held")
    assert data["protocol"]["silenced"] is True and data["protocol"]["silence_reason"] == "flooding"
    assert data["protocol"]["under_review"] is True

    result = hnpal("user", "export", str(user["telegram_id"]), "--format", "md", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    [written] = list(tmp_path.iterdir())
    text = written.read_text()
    assert "## Answers a person reviewed (1)" in text and "- **The model's draft**: MVCC keeps row versions." in text
    assert "## Messages kept while you were silenced (1)" in text and "(held): are you there?" in text
    assert "- silence reason: flooding" in text
    audit = rows(
        "SELECT details FROM audit_log WHERE subject_user_id = :u AND action = 'data.export' ORDER BY id", u=user["id"]
    )
    assert [(a["details"]["reviewed_answers"], a["details"]["quarantined_messages"]) for a in audit] == [(1, 1)] * 2
