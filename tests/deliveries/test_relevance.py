"""Personal relevance through the real selection: topics per post, what interests mean, what reactions
teach, the "why" line, readers with no interests, and mutes of phrases in any script."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text

from hnpal import jobs
from hnpal.deliveries.models import Delivery
from hnpal.deliveries.selection import select_posts
from hnpal.deliveries.service import make_card, prepare
from hnpal.ingest.service import store_items
from hnpal.posts.models import Post
from hnpal.relevance.model import MODEL_NAME
from hnpal.relevance.service import classify_posts, map_interests
from hnpal.telegram import render

LOOKBACK = timedelta(hours=24)

# high-scored posts about nothing a reader below asked for
NOISE = [
    ("Cooking pasta at home", "food.example", 900),
    ("A startup postmortem: what we learned", "founder.example", 800),
    ("Kubernetes at scale", "k8s.example", 700),
    ("Why we moved our office to Lisbon", "blog.example", 650),
]


def seed(make, posts) -> dict[str, Post]:
    return {title: make.post(title, domain=domain, score=score) for title, domain, score in NOISE + posts}


def ranked(session, digest) -> list[tuple[str, str | None]]:
    """(title, reason) of a digest's picks, after the bookkeeping prepare does first."""
    classify_posts(session=session)
    map_interests(session=session, digest_ids=[digest.id])
    picks = select_posts(session=session, digest_ids=[digest.id], lookback=LOOKBACK).get(digest.id, [])
    title_of = dict(session.execute(select(Post.id, Post.title).where(Post.id.in_([p.post_id for p in picks]))).all())
    return [(title_of[p.post_id], p.reason) for p in picks]


def test_a_topic_meets_posts_about_it_in_other_words(db_session, make) -> None:
    seed(
        make,
        [
            ("Query planners explained", "use-the-index-luke.com", 40),
            ("SQLite WAL mode in depth", "sqlite.org", 30),
            ("Anatomy of a typosquatting attack", "blog.example", 35),
            ("Hardcoded keys found in 5,000 mobile apps", "news.example", 20),
            ("Running LLM inference on a laptop", "ml.example", 25),
            ("Kernel fusion: PyTorch", "ml.example", 15),
        ],
    )
    databases = ranked(db_session, make.digest(make.user(interests=["Databases"])))
    assert {t for t, _ in databases[:2]} == {"Query planners explained", "SQLite WAL mode in depth"}
    assert databases[0][1] == "topic:databases"
    security = ranked(db_session, make.digest(make.user(interests=["Security"])))
    assert {t for t, _ in security[:2]} == {
        "Anatomy of a typosquatting attack",
        "Hardcoded keys found in 5,000 mobile apps",
    }
    ai = ranked(db_session, make.digest(make.user(interests=["AI"])))
    assert {t for t, _ in ai[:2]} == {"Running LLM inference on a laptop", "Kernel fusion: PyTorch"}
    # none of those words is in those titles: the old rule ranked them by score, after the noise
    assert not any("database" in t.lower() or "security" in t.lower() for t, _ in databases[:2] + security[:2])


def test_words_newer_than_the_model_meet_their_topic(db_session, make) -> None:
    # the training stories end in 2022: "LLM" read much as "LLVM" did, and these came out as compilers posts
    seed(
        make,
        [
            ("Why LLMs hallucinate", "research.example", 20),
            ("What we learned from a year of building with LLMs", "oreilly.com", 15),
            ("Running Claude 3.5 Sonnet and Ollama side by side", "blog.example", 12),
            ("LLVM 18.1.0 released", "discourse.llvm.org", 45),
            ("Clang 17 release notes", "releases.llvm.org", 35),
        ],
    )
    ai = ranked(db_session, make.digest(make.user(interests=["AI"])))
    assert {t for t, _ in ai[:3]} == {
        "Why LLMs hallucinate",
        "What we learned from a year of building with LLMs",
        "Running Claude 3.5 Sonnet and Ollama side by side",
    }
    assert {reason for _, reason in ai[:3]} == {"topic:ai"}
    compilers = ranked(db_session, make.digest(make.user(interests=["compilers"])))
    assert {t for t, _ in compilers[:2]} == {"LLVM 18.1.0 released", "Clang 17 release notes"}
    # what the reader sees is the title as it came
    assert "Why LLMs hallucinate" in dict(db_session.execute(select(Post.title, Post.id)).all())


