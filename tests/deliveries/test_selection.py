"""Which posts go into a digest: every eligibility rule, the ranking, max_posts, and one statement for
many digests (counted on the engine)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select, text

from hnpal.deliveries.models import Delivery
from hnpal.deliveries.selection import select_posts
from hnpal.deliveries.service import prepare
from hnpal.relevance.service import classify_posts, map_interests

LOOKBACK = timedelta(hours=24)


def titles(session, picks) -> list[str]:
    from hnpal.posts.models import Post

    by_id = dict(session.execute(select(Post.id, Post.title).where(Post.id.in_([p.post_id for p in picks]))).all())
    return [by_id[p.post_id] for p in picks]


@pytest.fixture(autouse=True)
def words_only(db_session) -> None:
    """These tests are about title words on posts without topics: no interest means topics here (what
    other tests stored is out of sight, within this test's transaction)."""
    db_session.execute(text("DELETE FROM interest_topics"))


def pick(session, digest) -> list[str]:
    """The titles chosen for one digest, in digest order."""
    picks = select_posts(session=session, digest_ids=[digest.id], lookback=LOOKBACK).get(digest.id, [])
    assert [p.position for p in picks] == list(range(1, len(picks) + 1))
    assert all(p.digest_id == digest.id and p.user_id == digest.user_id for p in picks)
    return titles(session, picks)


# --- eligibility ---------------------------------------------------------------------------------------


def test_window_starts_at_the_last_sent_digest(db_session, make) -> None:
    t = make.epoch
    user = make.user()
    make.digest(user, created_at=t - timedelta(hours=6), status="sent")
    make.digest(user, created_at=t - timedelta(hours=3), status="empty")  # not sent: does not move the window
    make.digest(user, created_at=t - timedelta(hours=2), status="failed")
    make.post("Before the last digest", summarized_at=t - timedelta(hours=7), score=900)
    make.post("After the last digest", summarized_at=t - timedelta(hours=5), score=200)
    make.post("Just now", summarized_at=t - timedelta(minutes=1), score=100)
    digest = make.digest(user)
    assert pick(db_session, digest) == ["After the last digest", "Just now"]


def test_first_digest_covers_the_lookback_or_the_period(db_session, make) -> None:
    t = make.epoch
    make.post("Two days old", summarized_at=t - timedelta(hours=48), score=500)
    make.post("Thirty hours old", summarized_at=t - timedelta(hours=30), score=400)
    make.post("Ten hours old", summarized_at=t - timedelta(hours=10), score=300)
    make.post("An hour old", summarized_at=t - timedelta(hours=1), score=200)
    daily = make.digest(make.user(prefs={"frequency": "daily"}))
    twice = make.digest(make.user(prefs={"frequency": "twice_daily"}))
    weekly = make.digest(make.user(prefs={"frequency": "weekly"}))
    assert pick(db_session, daily) == ["Ten hours old", "An hour old"]
    assert pick(db_session, twice) == ["Ten hours old", "An hour old"]
    assert pick(db_session, weekly) == ["Two days old", "Thirty hours old", "Ten hours old", "An hour old"]
    twelve = select_posts(session=db_session, digest_ids=[daily.id], lookback=timedelta(hours=12))
    assert titles(db_session, twelve[daily.id]) == ["Ten hours old", "An hour old"]
    two = select_posts(session=db_session, digest_ids=[daily.id], lookback=timedelta(hours=2))
    assert titles(db_session, two[daily.id]) == ["An hour old"]


def test_unsummarized_posts_are_not_eligible(db_session, make) -> None:
    post = make.post("Not summarized yet")
    post.summarized_at = None
    make.post("Summarized")
    db_session.flush()
    assert pick(db_session, make.digest(make.user())) == ["Summarized"]


def test_a_post_is_never_delivered_twice(db_session, make) -> None:
    user, other = make.user(), make.user()
    seen = make.post("Already delivered", score=1000)
    reserved = make.post("Reserved, not sent yet", score=900)
    make.delivery(user, seen)
    make.delivery(user, reserved, batch_id="half-sent", message_id=None)
    make.post("New", score=10)
    assert pick(db_session, make.digest(user)) == ["New"]
    assert pick(db_session, make.digest(other)) == ["Already delivered", "Reserved, not sent yet", "New"]


def test_prepare_twice_reserves_nothing_twice(db_session, make) -> None:
    user = make.user()
    for n in range(3):
        make.post(f"Post {n}", score=100 + n)
    first = make.digest(user)
    assert prepare(session=db_session, digest_ids=[first.id]) == {first.id: 3}
    assert prepare(session=db_session, digest_ids=[first.id]) == {}  # no longer pending
    db_session.refresh(first)
    assert (first.status, first.post_count) == ("sending", 3)
    # a second digest of the same user finds nothing left
    second = make.digest(user, batch_id="second")
    assert prepare(session=db_session, digest_ids=[second.id]) == {second.id: 0}
    db_session.refresh(second)
    assert (second.status, second.post_count) == ("empty", 0)
    rows = db_session.execute(select(Delivery.post_id, Delivery.message_id).where(Delivery.user_id == user.id)).all()
    assert len(rows) == 3 and all(message_id is None for _, message_id in rows)


def test_two_digests_of_one_user_prepared_together_reserve_each_post_once(db_session, make) -> None:
    """The fast reservation (a plain INSERT) meets the UNIQUE constraint; the statement with ON CONFLICT
    takes over in the same transaction, and the other digests of the chunk are reserved as usual."""
    user, other = make.user(), make.user()
    for n in range(3):
        make.post(f"Post {n}", score=100 + n)
    first, second = make.digest(user), make.digest(user, batch_id="second")
    theirs = make.digest(other)
    reserved = prepare(session=db_session, digest_ids=[first.id, second.id, theirs.id])
    assert sorted(reserved.values()) == [0, 3, 3] and reserved[theirs.id] == 3
    rows = db_session.execute(select(Delivery.post_id).where(Delivery.user_id == user.id)).scalars().all()
    assert len(rows) == len(set(rows)) == 3
    statuses = {d.id: (d.status, d.post_count) for d in (first, second, theirs) if db_session.refresh(d) is None}
    assert sorted(statuses.values()) == [("empty", 0), ("sending", 3), ("sending", 3)]


def test_min_score(db_session, make) -> None:
    make.post("Low", score=9)
    make.post("Exactly the minimum", score=10)
    make.post("High", score=500)
    assert pick(db_session, make.digest(make.user(prefs={"min_score": 10}))) == ["High", "Exactly the minimum"]


def test_muted_keywords_match_title_words(db_session, make) -> None:
    make.post("Crypto winter is coming", score=500)
    make.post("The CRYPTO market", score=400)
    make.post("Cryptography for beginners", score=300)  # another word: kept
    make.post("Rust 2.0 released", score=200)
    user = make.user(prefs={"muted_keywords": ["crypto"]})
    assert pick(db_session, make.digest(user)) == ["Cryptography for beginners", "Rust 2.0 released"]
    stored_upper = make.user(prefs={"muted_keywords": ["RUST"]})  # stored unnormalized: still matches
    assert "Rust 2.0 released" not in pick(db_session, make.digest(stored_upper))


def test_muted_domains(db_session, make) -> None:
    make.post("From the spam site", domain="spam.example", score=900)
    make.post("Also spam", domain="spam.example", score=800)
    make.post("A text post", domain=None, score=700)
    make.post("Good site", domain="good.example", score=100)
    user = make.user(prefs={"muted_domains": ["spam.example"]})
    assert pick(db_session, make.digest(user)) == ["A text post", "Good site"]


def test_reposts_are_collapsed(db_session, make) -> None:
    t = make.epoch
    user = make.user()
    # the original is in the window too: only the original
    original = make.post("Original A", score=50)
    make.post("Repost of A", score=500, repost_of=original)
    # the original was delivered before (outside the window): the repost is excluded
    old = make.post("Original B", score=50, summarized_at=t - timedelta(days=30))
    make.delivery(user, old)
    make.post("Repost of B", score=400, repost_of=old)
    # the original is old and was never delivered: the repost stands for it
    forgotten = make.post("Original C", score=50, summarized_at=t - timedelta(days=30))
    make.post("Repost of C", score=300, repost_of=forgotten)
    assert pick(db_session, make.digest(user)) == ["Repost of C", "Original A"]
    # another user who got B neither: B's repost is theirs
    assert pick(db_session, make.digest(make.user())) == ["Repost of B", "Repost of C", "Original A"]


def test_max_posts_is_honored_in_rank_order(db_session, make) -> None:
    for n in range(15):
        make.post(f"Post {n:02d}", score=10 * (n + 1))
    five = pick(db_session, make.digest(make.user(prefs={"max_posts": 5})))
    assert five == ["Post 14", "Post 13", "Post 12", "Post 11", "Post 10"]
    assert len(pick(db_session, make.digest(make.user()))) == 10  # the default
    assert len(pick(db_session, make.digest(make.user(prefs={"max_posts": 1})))) == 1


def test_muted_and_repost_posts_do_not_crowd_out_eligible_ones(db_session, make) -> None:
    # The top posts by score are all muted (or reposts of a post in the window): the digest must still fill
    # up with the eligible posts below them.
    for n in range(12):
        make.post(f"Noise {n}", domain="noisy.example", score=10_000 + n)
    original = make.post("An original", score=10)
    for n in range(6):
        make.post(f"Copy {n}", score=20_000 + n, repost_of=original)
    make.post("Quiet one", domain="quiet.example", score=30)
    make.post("Quiet two", domain="quiet.example", score=20)
    user = make.user(prefs={"max_posts": 3, "muted_domains": ["noisy.example"]})
    assert pick(db_session, make.digest(user)) == ["Quiet one", "Quiet two", "An original"]


def test_invalid_stored_preferences_do_not_break_selection_for_others(db_session, make) -> None:
    for n in range(12):
        make.post(f"Post {n:02d}", score=10 * (n + 1))
    bad = make.digest(
        make.user(
            prefs={
                "max_posts": "lots",
                "min_score": {"x": 1},
                "muted_keywords": "post",  # a string, not a list
                "muted_domains": [None, 5],
                "frequency": 7,
            }
        )
    )
    huge = make.digest(make.user(prefs={"max_posts": 10**12, "min_score": 1e30}))
    fractional = make.digest(make.user(prefs={"max_posts": 2.5}))
    good = make.digest(make.user(prefs={"max_posts": 2}))
    picks = select_posts(session=db_session, digest_ids=[bad.id, huge.id, fractional.id, good.id], lookback=LOOKBACK)
    assert len(picks[bad.id]) == 10  # defaults: 10 posts, no minimum, nothing muted
    assert huge.id not in picks  # no post reaches that minimum
    assert 1 <= len(picks[fractional.id]) <= 3
    assert titles(db_session, picks[good.id]) == ["Post 11", "Post 10"]


# --- ranking -------------------------------------------------------------------------------------------


def test_posts_about_the_interests_come_before_better_scored_others(db_session, make) -> None:
    make.post("Cooking pasta at home", score=900)
    make.post("The Rust borrow checker", score=50)
    make.post("Rust and PostgreSQL internals", score=40)  # about both interests
    make.post("Writing a Rust compiler", score=40)
    user = make.user(interests=["Rust", "PostgreSQL databases", "the"])  # "the" is a stopword
    picked = pick(db_session, make.digest(user))
    assert picked[0] == "Rust and PostgreSQL internals"
    assert set(picked[1:3]) == {"The Rust borrow checker", "Writing a Rust compiler"}
    assert picked[3] == "Cooking pasta at home"
    # without interests it is the score
    assert pick(db_session, make.digest(make.user()))[0] == "Cooking pasta at home"


def test_an_interest_meets_its_singular_and_plural(db_session, make) -> None:
    make.post("Cooking pasta at home", score=90)
    make.post("A database in one file", score=50)  # interest "Databases": 50 x 2 = 100
    make.post("Compilers for everyone", score=48)  # interest "compiler": 48 x 2 = 96
    make.post("Gas prices", score=47)  # "gas" is too short to lose its s: no hit
    user = make.user(interests=["Databases", "compiler", "ga"])
    assert pick(db_session, make.digest(user)) == [
        "A database in one file",
        "Compilers for everyone",
        "Cooking pasta at home",
        "Gas prices",
    ]


def test_interests_learned_into_memory_feed_the_ranking(db_session, make) -> None:
    from hnpal.memory.models import Memory

    make.post("Cooking pasta at home", score=90)
    make.post("Zig comptime explained", score=50)  # memory "Zig" (from reactions): 50 x 2 = 100
    make.post("Elixir at scale", score=48)  # memory "elixir" (a discussion): 48 x 2 = 96
    make.post("Haskell type classes", score=47)  # forgotten (inactive): no hit
    make.post("OCaml effects", score=46)  # a memory of another type: no hit
    user = make.user(interests=["rust"])
    db_session.add_all(
        [
            Memory(user_id=user.id, type="interest", content="Zig", source_type="reaction"),
            Memory(user_id=user.id, type="interest", content="elixir", source_type="discussion"),
            Memory(user_id=user.id, type="interest", content="Haskell", source_type="onboarding", active=False),
            Memory(user_id=user.id, type="preference", content="Likes OCaml", source_type="explicit"),
        ]
    )
    other = make.user(interests=["rust"])
    db_session.add(Memory(user_id=other.id, type="interest", content="cooking", source_type="explicit"))
    db_session.flush()
    assert pick(db_session, make.digest(user)) == [
        "Zig comptime explained",
        "Elixir at scale",
        "Cooking pasta at home",
        "Haskell type classes",
        "OCaml effects",
    ]
    # another user's memory is theirs alone: "cooking" lifts only their pasta (90 x 2)
    assert pick(db_session, make.digest(other))[:2] == ["Cooking pasta at home", "Zig comptime explained"]


def test_posts_beyond_the_best_by_score_win_when_dislikes_demote_those(db_session, make) -> None:
    t = make.epoch
    user = make.user(prefs={"max_posts": 2})
    for n in range(2):
        old = make.post(f"Old {n}", domain="meh.example", summarized_at=t - timedelta(days=30))
        make.delivery(user, old, reaction="down")
    for n in range(6):
        make.post(f"Meh {n}", domain="meh.example", score=200 + n)  # x0.5: at most 102.5
    make.post("Plain one", domain="a.example", score=120)
    make.post("Plain two", domain="b.example", score=110)
    make.post("Plain three", domain="c.example", score=100)
    assert pick(db_session, make.digest(user)) == ["Plain one", "Plain two"]


def test_interest_hits_reach_posts_far_below_the_top_by_score(db_session, make) -> None:
    for n in range(40):
        make.post(f"Popular thing {n}", score=1000 + n)
    make.post("Obscure Zig allocator tricks", score=600)  # 600 x 2 = 1200 beats them all
    user = make.user(interests=["zig"], prefs={"max_posts": 3})
    assert pick(db_session, make.digest(user)) == [
        "Obscure Zig allocator tricks",
        "Popular thing 39",
        "Popular thing 38",
    ]


def test_a_like_lifts_the_domain_and_a_dislike_demotes_it(db_session, make) -> None:
    t = make.epoch
    user = make.user()
    liked = make.post("Alpha", domain="liked.example", summarized_at=t - timedelta(days=30))
    disliked = make.post("Beta", domain="disliked.example", summarized_at=t - timedelta(days=30))
    make.delivery(user, liked, reaction="up")
    make.delivery(user, disliked, reaction="down")
    make.post("Gamma", domain="liked.example", score=100)  # 100 x 1.25 = 125
    make.post("Delta", domain="neutral.example", score=110)  # 110
    make.post("Epsilon", domain="disliked.example", score=140)  # 140 x 0.75 = 105
    assert pick(db_session, make.digest(user)) == ["Gamma", "Delta", "Epsilon"]
    assert pick(db_session, make.digest(make.user())) == ["Epsilon", "Delta", "Gamma"]


def test_domain_affinity_is_capped(db_session, make) -> None:
    t = make.epoch
    user = make.user()
    for n in range(5):
        old = make.post(f"Old {n}", domain="fan.example", summarized_at=t - timedelta(days=30))
        make.delivery(user, old, reaction="up")
    make.post("Fan site", domain="fan.example", score=100)  # at most x1.5 = 150
    make.post("Big news", domain="news.example", score=151)
    assert pick(db_session, make.digest(user)) == ["Big news", "Fan site"]


def test_a_liked_domain_reaches_posts_outside_the_top_by_score(db_session, make) -> None:
    t = make.epoch
    user = make.user(prefs={"max_posts": 1})
    old = make.post("Old", domain="niche.example", summarized_at=t - timedelta(days=30))
    make.delivery(user, old, reaction="up")
    for n in range(5):
        make.post(f"Popular {n}", domain="big.example", score=100)
    make.post("Niche", domain="niche.example", score=90)  # 112.5
    assert pick(db_session, make.digest(user)) == ["Niche"]


def test_liked_and_disliked_topics(db_session, make) -> None:
    t = make.epoch
    user = make.user()
    for n, (title, reaction) in enumerate(
        [
            ("Zig comptime explained", "up"),
            ("Why Zig", "up"),
            ("Blockchain voting", "down"),
            ("Blockchain in healthcare", "down"),
        ]
    ):
        old = make.post(title, domain=f"old{n}.example", summarized_at=t - timedelta(days=30))
        make.delivery(user, old, reaction=reaction)
    make.post("Zig package manager", domain="a.example", score=100)  # +25%: 125
    make.post("Garden robots", domain="b.example", score=120)
    make.post("Blockchain databases", domain="c.example", score=150)  # -25%: 112.5
    assert pick(db_session, make.digest(user)) == ["Zig package manager", "Garden robots", "Blockchain databases"]


def test_one_reaction_is_not_a_topic(db_session, make) -> None:
    t = make.epoch
    user = make.user()
    old = make.post("Zig comptime explained", domain="old.example", summarized_at=t - timedelta(days=30))
    make.delivery(user, old, reaction="up")
    make.post("Zig package manager", domain="a.example", score=100)
    make.post("Garden robots", domain="b.example", score=120)
    assert pick(db_session, make.digest(user)) == ["Garden robots", "Zig package manager"]


def test_liking_text_posts_is_not_a_topic_shared_by_every_text_post(db_session, make) -> None:
    # Posts without a domain carry '' as their domain keyword: two liked Ask HN posts must not make ''
    # a liked topic that lifts every other post without a domain.
    t = make.epoch
    user = make.user()
    for title in ("Ask HN: favourite editors", "Ask HN: best keyboards"):
        old = make.post(title, domain=None, summarized_at=t - timedelta(days=30))
        make.delivery(user, old, reaction="up")
    make.post("Tell HN: I quit", domain=None, score=100)
    make.post("Garden robots", domain="b.example", score=110)
    assert pick(db_session, make.digest(user)) == ["Garden robots", "Tell HN: I quit"]


def test_reactions_of_other_users_do_not_count(db_session, make) -> None:
    t = make.epoch
    other = make.user()
    old = make.post("Alpha", domain="liked.example", summarized_at=t - timedelta(days=30))
    make.delivery(other, old, reaction="up")
    make.post("Gamma", domain="liked.example", score=100)
    make.post("Delta", domain="neutral.example", score=110)
    assert pick(db_session, make.digest(make.user())) == ["Delta", "Gamma"]


# --- many digests, one statement -------------------------------------------------------------------------


@pytest.fixture
def statements(engine):
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_selecting_for_many_digests_is_a_constant_number_of_statements(db_session, make, statements) -> None:
    t = make.epoch
    for n in range(60):
        make.post(f"Story {n} about {'rust' if n % 3 else 'python'}", domain=f"d{n % 7}.example", score=n * 7)
    digests = []
    for n in range(50):
        user = make.user(
            interests=["rust"] if n % 2 else ["python"],
            prefs={"max_posts": 1 + n % 5, "min_score": n, "muted_domains": [f"d{n % 7}.example"]},
        )
        old = make.post(f"Old {n}", domain=f"d{(n + 1) % 7}.example", summarized_at=t - timedelta(days=9))
        make.delivery(user, old, reaction="up" if n % 2 else "down")
        digests.append(make.digest(user))

    statements.clear()
    one = select_posts(session=db_session, digest_ids=[digests[0].id], lookback=LOOKBACK)
    for_one = len(statements)
    statements.clear()
    many = select_posts(session=db_session, digest_ids=[d.id for d in digests], lookback=LOOKBACK)
    for_many = len(statements)
    assert for_one == for_many <= 2  # SET LOCAL jit = off, and the selection itself
    assert sum("WITH d AS" in s for s in statements) == 1
    assert many[digests[0].id] == one[digests[0].id]
    # each digest got its own rules: its size, its minimum score, its muted domain
    for n, digest in enumerate(digests):
        picks = many.get(digest.id, [])
        assert len(picks) == 1 + n % 5
        for p in picks:
            assert p.user_id == digest.user_id
    # and the same answer as one digest at a time
    for digest in digests[:10]:
        alone = select_posts(session=db_session, digest_ids=[digest.id], lookback=LOOKBACK)
        assert [p.post_id for p in alone[digest.id]] == [p.post_id for p in many[digest.id]]

    # prepare (select + reserve + status) is also constant in the number of digests (its topic bookkeeping
    # done beforehand: once per post and once per phrase, whatever the number of digests)
    classify_posts(session=db_session)
    map_interests(session=db_session, digest_ids=[d.id for d in digests])
    statements.clear()
    prepare(session=db_session, digest_ids=[d.id for d in digests[:5]])
    for_five = len(statements)
    statements.clear()
    reserved = prepare(session=db_session, digest_ids=[d.id for d in digests[5:]])
    assert len(statements) == for_five
    for digest in digests[5:]:
        db_session.refresh(digest)
        assert digest.status == "sending" and digest.post_count == reserved[digest.id] == 1 + digests.index(digest) % 5
