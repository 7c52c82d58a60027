"""The exceptions services raise to tell their task how the work ended (the task turns them into
Celery's outcomes; services never import Celery task objects)."""

from __future__ import annotations


class WorkFailed(Exception):
    """The work failed for good, and the failure is already committed (a crawl that failed for good, a
    model call whose last retry failed, a digest Telegram refused), so that the task ends in Celery's
    FAILURE state and Flower, ``celery events`` and the task log count it. The sweeps and ``hnpal
    quarantine`` read the failure from PostgreSQL; nothing retries on this exception, and a
    late-acknowledged task is acknowledged as usual (``task_acks_on_failure_or_timeout``), so it is not
    redelivered. Tasks list it in ``throws``: the worker logs it as an expected outcome, without a
    traceback."""


class Retry(Exception):
    """Run the same task again in ``countdown`` seconds (capped at ``HNPAL_MAX_COUNTDOWN``); its task
    calls ``self.retry`` (which counts against the task's ``max_retries``)."""

    def __init__(self, countdown: float, reason: str = "") -> None:
        super().__init__(reason or f"again in {countdown:g}s")
        self.countdown = countdown