def prepared_together(session, digests, *, alike) -> dict:
    """The picks of ``digests`` selected in one statement, after checking that each of ``alike`` gets the
    same posts, with the same reasons, as when it is selected alone."""
    map_interests(session=session, digest_ids=[g.id for g in digests])
    together = select_posts(session=session, digest_ids=[g.id for g in digests], lookback=LOOKBACK)
    for digest in alike:
        alone = select_posts(session=session, digest_ids=[digest.id], lookback=LOOKBACK)[digest.id]
        assert [(p.post_id, p.reason) for p in together[digest.id]] == [(p.post_id, p.reason) for p in alone]
    return together


def test_readers_of_different_windows_prepared_together_each_get_their_own(db_session, make) -> None:
    # a weekly reader's window holds posts a daily reader's does not: prepared in one statement, each digest
    # ranks a topic's posts among those of its own window (a daily reader got 4 posts of 10 here before)
    weekly = make.user(interests=["Databases"], prefs={"frequency": "weekly"})
    daily = make.user(interests=["Databases"])
    older = [
        make.post(f"PostgreSQL index internals, part {n}", score=500 - n, summarized_at=make.epoch - timedelta(days=3))
        for n in range(20)
    ]
    today = [make.post(f"PostgreSQL index internals, part {20 + n}", score=100 - n) for n in range(10)]
    for n in range(30):
        make.post(f"Cooking pasta at home, take {n}", score=50)
    digests = [make.digest(weekly), make.digest(daily)]
    classify_posts(session=db_session)
    together = prepared_together(db_session, digests, alike=digests)
    assert {p.post_id for p in together[digests[1].id]} == {p.id for p in today}
    # the weekly reader's come from the whole week
    assert {p.post_id for p in together[digests[0].id]} & {p.id for p in older}


def test_each_window_has_its_own_unmissable_story_and_subjects_to_explore(db_session, make) -> None:
    weekly = make.user(interests=["Databases"], prefs={"frequency": "weekly"})
    daily = make.user(interests=["Databases"])
    learner = make.user()  # no interest: learns from its reactions
    liked = make.post("SQLite internals", domain="sqlite.org", summarized_at=make.epoch - timedelta(days=9))
    make.post("The week's biggest story", score=9000, summarized_at=make.epoch - timedelta(days=3))
    for n in range(15):
        make.post(f"Rust borrow checker notes, part {n}", score=400, summarized_at=make.epoch - timedelta(days=3))
    make.post("Today's biggest story", score=3000)
    for n in range(60):
        make.post(f"PostgreSQL index internals, part {n}" if n % 3 else f"Go generics in practice, {n}", score=90)
    classify_posts(session=db_session)
    make.delivery(learner, liked, reaction="up")
    digests = [make.digest(weekly), make.digest(daily), make.digest(learner)]
    together = prepared_together(db_session, digests, alike=digests[1:])
    title = dict(db_session.execute(select(Post.id, Post.title)).all())
    assert [title[p.post_id] for p in together[digests[1].id] if p.reason == "top"] == ["Today's biggest story"]
    assert [title[p.post_id] for p in together[digests[0].id] if p.reason == "top"] == ["The week's biggest story"]


