"""Liveness: ``celery -A hnpal call hnpal.health.ping``."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from hnpal import queues
from hnpal.celery import app


@app.task(name="hnpal.health.ping", queue=queues.DEFAULT, ignore_result=False)
def ping() -> dict[str, object]:
    """Answer with where and when the worker ran; the caller reads the result."""
    return {
        "pong": True,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "at": datetime.now(UTC).isoformat(),
    }
