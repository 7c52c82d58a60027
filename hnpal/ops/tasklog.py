"""One structured log line per task outcome, from Celery's signals.

Every task a worker runs ends in exactly one line on the ``hnpal.task`` logger::

    task=hnpal.crawl.post id=5b0c... state=SUCCESS duration_ms=812 args=[42] kwargs={} result={"post_id": 42}

``state`` is Celery's: SUCCESS, FAILURE (``error`` names the exception), RETRY (``error`` says when
and why) or another state a task sets. Arguments, results and error text are shortened and always pass
through :func:`config.logging.mask_secrets` (bot tokens, API keys, passwords in URLs and the configured
secrets), whatever formatter the process uses. :func:`connect` is called once, by ``hnpal.celery``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.signals import task_failure, task_postrun, task_prerun, task_retry

from config.logging import mask_secrets

log = logging.getLogger("hnpal.task")
MAX_VALUE = 300  # characters of one rendered value (args, kwargs, result, error)

_started: dict[str, float] = {}  # task id -> monotonic start (threads of one worker share it)
_errors: dict[str, str] = {}  # task id -> what went wrong (failure or retry), read by postrun


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    text = mask_secrets(text)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _quoted(text: str) -> str:
    text = mask_secrets(text)
    if len(text) > MAX_VALUE:
        text = text[: MAX_VALUE - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


def _on_failure(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    if task_id and exception is not None:
        _errors[task_id] = f"{type(exception).__name__}: {exception}"


def _on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id:
        what = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
        _errors[task_id] = f"retry: {what}"


def outcome_line(*, name: str, task_id: str, state: str, duration: float | None, args: Any, kwargs: Any,
                 result: Any = None, error: str | None = None) -> str:  # fmt: skip
    """The line for one outcome (also used by the tests)."""
    parts = [f"task={name}", f"id={task_id}", f"state={state}"]
    if duration is not None:
        parts.append(f"duration_ms={duration * 1000:.0f}")
    parts += [f"args={_short(list(args or ()))}", f"kwargs={_short(dict(kwargs or {}))}"]
    if error is not None:
        parts.append(f"error={_quoted(error)}")
    elif state == "SUCCESS":
        parts.append(f"result={_short(result)}")
    return " ".join(parts)


def _on_postrun(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None,
                retval: Any = None, state: str | None = None, **_: Any) -> None:  # fmt: skip
    if not task_id:
        return
    started = _started.pop(task_id, None)
    error = _errors.pop(task_id, None)
    state = state or "UNKNOWN"
    level = logging.WARNING if state == "FAILURE" else logging.INFO
    if not log.isEnabledFor(level):  # the line (and its masking) is not built for nobody
        return
    if error is None and isinstance(retval, BaseException):
        error = f"{type(retval).__name__}: {retval}"
    line = outcome_line(
        name=getattr(task, "name", None) or "?",
        task_id=task_id,
        state=state,
        duration=None if started is None else time.monotonic() - started,
        args=args,
        kwargs=kwargs,
        result=retval,
        error=error,
    )
    log.log(level, "%s", line)


_connected = False


def connect() -> None:
    """Connect the handlers (idempotent; strong references, they live as long as the process)."""
    global _connected
    if _connected:
        return
    task_prerun.connect(_on_prerun, weak=False)
    task_failure.connect(_on_failure, weak=False)
    task_retry.connect(_on_retry, weak=False)
    task_postrun.connect(_on_postrun, weak=False)
    _connected = True