def test_typed_interests_mean_topics_or_else_their_words(db_session, make) -> None:
    seed(
        make,
        [
            ("Consensus with Raft: leader election and log replication", "dist.example", 30),
            ("My sourdough starter", "bread.example", 10),
        ],
    )
    distributed = ranked(db_session, make.digest(make.user(interests=["distributed systems"])))
    assert distributed[0] == ("Consensus with Raft: leader election and log replication", "topic:distributed")
    # "sourdough" means no topic of the model: its word meets the title
    bread = ranked(db_session, make.digest(make.user(interests=["sourdough"])))
    assert bread[0] == ("My sourdough starter", "word:sourdough")
    meant = dict(db_session.execute(text("SELECT phrase, topics FROM interest_topics")).all())
    assert meant["distributed systems"] == ["distributed"] and meant["sourdough"] == []


def test_interests_learned_in_discussions_count_the_same(db_session, make) -> None:
    from hnpal.memory.models import Memory

    seed(make, [("SQLite WAL mode in depth", "sqlite.org", 30)])
    user = make.user()
    db_session.add(Memory(user_id=user.id, type="interest", content="relational databases", source_type="discussion"))
    db_session.flush()
    assert ranked(db_session, make.digest(user))[0] == ("SQLite WAL mode in depth", "topic:databases")


def test_a_reader_with_no_interests_gets_the_ranking_by_score(db_session, make) -> None:
    seed(make, [("SQLite WAL mode in depth", "sqlite.org", 30)])
    picks = ranked(db_session, make.digest(make.user()))
    assert [t for t, _ in picks] == [t for t, _, _ in NOISE] + ["SQLite WAL mode in depth"]
    assert all(reason in (None, "top") for _, reason in picks)


def test_likes_teach_what_a_reader_cares_for(db_session, make) -> None:
    posts = seed(
        make,
        [
            ("SQLite WAL mode in depth", "sqlite.org", 30),
            ("Query planners explained", "use-the-index-luke.com", 20),
            ("Hardcoded keys found in 5,000 mobile apps", "news.example", 25),
        ],
    )
    old = make.post(
        "PostgreSQL indexes: a deep dive", domain="pg.example", summarized_at=make.epoch - timedelta(days=9)
    )
    classify_posts(session=db_session)
    user = make.user()
    make.delivery(user, old, reaction="up")  # the reaction's trigger reads the post's topics
    learned = dict(db_session.execute(text("SELECT topic, weight FROM user_topic_affinity")).all())
    assert learned["databases"] > 0.5
    picks = ranked(db_session, make.digest(user))
    assert {t for t, _ in picks[:2]} == {"SQLite WAL mode in depth", "Query planners explained"}
    assert picks[0][1] == "learned:databases"
    assert posts  # the noise scored far higher and still comes after


def test_the_why_line_is_stored_and_shown(db_session, make) -> None:
    seed(make, [("SQLite WAL mode in depth", "sqlite.org", 30)])
    user = make.user(interests=["Databases"])
    digest = make.digest(user)
    prepare(session=db_session, digest_ids=[digest.id])
    delivery = db_session.scalars(select(Delivery).where(Delivery.user_id == user.id).order_by(Delivery.id)).first()
    post = db_session.get(Post, delivery.post_id)
    assert (post.title, delivery.reason) == ("SQLite WAL mode in depth", "topic:databases")
    card = make_card(delivery, post, None, position=1, total=1)
    assert card.why == "Databases"
    assert "💡 Databases" in render.post_message(card)
    assert "💡 Databases" in render.brief_message([card], "Digest")


