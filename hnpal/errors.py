"""The base of the errors HN Pal raises on purpose, the ones several domains share, and the ones services
raise to tell their task how the work ended (the task turns them into Celery's outcomes; services never
import Celery task objects).

Every domain's own errors (``LLMError``, ``ExtractionError``, ``ContentStoreError``...) subclass
``HNPalError`` too, keeping any built-in base their callers catch (``ValueError``, ``PermissionError``).
"""

from __future__ import annotations


class HNPalError(Exception):
    """An error HN Pal raises on purpose (not a bug): ``except HNPalError`` catches every one."""


class Busy(HNPalError):
    """Another worker holds this piece of work right now (an answer in a conversation, a summary being
    generated); try again shortly: it will be done."""


class NotYours(HNPalError, PermissionError):
    """A user named a row (a delivery, a memory item) that does not exist or belongs to another user."""


class WorkFailed(HNPalError):
    """The work failed for good, and the failure is already committed (a crawl that failed for good, a
    model call whose last retry failed, a digest Telegram refused), so that the task ends in Celery's
    FAILURE state and Flower, ``celery events`` and the task log count it. The sweeps and ``hnpal
    quarantine`` read the failure from PostgreSQL; nothing retries on this exception, and a
    late-acknowledged task is acknowledged as usual (``task_acks_on_failure_or_timeout``), so it is not
    redelivered. Tasks list it in ``throws``: the worker logs it as an expected outcome, without a
    traceback."""


class Retry(HNPalError):
    """Run the same task again in ``countdown`` seconds (capped at ``HNPAL_MAX_COUNTDOWN``); its task
    calls ``self.retry`` (which counts against the task's ``max_retries``)."""

    def __init__(self, countdown: float, reason: str = "") -> None:
        super().__init__(reason or f"again in {countdown:g}s")
        self.countdown = countdown
