"""What HN Pal says in the chat that is not built from data: help, topics, prompts, notices."""

from __future__ import annotations

from hnpal.telegram.render import esc

TOPICS = (
    "AI", "LLM", "Programming", "Rust", "Python", "Go", "JavaScript", "Databases", "Security", "Privacy",
    "Linux", "Open source", "Startups", "Hardware", "Science", "Space", "Web", "Cloud",
)  # fmt: skip
HELP = (
    "<b>HN Pal</b> brings you the best of Hacker News, summarized, on your schedule.\n\n"
    "/digest — a digest now\n"
    "/discuss HN_ID — talk about a post (or tap 💬 under it); /done ends the talk\n"
    "/settings — style, summary style, time, time zone, frequency, filters\n"
    "/saved — your bookmarks\n"
    "/pause — pause or resume scheduled digests\n"
    "/token — your LLM usage\n"
    "/memory — what I remember about you (pause, forget, clear)\n"
    "/export — a copy of your data · /deletemydata — delete it\n"
    "/start — pick your interests again\n"
    "/help — this message\n\n"
    "Under every post: 💬 discuss it, 👍/👎 to teach me your taste, 💾 to save it."
)
PROMPTS = {
    "time": "Send the delivery time as HH:MM (24-hour), for example 07:30. "
    "For twice-daily digests send two: 07:30, 19:00.",
    "timezone": "Send your time zone as an IANA name, for example Europe/Berlin or America/New_York.",
    "max_posts": "How many posts per digest? Send a number from 1 to 30.",
    "min_score": "Only posts with at least this many points: send a number (0 for all).",
    "interests": "Send what you want to read about, separated by commas, for example: distributed systems, "
    "compilers, sourdough (send - to clear). They replace your interests; /start picks topic buttons.",
    "muted_keywords": "Send keywords to mute, separated by commas (send - to clear). A topic's name (rust, "
    "javascript, llm) also mutes the posts about it, whatever their titles say.",
    "muted_domains": "Send domains to mute, separated by commas, e.g. example.com (send - to clear).",
}
GROUP_NOTICE = "HN Pal works in private chats only: open a chat with me and send /start."
OVER_BUDGET = (
    "You're sending messages faster than I can answer them all. I've kept every one and will go through "
    "them in order (about one every {seconds:g} s); {waiting} waiting. Other people's messages go first "
    "meanwhile."
)


def unknown_command(command: str) -> str:
    """The reply to a command HN Pal does not have (and, to anyone but an admin, to /admin)."""
    return f"I don't know /{esc(command[:40])}. Here is what I can do:\n\n{HELP}"