def test_topics_are_computed_once_per_post(db_session) -> None:
    item = {"id": 8_800_001, "type": "story", "title": "SQLite WAL mode in depth", "url": "https://sqlite.org/wal.html",
            "by": "ada", "time": 1_700_000_000, "score": 10, "descendants": 1}  # fmt: skip
    with jobs.recording() as sent:
        store_items(session=db_session, items={item["id"]: item})
        db_session.commit()
    post = db_session.scalars(select(Post).where(Post.hn_id == item["id"])).one()
    # the fetch asks for the new post's topics in a job of its own, run here as its worker would
    (classify,) = [job for job in sent if job.name == jobs.RELEVANCE_CLASSIFY]
    assert classify.args[0] == [post.id]
    assert classify_posts(session=db_session, post_ids=classify.args[0]) == 1
    db_session.refresh(post)
    assert post.topics and post.topics[0] == "databases" and post.topics_model == MODEL_NAME
    assert len(post.topics) == len(post.topic_weights)
    # a mark only this test writes: a second fetch that recomputed would overwrite it
    db_session.execute(
        text("UPDATE posts SET topics = '{marked}', topic_weights = '{1}' WHERE id = :id"), {"id": post.id}
    )
    with jobs.recording() as again:
        store_items(session=db_session, items={item["id"]: {**item, "score": 99}})
        db_session.commit()
    assert jobs.RELEVANCE_CLASSIFY not in {job.name for job in again}  # not a new post: nothing to classify
    db_session.expire_all()
    post = db_session.get(Post, post.id)
    assert (post.score, post.topics) == (99, ["marked"])
    assert classify_posts(session=db_session, post_ids=[post.id]) == 0


def test_a_new_model_recomputes_the_posts_digests_may_still_pick(db_session, make) -> None:
    """Topics an earlier model computed are recomputed once for the week's posts (what prepare reads), not for
    older ones, and not again."""
    recent = make.post("SQLite WAL mode in depth", domain="sqlite.org")
    old = make.post("Query planners explained", domain="db.example", summarized_at=make.epoch - timedelta(days=30))
    db_session.execute(
        text("UPDATE posts SET topics = '{cooking}', topic_weights = '{0.9}', topics_model = 'an-older-model'")
    )
    since = make.epoch - timedelta(days=7)
    assert classify_posts(session=db_session, since=since) == 1
    db_session.expire_all()
    assert db_session.get(Post, recent.id).topics[0] == "databases"
    assert db_session.get(Post, recent.id).topics_model == MODEL_NAME
    assert db_session.get(Post, old.id).topics == ["cooking"]
    assert classify_posts(session=db_session, since=since) == 0


def test_mutes_match_phrases_in_any_script(db_session, make) -> None:
    muted = [
        make.post("Machine Learning for everyone", score=500),
        make.post("Node.js 22 released", score=490),
        make.post("Le Café des Développeurs", score=480),
        make.post("日本の新しいプログラミング言語", score=470),
    ]
    kept = [make.post("Learning a machine language", score=100), make.post("Nodes and edges", score=90)]
    from hnpal.users.schemas import DigestPreferences

    prefs = DigestPreferences(muted_keywords=["machine learning", "node.js", "CAFÉ", "日本"]).model_dump()
    assert prefs["muted_keywords"] == ["machine learning", "node.js", "café", "日本"]
    user = make.user(prefs=prefs)
    titles = [t for t, _ in ranked(db_session, make.digest(user))]
    assert not {p.title for p in muted} & set(titles)
    assert {p.title for p in kept} <= set(titles)


