"""Kill -9 the sender (the ``telegram`` queue's worker, whole process tree) twice in the middle of a
300-user digest run through the sandbox Telegram with its flood control on, restarting it each time.

Every user must get their digest (0 without), and the repeated messages, counted per chat from what
the sandbox recorded, must be at most the number of kills: each Telegram answer is recorded at once, so a
kill repeats at most the one message in flight, whose task (acks_late, reject_on_worker_lost) Redis hands
to the new sender after the visibility timeout.
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import delete, func, select

from hnpal.db.session import session_scope
from hnpal.deliveries.models import Digest
from hnpal.deliveries.service import prepare
from hnpal.posts.models import Post
from hnpal.sandbox.telegram_api import TelegramServer
from hnpal.users.models import User
from tests.deliveries.conftest import Factory
from tests.reliability.conftest import wait_until

USERS = 300
KILL_AT = (80, 180)  # users served when each kill lands


@pytest.mark.slow
def test_sender_killed_mid_digest_run(shared_env, stack_factory) -> None:
    made: Factory | None = None
    with TelegramServer(enforce_limits=True, global_rate=30, per_chat_rate=1) as tg:
        try:
            with session_scope() as session:
                made = Factory(session)
                posts = [made.post(f"Reliability digest story {n}", score=900 - n, comments=0) for n in range(5)]
                users = [made.user(prefs={"style": "brief", "max_posts": 5}) for _ in range(USERS)]
                digests = [made.digest(user) for user in users]
                digest_ids = [d.id for d in digests]
                chats = [u.telegram_id for u in users]
            with session_scope() as session:
                prepare(session=session, digest_ids=digest_ids)
            for chat in chats:
                tg.add_user(chat, "Ada")
            env = {
                **shared_env,
                "HNPAL_TELEGRAM_TOKEN": tg.token,
                "HNPAL_TELEGRAM_BASE_URL": tg.base_url,
                "HNPAL_TELEGRAM_TIMEOUT": "10",
            }
            stack = stack_factory(env)
            sender = stack.worker("telegram", concurrency=1, pool="threads", name="sender")
            sender.wait_ready()
            stack.send("hnpal.digests.send", [(i,) for i in digest_ids], queue="telegram")

            def served() -> int:
                return sum(1 for chat in chats if tg.messages(chat))

            kills = 0
            for threshold in KILL_AT:
                wait_until(lambda t=threshold: served() >= t, 120, lambda: f"{served()} served:\n{stack.logs()}")
                sender.kill9()
                kills += 1
                assert served() < USERS, "every digest was out before the kill"
                sender = stack.worker("telegram", concurrency=1, pool="threads", name=f"sender{kills + 1}")
                sender.wait_ready()

            def all_sent() -> bool:
                with session_scope() as session:
                    return (
                        session.scalar(select(func.count()).where(Digest.id.in_(digest_ids), Digest.status != "sent"))
                        == 0
                    )

            wait_until(all_sent, 180, lambda: f"digests not all sent ({served()} served):\n{stack.logs()}")
            per_chat = Counter({chat: len(tg.messages(chat)) for chat in chats})
            with tg._lock:
                refused = sum(1 for _method, status in tg.request_log if status == 429)
        finally:
            if made is not None:
                with session_scope() as session:
                    session.execute(delete(User).where(User.id.in_(made.user_ids)))
                    session.execute(delete(Post).where(Post.id.in_(made.post_ids)))

    missing = [chat for chat in chats if per_chat[chat] == 0]
    repeats = sum(n - 1 for n in per_chat.values() if n > 1)
    print(
        f"reliability sender-kill: users={USERS} kills={kills} messages={sum(per_chat.values())} "
        f"users_without_digest={len(missing)} repeats={repeats} http_429={refused} posts={len(posts)}"
    )
    assert missing == []
    assert repeats <= kills, {chat: n for chat, n in per_chat.items() if n > 1}
