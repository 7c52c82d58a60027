"""/memory (pause, forget, clear), /deletemydata, /start restoring, /export and interests learned from
👍, through the real bot process, a real worker and the sandbox Bot API, on the real PostgreSQL and
Redis. One stack serves the module; each test is a Telegram user of its own."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from hnpal.privacy.service import subject_ref
from hnpal.state.store import BotState, FsmState, StateStore
from hnpal.telegram.callbacks import sign
from tests.memory.conftest import Factory, execute, memory_rows, one, rows
from tests.telegram.conftest import Stack, labels

pytestmark = pytest.mark.slow


@pytest.fixture
def tg(tg_stack: Stack) -> Stack:
    return tg_stack


@pytest.fixture
def store(tg: Stack) -> StateStore:
    return StateStore(prefix=tg.env["HNPAL_REDIS_KEY_PREFIX"])


def member(tg: Stack, make: Factory, **kw) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    uid = tg.new_user("Ada")
    return uid, make.user(telegram_id=uid, **kw)


def user_row(uid: int) -> dict:
    row = one("SELECT * FROM users WHERE telegram_id = :t", t=uid)
    assert row is not None
    return row


def audit_actions(user_id: int) -> list[str]:
    return [r["action"] for r in rows("SELECT action FROM audit_log WHERE subject_user_id = :u ORDER BY id", u=user_id)]


def user_keys(tg: Stack, redis_client, uid: int) -> list[str]:  # type: ignore[no-untyped-def]
    prefix = tg.env["HNPAL_REDIS_KEY_PREFIX"]
    return [k for k in redis_client.scan_iter(match=f"{prefix}*:{uid}*") if k[len(prefix) :].split(":")[1] == str(uid)]


# --- /memory ----------------------------------------------------------------------------------------


def test_memory_shows_groups_and_state(tg: Stack, make: Factory) -> None:
    uid, user = member(tg, make, interests=["Rust"])
    make.memory(user, "Rust")
    make.memory(user, "Discussed “Kafka at scale” on 2026-11-01", type="discussion_note", source="discussion")
    make.memory(user, "Works at a bank on <payments>", type="work_context", source="discussion")
    make.memory(user, "Thinks ORMs hide too much", type="opinion", source="discussion")
    make.memory(user, "An item forgotten earlier", type="fact", source="discussion", active=False)
    [overview] = tg.send(uid, "/memory")
    text = overview.text
    assert text.startswith("🧠 What I remember about you\nMemory: ON")
    assert "Interests (1)\n• Rust · you chose it" in text
    assert "Recent discussions (1)\n• Discussed “Kafka at scale” on 2026-11-01" in text
    assert "About you (1)\n• Works at a bank on <payments>" in text  # escaped for HTML, shown as written
    assert "Notes, facts and opinions (1)\n• Thinks ORMs hide too much" in text
    assert "forgotten earlier" not in text
    assert labels(overview) == ["⏸ Pause memory", "🗑 Forget an item", "🧹 Clear everything"]

    empty_uid, _ = member(tg, make)
    [empty] = tg.send(empty_uid, "/memory")
    assert "Nothing yet" in empty.text and labels(empty) == ["⏸ Pause memory"]
    [unknown] = tg.send(empty_uid, "/memory everything")
    assert unknown.text.startswith("I don't know /memory everything. Try:")


def test_memory_pause_toggles_and_is_audited(tg: Stack, make: Factory) -> None:
    uid, user = member(tg, make)
    [paused] = tg.send(uid, "/memory pause")
    assert paused.text.startswith("⏸ Memory paused") and user_row(uid)["memory_enabled"] is False
    [on] = tg.send(uid, "/memory pause")
    assert on.text.startswith("🧠 Memory is ON") and user_row(uid)["memory_enabled"] is True
    [overview] = tg.send(uid, "/memory")
    assert tg.press(uid, overview, "⏸ Pause memory") == "Memory paused"
    assert user_row(uid)["memory_enabled"] is False
    shown = tg.current(uid, overview)
    assert "Memory: paused" in shown.text and labels(shown)[0] == "▶️ Resume memory"
    assert audit_actions(user["id"]) == ["memory.pause", "memory.resume", "memory.pause"]
    audit = one("SELECT * FROM audit_log WHERE subject_user_id = :u ORDER BY id LIMIT 1", u=user["id"])
    assert audit["subject_ref"] == subject_ref(uid) and str(uid) not in json.dumps(audit, default=str)


def test_forget_pages_items_and_drops_onboarding_interest(tg: Stack, make: Factory) -> None:
    uid, user = member(tg, make, interests=["Rust", "Go"])
    rust = make.memory(user, "Rust")
    make.memory(user, "Go")
    for n in range(8):
        make.memory(user, f"Fact number {n}", type="fact", source="discussion")
    [listing] = tg.send(uid, "/memory forget")
    assert "Tap an item to forget it · 10 remembered · page 1/2" in listing.text
    assert labels(listing)[0] == "🗑 1. Fact number 7" and labels(listing)[-2:] == ["Older ▶", "Done"]
    tg.press(uid, listing, "Older ▶")
    page2 = tg.current(uid, listing)
    assert "page 2/2" in page2.text and labels(page2) == ["🗑 9. Go", "🗑 10. Rust", "◀ Newer", "Done"]
    assert tg.press(uid, listing, "🗑 10. Rust") == "Forgotten"
    after = tg.current(uid, listing)
    assert after.text.startswith("Forgotten: Rust") and "9 remembered · page 2/2" in after.text
    assert labels(after) == ["🗑 9. Go", "◀ Newer", "Done"]
    assert {r["id"]: r["active"] for r in memory_rows(user["id"])}[rust] is False
    assert user_row(uid)["interests"] == ["Go"]  # an onboarding interest leaves users.interests too
    forget = one("SELECT details FROM audit_log WHERE subject_user_id = :u AND action = 'memory.forget'", u=user["id"])
    assert forget["details"] == {"memory_id": rust, "type": "interest"}
    tg.press(uid, listing, "Done")
    assert tg.current(uid, listing).text.startswith("🧠 What I remember about you")


def test_one_user_cannot_reach_another_users_memory(tg: Stack, make: Factory) -> None:
    a_uid, a = member(tg, make)
    b_uid, b = member(tg, make)
    secret = make.memory(a, "Ada's secret project Nightingale", type="work_context", source="discussion")
    make.memory(b, "Go")
    [b_listing] = tg.send(b_uid, "/memory forget")
    # A button that names A's item, correctly signed for B (a forged payload): refused by ownership.
    forged = sign(b_uid, "mmf", secret, 0)
    assert tg.press(b_uid, b_listing, forged, check=False) == "This button is not valid for you."
    # A's own button data pressed by B: the signature is A's, so it fails before anything is looked up.
    copied = sign(a_uid, "mmf", secret, 0)
    assert tg.press(b_uid, b_listing, copied, check=False) == "This button is not valid for you."
    assert {r["id"]: r["active"] for r in memory_rows(a["id"])}[secret] is True
    assert audit_actions(a["id"]) == []
    [b_view] = tg.send(b_uid, "/memory")
    assert "Nightingale" not in b_view.text
    tg.send(b_uid, "/export json")
    export = tg.server.documents[-1]
    assert export.chat_id == b_uid and b"Nightingale" not in export.data
    assert json.loads(export.data)["profile"]["telegram_id"] == b_uid


def test_clear_needs_confirmation_and_ends_the_discussion(
    tg: Stack, make: Factory, store: StateStore, redis_client
) -> None:
    uid, user = member(tg, make, interests=["Rust"])
    make.memory(user, "Rust")
    make.memory(user, "Likes long reads", type="preference", source="discussion")
    post = make.post()
    make.conversation(user, post, [("user", "Old talk")])
    make.conversation(user, post, [("user", "Ongoing talk")], ended=False)
    execute("UPDATE users SET active_discussion_post_id = :h WHERE id = :u", h=post["hn_id"], u=user["id"])

    [question] = tg.send(uid, "/memory clear")
    assert question.text.startswith("🧹 Forget everything?")
    assert tg.press(uid, question, "Cancel") == "Cancelled"
    assert tg.current(uid, question).text.startswith("Nothing was cleared")
    assert len(rows("SELECT id FROM conversations WHERE user_id = :u", u=user["id"])) == 2

    [question] = tg.send(uid, "/memory clear")
    stale = sign(uid, "mmc", "yes", int(time.time()) - 3600)  # a confirmation shown an hour ago
    assert tg.press(uid, question, stale, check=False) == "Expired"
    assert all(r["active"] for r in memory_rows(user["id"]))

    [question] = tg.send(uid, "/memory clear")
    state = FsmState(state=BotState.DISCUSSION, data={"active_post_id": post["hn_id"]})
    store.set_fsm(uid, state)  # as if the discussion were going on (the command itself drops the key)
    store.set_context(uid, post["hn_id"], {"article": "cached"})
    assert tg.press(uid, question, "Yes, forget everything") == "Memory cleared"
    assert tg.current(uid, question).text.startswith("🧹 Done: I forgot 2 items and deleted 2 conversations.")
    assert not any(r["active"] for r in memory_rows(user["id"]))
    assert rows("SELECT id FROM conversations WHERE user_id = :u", u=user["id"]) == []
    row = user_row(uid)
    assert row["active_discussion_post_id"] is None and row["interests"] == []
    assert store.get_fsm(uid) is None and store.get_context(uid, post["hn_id"]) is None
    clear = one("SELECT details FROM audit_log WHERE subject_user_id = :u AND action = 'memory.clear'", u=user["id"])
    assert clear["details"] == {"memory_forgotten": 2, "conversations_deleted": 2}


# --- /deletemydata and /start -----------------------------------------------------------------------


def test_deletemydata_then_start_restores(tg: Stack, make: Factory, store: StateStore, redis_client) -> None:
    uid, user = member(tg, make)
    other_uid, _ = member(tg, make)
    post = make.post()
    make.delivery(user, post, reaction="up")
    make.memory(user, "Rust")
    execute("INSERT INTO digests (user_id, batch_id, status) VALUES (:u, 'b-pending', 'pending')", u=user["id"])
    execute("INSERT INTO digests (user_id, batch_id, status) VALUES (:u, 'b-sending', 'sending')", u=user["id"])
    execute("INSERT INTO digests (user_id, batch_id, status) VALUES (:u, 'b-sent', 'sent')", u=user["id"])
    cid = make.conversation(user, post, [("user", "Still talking")], ended=False)
    execute("UPDATE users SET active_discussion_post_id = :h WHERE id = :u", h=post["hn_id"], u=user["id"])

    [warning] = tg.send(uid, "/deletemydata")
    assert warning.text.startswith("⚠️ Delete all your data?") and "After 30 days" in warning.text
    assert tg.press(uid, warning, "Cancel") == "Cancelled"
    assert user_row(uid)["status"] == "active"

    [warning] = tg.send(uid, "/deletemydata")
    for who in (uid, other_uid):
        store.set_fsm(who, FsmState(state=BotState.DISCUSSION, data={"active_post_id": post["hn_id"]}))
        store.set_session(who, {"name": "Ada"})
        store.set_context(who, post["hn_id"], {"article": "cached"})
    assert tg.press(uid, warning, "Yes, delete my data") == "Account deleted"
    row = user_row(uid)
    assert row["status"] == "deleted" and row["deleted_at"] is not None and row["active_discussion_post_id"] is None
    day = f"{row['deleted_at'] + timedelta(days=30):%d %B %Y}"
    assert f"scheduled for deletion on {day}" in tg.current(uid, warning).text
    # PostgreSQL: no digest can go out, the discussion is over; the data itself is kept for the grace period.
    digests = {r["batch_id"]: r["status"] for r in rows("SELECT * FROM digests WHERE user_id = :u", u=user["id"])}
    assert digests == {"b-pending": "failed", "b-sending": "failed", "b-sent": "sent"}
    assert one("SELECT end_reason FROM conversations WHERE id = :c", c=cid)["end_reason"] == "deleted"
    assert len(memory_rows(user["id"])) == 1
    # Redis: every key of the user is gone; the other user's stay.
    assert user_keys(tg, redis_client, uid) == []
    assert len(user_keys(tg, redis_client, other_uid)) == 3

    notice = f"Your account is scheduled for deletion on {day}. /start restores it."
    [reply] = tg.send(uid, "/digest")
    assert reply.text == notice
    assert len(rows("SELECT id FROM digests WHERE user_id = :u", u=user["id"])) == 3  # no new digest
    [reply] = tg.send(uid, "/memory clear")
    assert reply.text == notice and len(memory_rows(user["id"])) == 1
    [reply] = tg.send(uid, "hello?")
    assert reply.text == notice
    assert tg.press(uid, warning, sign(uid, "mml", 0), check=False) == notice  # buttons do nothing either
    assert user_keys(tg, redis_client, uid) == []  # and nothing wrote a key back

    [welcome] = tg.send(uid, "/start")
    assert welcome.text.startswith("Welcome back, Ada! Your account is restored")
    row = user_row(uid)
    assert row["status"] == "active" and row["deleted_at"] is None
    assert audit_actions(user["id"]) == ["account.delete", "account.restore"]
    [overview] = tg.send(uid, "/memory")
    assert "• Rust" in overview.text


# --- /export ----------------------------------------------------------------------------------------


def test_export_sends_the_users_data_as_a_document(tg: Stack, make: Factory) -> None:
    uid, user = member(tg, make, interests=["Rust"])
    saved = make.post("Saved: the <best> post")
    liked = make.post("Liked post")
    make.delivery(user, saved, saved=True)
    make.delivery(user, liked, reaction="up")
    make.conversation(user, liked, [("user", "I like *Rust*."), ("assistant", "Noted, Rust it is.")])
    make.memory(user, "Rust")
    make.memory(user, "An old forgotten fact", type="fact", source="discussion", active=False)

    [message] = tg.send(uid, "/export")
    assert message.method == "sendDocument" and message.text == "Everything HN Pal holds about you."
    document = tg.server.documents[-1]
    assert document.chat_id == uid and document.message_id == message.message_id
    assert document.file_name.endswith(".md") and document.mime_type == "text/markdown"
    md = document.data.decode()
    assert md.startswith("# Your data at HN Pal")
    assert f"- telegram id: {uid}" in md
    assert "## Saved posts (1)\n\n- Saved: the \\<best\\> post (https://news.ycombinator.com/item?id=" in md
    assert "Liked post (https://news.ycombinator.com/item?id=" in md and "· 👍" in md
    assert "- **You**: I like \\*Rust\\*." in md and "- **HN Pal**: Noted, Rust it is." in md
    assert "- interest (from onboarding" in md and "(forgotten): An old forgotten fact" in md

    tg.send(uid, "/export json")
    document = tg.server.documents[-1]
    assert document.file_name.endswith(".json") and document.mime_type == "application/json"
    data = json.loads(document.data)
    assert data["profile"]["telegram_id"] == uid and data["profile"]["first_name"] == "Ada"
    assert data["preferences"]["interests"] == ["Rust"]
    assert [s["hn_id"] for s in data["saved_posts"]] == [saved["hn_id"]]
    assert {d["hn_id"]: d["reaction"] for d in data["deliveries"]} == {saved["hn_id"]: None, liked["hn_id"]: "up"}
    assert [m["content"] for m in data["conversations"][0]["messages"]] == ["I like *Rust*.", "Noted, Rust it is."]
    assert {(m["content"], m["active"]) for m in data["memory"]} == {("Rust", True), ("An old forgotten fact", False)}

    [wrong] = tg.send(uid, "/export pdf")
    assert wrong.text == "Send /export for a Markdown file, or /export json for JSON."
    exports = rows(
        "SELECT details FROM audit_log WHERE subject_user_id = :u AND action = 'data.export' ORDER BY id", u=user["id"]
    )
    assert [e["details"]["format"] for e in exports] == ["md", "json"]
    assert exports[0]["details"]["memory"] == 2 and exports[0]["details"]["conversations"] == 1


# --- 👍 teaches interests -----------------------------------------------------------------------------


def test_liking_posts_on_one_topic_teaches_an_interest(tg: Stack, make: Factory) -> None:
    from tests.telegram.test_bot import digest, make_posts
    from tests.telegram.test_bot import make_user as make_tg_user

    _posts, floor = make_posts(3)  # titles "Story <id> <about> Rust & friends"
    uid = make_tg_user(tg, min_score=floor)
    messages = digest(tg, uid, 3)
    assert tg.press(uid, messages[0], "👍") == "Noted: more like this 👍"
    assert tg.press(uid, messages[1], "👍") == "Noted: more like this 👍"
    answer = tg.press(uid, messages[2], "👍")
    assert answer == "Noted: more like this 👍 · I'll remember you like Rust"  # not "Story" or "friends"
    learned = rows(
        "SELECT m.content, m.source_type FROM memory m JOIN users u ON u.id = m.user_id "
        "WHERE u.telegram_id = :t AND m.type = 'interest' AND m.active",
        t=uid,
    )
    assert ("Rust", "reaction") in {(r["content"], r["source_type"]) for r in learned}
    every = "SELECT m.id FROM memory m JOIN users u ON u.id = m.user_id WHERE u.telegram_id = :t"
    before = len(rows(every, t=uid))
    tg.press(uid, messages[2], "👍✓")  # clearing and liking again learns nothing twice
    assert tg.press(uid, messages[2], "👍") == "Noted: more like this 👍"
    assert len(rows(every, t=uid)) == before


def test_start_after_the_grace_period_erases_at_once(tg: Stack, make: Factory) -> None:
    uid, user = member(tg, make)
    make.memory(user, "Rust")
    execute("UPDATE users SET status = 'deleted', deleted_at = now() - interval '31 days' WHERE id = :u", u=user["id"])
    [reply] = tg.send(uid, "/digest")  # the hourly purge has not run yet
    assert reply.text == "Your account has been deleted. /start begins afresh."
    [reply] = tg.send(uid, "/start")
    assert reply.text == "Your data was erased at the end of the grace period. Send /start again to begin afresh."
    assert one("SELECT id FROM users WHERE id = :u", u=user["id"]) is None
    assert memory_rows(user["id"]) == []
    purged = one("SELECT * FROM audit_log WHERE action = 'account.purge' AND subject_ref = :r", r=subject_ref(uid))
    assert purged is not None and purged["details"]["rows"]["memory"] == 1
    welcome, _topics = tg.send(uid, "/start", replies=2)  # a new account, from scratch
    assert welcome.text.startswith("Hi Ada!")
    fresh = user_row(uid)
    assert fresh["id"] != user["id"] and fresh["status"] == "active"


def test_a_long_memory_still_fits_one_message(tg: Stack, make: Factory) -> None:
    uid, user = member(tg, make)
    for kind in ("interest", "discussion_note", "work_context", "fact"):
        for n in range(12):
            make.memory(user, f"{kind} {n} " + "long words & <markup> " * 60, type=kind, source="discussion")
    [overview] = tg.send(uid, "/memory")
    assert len(overview.text) <= 4096
    assert "Interests (12)" in overview.text and "Notes, facts and opinions (12)" in overview.text
    assert "more (/export has them all)" in overview.text


# --- the whole chain: discussion → /done → extraction on the llm queue → /memory ----------------------


def test_a_discussion_ends_in_memory_the_user_can_see_and_erase(tg: Stack, make: Factory, spawn_worker) -> None:
    """With an llm worker beside the stack's (offline provider: no key), a discussion ended with /done is
    extracted, and /memory shows the note and the interests; /memory clear removes it all."""
    llm_worker = spawn_worker("llm", env=tg.env, pool="threads", concurrency=2)
    llm_worker.wait_ready()
    uid, user = member(tg, make)
    post = make.post("Rust in the Linux kernel")
    tg.send(uid, f"/discuss {post['hn_id']}")
    tg.send(uid, "I work on embedded drivers. Is Rust really safer than C for drivers?", replies=1, timeout=60)
    tg.send(uid, "/done")
    tg.wait_until(
        lambda: any(r["type"] == "discussion_note" for r in memory_rows(user["id"])),
        timeout=60,
        what="the extracted memory",
    )
    stored = {(r["type"], r["content"]) for r in memory_rows(user["id"])}
    ended = one("SELECT ended_at FROM conversations WHERE user_id = :u", u=user["id"])["ended_at"]
    day = f"{ended:%Y-%m-%d}"
    assert any(
        t == "discussion_note" and c.startswith(f"Discussed “Rust in the Linux kernel” on {day}") for t, c in stored
    )
    assert ("interest", "Rust") in stored and ("work_context", "Works on embedded drivers") in stored
    [overview] = tg.send(uid, "/memory")
    assert "Recent discussions (1)\n• Discussed “Rust in the Linux kernel”" in overview.text
    assert "• Rust" in overview.text and "Works on embedded drivers" in overview.text
    tg.press(uid, overview, "🧹 Clear everything")
    assert tg.press(uid, overview, "Yes, forget everything") == "Memory cleared"
    assert not any(r["active"] for r in memory_rows(user["id"]))
    assert rows("SELECT id FROM conversations WHERE user_id = :u", u=user["id"]) == []