def test_a_muted_topic_mutes_the_posts_about_it(db_session, make) -> None:
    """A muted keyword that names a topic ("rust") mutes the posts about it whatever their titles say; one that
    names no topic of the model ("crypto") or names one ambiguously ("ml": ML languages or machine learning?)
    mutes only the titles with the word."""
    from hnpal.users.schemas import DigestPreferences

    seed(
        make,
        [
            ("Announcing Tokio 1.0", "tokio.rs", 60),
            ("Rust 1.70.0 released", "blog.rust-lang.org", 55),
            ("Writing a Python extension with PyO3", "pyo3.example", 50),
            ("Effect handlers arrive in OCaml 5", "ocaml.org", 45),
            ("Cryptography engineering for developers", "blog.example", 40),
            ("Why I left crypto", "blog.example", 35),
            ("SQLite WAL mode in depth", "sqlite.org", 30),
        ],
    )
    prefs = DigestPreferences(muted_keywords=["Rust", "crypto", "ML"]).model_dump()
    picks = {t for t, _ in ranked(db_session, make.digest(make.user(prefs=prefs)))}
    assert not {"Announcing Tokio 1.0", "Rust 1.70.0 released", "Why I left crypto"} & picks
    assert {
        "Writing a Python extension with PyO3",
        "Effect handlers arrive in OCaml 5",
        "Cryptography engineering for developers",
        "SQLite WAL mode in depth",
    } <= picks
    # the mute wins over an interest in the same topic; the reader's other interests rank as before
    fan = ranked(db_session, make.digest(make.user(interests=["Rust", "Databases"], prefs=prefs)))
    assert fan[0] == ("SQLite WAL mode in depth", "topic:databases")
    assert not {"Announcing Tokio 1.0", "Rust 1.70.0 released"} & {t for t, _ in fan}
    # without the mute, the same reader gets them first
    unmuted = ranked(db_session, make.digest(make.user(interests=["Rust", "Databases"])))
    assert {t for t, _ in unmuted[:3]} == {"Announcing Tokio 1.0", "Rust 1.70.0 released", "SQLite WAL mode in depth"}


def test_which_muted_keywords_name_a_topic() -> None:
    from hnpal.relevance.model import muted_topics

    assert muted_topics(["Rust", " LLM ", "rust", "Programming language theory"]) == ["rust", "ai", "plt"]
    # no topic by that name, an ambiguous one, a phrase that is no name
    assert muted_topics(["crypto", "ml", "machine learning", "sourdough"]) == []


def test_the_days_unmissable_story_keeps_a_place(db_session, make) -> None:
    for n in range(60):
        make.post(f"Story number {n} of the day", domain=f"site{n}.example", score=20 + n)
    make.post("Everyone is talking about this", domain="big.example", score=2000)
    make.post("SQLite WAL mode in depth", domain="sqlite.org", score=5)
    picks = ranked(db_session, make.digest(make.user(interests=["Databases"])))
    assert picks[0] == ("Everyone is talking about this", "top")
    assert ("SQLite WAL mode in depth", "topic:databases") in picks
    # not in a digest of fewer than five places
    small = ranked(db_session, make.digest(make.user(interests=["Databases"], prefs={"max_posts": 3})))
    assert ("Everyone is talking about this", "top") not in small
    # a reader ranked by score gets it first anyway, without a "why"
    plain = ranked(db_session, make.digest(make.user()))
    assert plain[0] == ("Everyone is talking about this", None)


def about(session, post: Post, topics: dict[str, float]) -> None:
    """Say what a post is about, as the model would have stored it."""
    session.execute(
        text("UPDATE posts SET topics = :t, topic_weights = :w, topics_model = :m WHERE id = :id"),
        {"t": list(topics), "w": list(topics.values()), "m": MODEL_NAME, "id": post.id},
    )


def test_a_liked_domain_lifts_a_post_from_below_the_topics_first_places(db_session, make) -> None:
    # two topics of the reader with twelve posts each, all more about them than the post of the liked domain:
    # the selection ranks only a digest's first max_posts + per_topic posts by relevance, and must keep this one
    user = make.user(interests=["Databases", "Security"])
    for n in range(12):
        about(db_session, make.post(f"Storage engine notes {n}", domain=f"db{n}.example"), {"databases": 0.6})
        about(db_session, make.post(f"Threat model notes {n}", domain=f"sec{n}.example"), {"security": 0.6})
    lifted = make.post("Index internals", domain="liked.example")
    about(db_session, lifted, {"databases": 0.45})
    for title in ("Btree pages", "Vacuum tuning"):  # two 👍 to the domain: x1.5
        old = make.post(title, domain="liked.example", summarized_at=make.epoch - timedelta(days=9))
        about(db_session, old, {"programming": 0.5})
        make.delivery(user, old, reaction="up")
    picks = ranked(db_session, make.digest(user))
    assert picks[0] == ("Index internals", "topic:databases")
    assert len(picks) == 10


