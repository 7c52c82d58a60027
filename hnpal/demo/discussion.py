"""Step 7: a discussion of a post on the ``llm`` queue, ``/done``, the memory extraction that follows,
and ``/memory``."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from sqlalchemy import text

from hnpal.demo.chats import UserChat
from hnpal.demo.common import UPDATE_WAIT, DemoError
from hnpal.demo.render import telegram_message

DISCUSSION_QUESTIONS = (
    "What is the main claim here, and what evidence backs it?",
    "I work on database tooling, so I'm curious: what would it mean for Postgres users?",
)


def discussion(console: Console, chat: UserChat) -> None:
    """💬 under a post, two questions answered on the llm queue (article, thread and memory as context),
    /done, the memory extraction that follows, and /memory."""
    post = chat.tg.message(chat.uid, chat.digest_messages[0])
    assert post is not None
    chat.press(post, "💬 Discuss")
    console.print(telegram_message(chat.last(), f"HN Pal → {chat.user.first_name}"))
    for question in DISCUSSION_QUESTIONS:
        before = len(chat.messages())
        chat.say(question)
        console.print(f"[cyan]{escape(chat.user.first_name)}[/]: {escape(question)}")
        try:
            answer = chat.tg.wait_for_messages(chat.uid, before + 1, timeout=UPDATE_WAIT)[before]
        except TimeoutError:
            raise DemoError(f"{chat.user.first_name}: no answer to {question!r} within {UPDATE_WAIT:.0f}s") from None
        console.print(telegram_message(answer, f"HN Pal → {chat.user.first_name}"))
    chat.say("/done")
    console.print(f"[cyan]{escape(chat.user.first_name)}[/] writes /done → {escape(chat.steps[-1].effect)}")
    deadline = time.monotonic() + UPDATE_WAIT
    while not _extracted(chat.uid):  # hnpal.memory.extract runs on the llm queue after the commit
        if time.monotonic() > deadline:
            raise DemoError(f"{chat.user.first_name}: the discussion's memory was not extracted")
        time.sleep(0.2)
    chat.say("/memory")
    console.print(f"[cyan]{escape(chat.user.first_name)}[/] writes /memory:")
    console.print(telegram_message(chat.last(), f"HN Pal → {chat.user.first_name}"))


def _extracted(telegram_id: int) -> bool:
    from hnpal.db.session import session_scope

    with session_scope() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM memory m JOIN users u ON u.id = m.user_id "
                    "WHERE u.telegram_id = :t AND m.type = 'discussion_note'"
                ),
                {"t": telegram_id},
            )
        )
