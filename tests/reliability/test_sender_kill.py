"""Kill -9 the sender (the ``telegram`` queue's worker, whole process tree) twice in the middle of a
300-user digest run through the sandbox Telegram with its flood control on, restarting it each time.

Every user must get their digest (0 without), and the repeated messages, counted per chat from what
the sandbox recorded, must be at most the number of kills: each Telegram answer is recorded at once, so a
kill repeats at most the one message in flight. The dead sender's task (acks_late, reject_on_worker_lost)
comes back from Redis after the visibility timeout; a task lost between Redis's BRPOP and its record as
unacknowledged is sent on by the beat's ``hnpal.digests.sweep`` from the digest's row. The run uses a
private PostgreSQL and Redis, so the beat touches no other test's users.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hnpal.deliveries.models import Digest
from hnpal.deliveries.service import prepare
from hnpal.sandbox.telegram_api import TelegramServer
from tests.deliveries.conftest import Factory
from tests.reliability.conftest import Pipeline, wait_until

USERS = 300
KILL_AT = (80, 180)  # users served when each kill lands


@pytest.mark.slow
def test_sender_killed_mid_digest_run(pipeline: Pipeline) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with Session(pipeline.engine) as session:
        make = Factory(session)
        earlier = now - timedelta(hours=1)
        posts = [make.post(f"Digest story {n}", score=900 - n, comments=0, summarized_at=earlier) for n in range(5)]
        users = [make.user(prefs={"style": "brief", "max_posts": 5}) for _ in range(USERS)]
        digest_ids = [make.digest(user, created_at=now).id for user in users]
        chats = [u.telegram_id for u in users]
        session.commit()
        prepare(session=session, digest_ids=digest_ids)
        session.commit()

    with TelegramServer(enforce_limits=True, global_rate=30, per_chat_rate=1) as tg:
        for chat in chats:
            tg.add_user(chat, "Ada")
        stack = pipeline.stack
        stack.env.update(
            {"HNPAL_TELEGRAM_TOKEN": tg.token, "HNPAL_TELEGRAM_BASE_URL": tg.base_url, "HNPAL_TELEGRAM_TIMEOUT": "10"}
        )
        sender = stack.worker("telegram", concurrency=1, pool="threads", name="sender")
        sender.wait_ready()
        stack.worker("default", concurrency=2, pool="threads", name="default").wait_ready()
        stack.beat().wait_ready("beat: Starting...")
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

        def unsent() -> int:
            with Session(pipeline.engine) as session:
                return session.scalar(select(func.count()).where(Digest.id.in_(digest_ids), Digest.status != "sent"))

        wait_until(lambda: unsent() == 0, 180, lambda: f"{unsent()} digests not sent:\n{stack.logs()}")
        per_chat = Counter({chat: len(tg.messages(chat)) for chat in chats})
        with tg._lock:
            refused = sum(1 for _method, status in tg.request_log if status == 429)

    logs = "\n".join(p.log() for p in stack.procs)
    swept = sum(int(n) for n in re.findall(r"Task hnpal\.digests\.sweep\[[^\]]+\] succeeded in \S+: (\d+)", logs))
    missing = [chat for chat in chats if per_chat[chat] == 0]
    repeats = sum(n - 1 for n in per_chat.values() if n > 1)
    print(
        f"reliability sender-kill: users={USERS} kills={kills} messages={sum(per_chat.values())} "
        f"users_without_digest={len(missing)} repeats={repeats} http_429={refused} posts={len(posts)} "
        f"resent_by_sweep={swept}"
    )
    assert missing == []
    assert repeats <= kills, {chat: n for chat, n in per_chat.items() if n > 1}