def test_likes_and_dislikes_of_a_topic_are_kept_apart(db_session, make) -> None:
    """One like against two dislikes is not one like alone: both sums are kept, and a changed reaction moves
    its weight from one to the other."""
    liked = make.post("SQLite WAL mode in depth", domain="sqlite.org", summarized_at=make.epoch - timedelta(days=9))
    disliked = [
        make.post(title, domain="db.example", summarized_at=make.epoch - timedelta(days=9))
        for title in ("PostgreSQL vacuum tuning", "Query planners explained")
    ]
    classify_posts(session=db_session)
    user = make.user()
    make.delivery(user, liked, reaction="up")
    rows = [make.delivery(user, post, reaction="down") for post in disliked]
    sums = db_session.execute(
        text("SELECT liked, disliked, weight FROM user_topic_affinity WHERE topic = 'databases'")
    ).one()
    assert sums.liked > 0.3 and sums.disliked > 0.6 and abs(sums.weight - (sums.liked - sums.disliked)) < 1e-4
    rows[0].reaction = "up"
    db_session.flush()
    after = db_session.execute(text("SELECT liked, disliked FROM user_topic_affinity WHERE topic = 'databases'")).one()
    assert after.liked > sums.liked + 0.3 and after.disliked < sums.disliked - 0.3


def test_a_reader_who_only_disliked_is_shown_subjects_not_tried_yet(db_session, make) -> None:
    """Reactions and no like yet: the digest explores, the best post of each subject first, and what was
    disliked (databases, however high it scores) after every subject not tried yet."""
    seed(
        make,
        [
            ("SQLite WAL mode in depth", "sqlite.org", 30),
            ("Query planners explained", "use-the-index-luke.com", 28),
            ("PostgreSQL vacuum tuning", "pg.example", 26),
            ("Anatomy of a typosquatting attack", "blog.example", 12),
            ("Rust borrow checker explained", "rust.example", 11),
        ],
    )
    user = make.user()
    for title in ("MySQL replication lag", "Indexing JSON in PostgreSQL"):
        old = make.post(title, domain="db.example", summarized_at=make.epoch - timedelta(days=9))
        classify_posts(session=db_session)
        make.delivery(user, old, reaction="down")
    picks = [t for t, _ in ranked(db_session, make.digest(user))]
    databases = {"SQLite WAL mode in depth", "Query planners explained", "PostgreSQL vacuum tuning"}
    assert databases <= set(picks)  # still in the digest ...
    first_database = min(picks.index(t) for t in databases)
    # ... after the subjects not tried (security, Rust), and after nothing it outscores by much
    assert picks.index("Anatomy of a typosquatting attack") < first_database
    assert picks.index("Rust borrow checker explained") < first_database
    # by score alone, they would come right after the high-scored noise
    assert [t for t, _ in ranked(db_session, make.digest(make.user()))][4:7] == sorted(
        databases, key=["SQLite WAL mode in depth", "Query planners explained", "PostgreSQL vacuum tuning"].index
    )


