"""The one way work is enqueued: by task name, once the transaction that asked for it has committed.

Services, the bot, the importer, the CLI and the console never import a task module; they name the task
here (the Polar and Zulip pattern)::

    jobs.enqueue(session, jobs.CRAWL_POST, post.id)        # sent after ``session`` commits, dropped on rollback
    jobs.enqueue(None, jobs.TELEGRAM_HANDLE, update_id)    # no transaction: sent at once

A worker never picks up an id whose row is not visible yet, and a rolled-back transaction enqueues
nothing. Arguments are ids and small JSON values, never rows. The queue and priority come from the task's
own decorator in ``tasks/``; ``countdown`` is capped at ``HNPAL_MAX_COUNTDOWN`` by ``hnpal.celery.app``,
which every send goes through (retries included).

:class:`Batch` collects jobs while something is handled and sends them later (a Telegram update's
follow-ups, which its worker may run itself): handlers return work, they do not send it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from hnpal.celery import app
from hnpal.db.hooks import after_commit
from hnpal.queues import WAITED_ON

# --- task names (hnpal.<area>.<verb>); a test checks each is a registered task -------------------------
CONTENT_BACKUP = "hnpal.content.backup"
CONTENT_COPY = "hnpal.content.copy"
CONTENT_STORE = "hnpal.content.store"
CRAWL_POST = "hnpal.crawl.post"
DIGESTS_PREPARE = "hnpal.digests.prepare"
DIGESTS_SEND = "hnpal.digests.send"
DIGESTS_SEND_BATCH = "hnpal.digests.send_batch"
DISCUSSIONS_IDLE = "hnpal.discussions.idle"
DISCUSSIONS_MESSAGE = "hnpal.discussions.message"
DISCUSSIONS_REPLY = "hnpal.discussions.reply"
INGEST_COMMENTS = "hnpal.ingest.comments"
INGEST_FETCH = "hnpal.ingest.fetch"
MEMORY_EXTRACT = "hnpal.memory.extract"
RELEVANCE_CLASSIFY = "hnpal.relevance.classify"
REVIEW_RELEASE = "hnpal.review.release"
REVIEW_SEND = "hnpal.review.send"
SUMMARIES_SUMMARIZE = "hnpal.summaries.summarize"
TELEGRAM_HANDLE = "hnpal.telegram.handle"
TELEGRAM_OVER_BUDGET = "hnpal.telegram.over_budget"


@dataclass(frozen=True)
class Job:
    """One task to send: its name, its arguments (ids and small JSON values) and delivery options."""

    name: str
    args: tuple[Any, ...] = ()
    countdown: float | None = None
    priority: int | None = None

    def send(self) -> Any:
        """Publish it now (the ``AsyncResult``; only tasks declared with ``ignore_result=False`` fill it).
        Inside :func:`recording`, it is recorded instead (and None is returned)."""
        recorder = _recorder.get()
        if recorder is not None:
            recorder.append(self)
            return None
        options: dict[str, Any] = {}
        if self.countdown is not None:
            options["countdown"] = self.countdown
        if self.priority is not None:
            options["priority"] = self.priority
        return app.send_task(self.name, args=list(self.args), **options)


def job(name: str, *args: Any, countdown: float | None = None, waited_on: bool = False) -> Job:
    """``waited_on``: a user asked for this and waits for it, so it goes at the highest priority, ahead of
    the bulk work its task declares a lower priority for (a /digest during a scheduled digest run)."""
    return Job(name, args, countdown, WAITED_ON if waited_on else None)


def enqueue(
    session: Session | None, name: str, *args: Any, countdown: float | None = None, waited_on: bool = False
) -> None:
    """Send task ``name`` with ``args`` once ``session`` commits (nothing if it rolls back); without a
    session, at once. A failed send after the commit is logged, and the sweeps catch up from PostgreSQL."""
    item = job(name, *args, countdown=countdown, waited_on=waited_on)
    if session is None:
        item.send()
    else:
        after_commit(session, item.send)


def send_now(name: str, *args: Any, countdown: float | None = None) -> Any:
    """Send at once and return the ``AsyncResult`` (for callers outside any task that wait on a result:
    the CLI's ``backup``, the demo's fetch)."""
    return job(name, *args, countdown=countdown).send()


_recorder: ContextVar[list[Job] | None] = ContextVar("hnpal_jobs_recorder", default=None)


@contextmanager
def recording() -> Iterator[list[Job]]:
    """Within the block, jobs that would be published are appended to the yielded list instead, in the
    order they would have gone out (after their commit, as usual; nothing for a rolled-back session).
    For tests that assert jobs by name, a bench that measures one step without the next, and commands
    that store without starting the pipeline (``hnpal fetch --no-enqueue``)."""
    sent: list[Job] = []
    token = _recorder.set(sent)
    try:
        yield sent
    finally:
        _recorder.reset(token)


@dataclass
class Batch:
    """Jobs collected while something is handled, to be sent once its work has committed."""

    jobs: list[Job] = field(default_factory=list)

    def enqueue(self, name: str, *args: Any, countdown: float | None = None, waited_on: bool = False) -> None:
        self.jobs.append(job(name, *args, countdown=countdown, waited_on=waited_on))

    def names(self) -> list[str]:
        return [item.name for item in self.jobs]

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def send(self) -> None:
        for item in self.jobs:
            item.send()
