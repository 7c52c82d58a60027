"""What HN Pal says in the chat that is not built from data: help, prompts, notices."""

from __future__ import annotations

OVER_BUDGET = (
    "You're sending messages faster than I can answer them all. I've kept every one and will go through "
    "them in order (about one every {seconds:g} s); {waiting} waiting. Other people's messages go first "
    "meanwhile."
)