def test_reactions_are_evidence_for_the_topic_a_reader_reads_for(db_session, make) -> None:
    """A like of a post mostly about a topic is strong evidence that the reader reads for it, a dislike
    evidence against: a reader who only reacted gets that topic's posts before better-scored ones of the
    topic they disliked, and a changed reaction takes its evidence back."""
    seed(
        make,
        [
            ("Anatomy of a typosquatting attack", "blog.example", 60),
            ("SQLite WAL mode in depth", "sqlite.org", 12),
            ("Query planners explained", "use-the-index-luke.com", 10),
        ],
    )
    user = make.user()
    reacted = []
    for title, reaction in (
        ("Indexing JSON in PostgreSQL", "up"),
        ("Hardcoded keys found in 5,000 mobile apps", "down"),
    ):
        old = make.post(title, domain="x.example", summarized_at=make.epoch - timedelta(days=9))
        classify_posts(session=db_session)
        reacted.append(make.delivery(user, old, reaction=reaction))

    def evidence() -> dict[str, float]:
        rows = db_session.execute(
            text("SELECT topic, evidence FROM user_topic_affinity WHERE user_id = :u"), {"u": user.id}
        )
        return dict(rows.tuples().all())

    before = evidence()
    assert before["databases"] > 1 and before["security"] < 0
    titles = [t for t, _ in ranked(db_session, make.digest(user))]
    assert titles.index("SQLite WAL mode in depth") < titles.index("Anatomy of a typosquatting attack")
    assert titles.index("Query planners explained") < titles.index("Anatomy of a typosquatting attack")
    reacted[0].reaction = "down"  # changed their mind
    db_session.flush()
    assert evidence()["databases"] < 0


DATABASE_TITLES = [
    ("SQLite WAL mode in depth", "sqlite.org"),
    ("Query planners explained", "use-the-index-luke.com"),
    ("PostgreSQL vacuum tuning", "pg.example"),
    ("How Postgres MVCC works", "pg2.example"),
    ("B-tree indexes in SQLite", "sqlite2.example"),
    ("Sharding PostgreSQL at scale", "pg3.example"),
    ("MySQL replication lag explained", "mysql.example"),
    ("Write-ahead logging in database engines", "db.example"),
    ("Transaction isolation levels in PostgreSQL", "pg4.example"),
    ("Designing a SQL schema for time series", "tsdb.example"),
    ("Partitioning large tables in Postgres", "pg5.example"),
    ("Vacuum and bloat in PostgreSQL tables", "pg6.example"),
]
OTHER_SUBJECTS = [
    ("Anatomy of a typosquatting attack", "blog.example"),
    ("Rust borrow checker explained", "rust.example"),
    ("Go generics in practice", "go.example"),
    ("CSS grid layout tricks", "css.example"),
    ("Linux kernel 6.1 released", "kernel.example"),
]


def test_exploration_shrinks_as_the_likes_settle_on_a_topic(db_session, make) -> None:
    """A reader learning from reactions keeps places for subjects not tried while one like leaves it open what
    they read for; once many likes point at one topic, the whole digest is about it."""
    for n, (title, domain) in enumerate(DATABASE_TITLES):
        make.post(title, domain=domain, score=40 - n)
    for title, domain in OTHER_SUBJECTS:
        make.post(title, domain=domain, score=100)
    liked_titles = ["Indexing JSON in PostgreSQL", "MySQL query cache removed", "SQLite is not a toy database",
                    "Postgres full-text search", "Database migrations without downtime"]  # fmt: skip
    old = [
        make.post(title, domain="old.example", summarized_at=make.epoch - timedelta(days=9)) for title in liked_titles
    ]
    classify_posts(session=db_session)
    settled, unsure = make.user(), make.user()
    for post in old:
        make.delivery(settled, post, reaction="up")
    make.delivery(unsure, old[0], reaction="up")
    others = {title for title, _ in OTHER_SUBJECTS}
    databases = {title for title, _ in DATABASE_TITLES}

    unsure_picks = [t for t, _ in ranked(db_session, make.digest(unsure))]
    assert len(unsure_picks) == 10
    assert set(unsure_picks[:8]) <= databases  # what the one like says, first ...
    assert set(unsure_picks[8:]) <= others  # ... and two places to try other subjects

    settled_picks = [t for t, _ in ranked(db_session, make.digest(settled))]
    assert len(settled_picks) == 10 and set(settled_picks) <= databases
