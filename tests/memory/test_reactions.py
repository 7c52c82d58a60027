"""Interests learned from 👍: a title keyword or a domain shared by enough liked posts, once."""

from __future__ import annotations

import pytest

from hnpal.db.session import session_scope
from hnpal.memory import service
from hnpal.users.models import User
from tests.memory.conftest import Factory, memory_rows


def like(user: dict, delivery_id: int) -> list[str]:
    with session_scope() as session:
        return service.learn_from_reaction(session=session, user=session.get(User, user["id"]), delivery_id=delivery_id)


@pytest.fixture
def rust_posts(make: Factory) -> list[dict]:
    return [
        make.post("Show HN: A Rust rewrite of grep"),
        make.post("Why we moved our queue to Rust in 2024"),
        make.post("Rust 1.80 released"),
        make.post("Async Rust in practice"),
    ]


def test_three_liked_posts_on_a_topic_make_an_interest(make: Factory, rust_posts: list[dict]) -> None:
    user = make.user()
    first = make.delivery(user, rust_posts[0], reaction="up")
    assert like(user, first) == []
    second = make.delivery(user, rust_posts[1], reaction="up")
    assert like(user, second) == []
    third = make.delivery(user, rust_posts[2], reaction="up")
    assert like(user, third) == ["Rust"]
    [row] = memory_rows(user["id"])
    assert (row["type"], row["content"], row["source_type"], row["active"]) == ("interest", "Rust", "reaction", True)
    assert row["source_post_id"] == rust_posts[2]["id"]
    fourth = make.delivery(user, rust_posts[3], reaction="up")
    assert like(user, fourth) == []  # learned once
    assert len(memory_rows(user["id"])) == 1


def test_a_forgotten_topic_is_not_learned_again(make: Factory, rust_posts: list[dict]) -> None:
    user = make.user()
    make.memory(user, "rust", source="reaction", active=False)
    ids = [make.delivery(user, p, reaction="up") for p in rust_posts[:3]]
    assert like(user, ids[-1]) == []


def test_an_interest_already_held_is_not_added(make: Factory, rust_posts: list[dict]) -> None:
    user = make.user(interests=["Rust"])
    make.memory(user, "Rust", source="onboarding")
    ids = [make.delivery(user, p, reaction="up") for p in rust_posts[:3]]
    assert like(user, ids[-1]) == []


def test_nothing_is_learned_while_memory_is_paused(make: Factory, rust_posts: list[dict]) -> None:
    user = make.user(memory_enabled=False)
    ids = [make.delivery(user, p, reaction="up") for p in rust_posts[:3]]
    assert like(user, ids[-1]) == []
    assert memory_rows(user["id"]) == []


def test_dislikes_old_likes_and_other_users_do_not_count(make: Factory, rust_posts: list[dict]) -> None:
    user, other = make.user(), make.user()
    make.delivery(user, rust_posts[0], reaction="down")
    make.delivery(user, rust_posts[1], reaction="up", reacted_days_ago=45)  # outside the 30-day window
    for post in rust_posts[:3]:
        make.delivery(other, post, reaction="up")  # someone else's likes
    third = make.delivery(user, rust_posts[2], reaction="up")
    assert like(user, third) == []
    down = make.delivery(user, rust_posts[3], reaction="down")
    assert like(user, down) == []  # a 👎 never teaches an interest
    assert like(other, third) == []  # a delivery of another user is not looked at


def test_a_domain_is_learned_but_not_a_hosting_platform(make: Factory) -> None:
    user = make.user()
    ids = [make.delivery(user, make.post(f"Kernel report {n}", domain="lwn.net"), reaction="up") for n in range(3)]
    assert "lwn.net" in like(user, ids[-1])
    hosted = [
        make.delivery(user, make.post(f"{name} on GitHub", domain="github.com"), reaction="up")
        for name in ("Alpha", "Beta", "Gamma")
    ]
    assert "github.com" not in like(user, hosted[-1])


def test_noise_words_and_numbers_are_not_topics(make: Factory) -> None:
    user = make.user()
    titles = ["Show HN: How I built 2024 tools", "Show HN: How we built 2024 apps", "Show HN: How they built 2024"]
    ids = [make.delivery(user, make.post(t), reaction="up") for t in titles]
    assert like(user, ids[-1]) == []


def test_only_named_topics_count(make: Factory) -> None:
    """Plain words shared by liked titles are not topics; names and terms are, wherever they stand."""
    user = make.user()
    titles = ["Kafka streams for tiny teams", "Building streams with Kafka", "Why streams beat batches: Kafka"]
    ids = [make.delivery(user, make.post(t), reaction="up") for t in titles]
    assert like(user, ids[-1]) == ["Kafka"]  # "streams" is shared too, but it is an ordinary word
