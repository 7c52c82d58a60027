"""What the demo's parts share: its users, its timings, its error, and two text helpers."""

from __future__ import annotations

from dataclasses import dataclass

UPDATE_WAIT = 30.0  # seconds one user action may take to be handled (bot poll, queue, 1 msg/s per chat)
DIGEST_GRACE = 120.0  # seconds after the delivery time for the digests to arrive
DIGEST_DUE_INTERVAL = 5  # seconds between beat's scans for due digests in the demo


class DemoError(RuntimeError):
    """A step of the demo failed or timed out (the message says which and why)."""


@dataclass(frozen=True)
class DemoUser:
    """A simulated Telegram user and what they choose in the bot."""

    telegram_id: int
    first_name: str
    username: str
    topics: tuple[str, ...]
    style: str  # flat_scroll | brief
    summary_style: str
    timezone: str
    max_posts: int
    muted_keywords: str | None = None
    about: str = ""


# Interests picked from the bot's topic buttons; the ones that occur as words in the snapshot's titles
# (LLM, Rust, Go, Web) lift those posts in that user's ranking.
USERS = (
    DemoUser(
        5_100_001, "Ada", "ada_l", ("AI", "LLM", "Python"), "flat_scroll", "basic", "Europe/Berlin", 4,
        about="ML engineer in Berlin: one message per post, plain summaries",
    ),
    DemoUser(
        5_100_002, "Linus", "linus_t", ("Linux", "Security", "Rust", "Go"), "brief", "technical",
        "America/New_York", 5, muted_keywords="startup, prices",
        about="systems programmer in New York: one compact list, technical summaries, no business news",
    ),
    DemoUser(
        5_100_003, "Grace", "grace_h", ("Databases", "Startups", "Open source", "Web"), "flat_scroll", "concise",
        "Asia/Tokyo", 3, about="founder in Tokyo: three posts, one-line summaries",
    ),
)  # fmt: skip


def first_line(value: str, limit: int = 70) -> str:
    return shorten(value.strip().splitlines()[0] if value.strip() else "", limit)


def shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
