"""The Celery skeleton on the real Redis broker, through a real worker."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

import celeryconfig
from hnpal.celery import app


def test_task_names_follow_the_convention() -> None:
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    assert "hnpal.health.ping" in ours
    for name in ours:
        area_verb = name.split(".")
        assert area_verb[0] == "hnpal" and len(area_verb) == 3, name


def test_routes_and_reliability_defaults() -> None:
    conf = app.conf
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_acks_late is False  # switched on per idempotent task only
    assert conf.task_ignore_result is True
    assert conf.broker_transport_options["visibility_timeout"] > celeryconfig.MAX_COUNTDOWN
    assert app.amqp.router.route({}, "hnpal.content.backup")["queue"].name == "content"
    assert app.amqp.router.route({}, "hnpal.crawl.page")["queue"].name == "crawl"
    assert app.amqp.router.route({}, "hnpal.telegram.send")["queue"].name == "telegram"
    assert app.amqp.router.route({}, "hnpal.health.ping")["queue"].name == "default"
    assert set(celeryconfig.QUEUES) == {"default", "crawl", "content", "llm", "telegram"}


@pytest.mark.parametrize("how", ["countdown", "eta", "retry signature"])
def test_no_task_waits_longer_than_the_visibility_timeout_allows(how: str, redis_client) -> None:
    """A message waiting out its countdown stays unacknowledged in Redis: every countdown and ETA,
    however a task asks for it, is capped at HNPAL_MAX_COUNTDOWN, below the visibility timeout."""
    import json
    import uuid
    from datetime import UTC, datetime, timedelta

    from tasks.digests import send

    queue = f"cap-{uuid.uuid4().hex[:8]}"  # no worker consumes it: the published message stays there
    asked = celeryconfig.MAX_COUNTDOWN * 10
    if how == "countdown":
        send.apply_async((1,), countdown=asked, queue=queue)
    elif how == "eta":
        send.apply_async((1,), eta=datetime.now(UTC) + timedelta(seconds=asked), queue=queue)
    else:  # what Task.retry publishes
        send.signature((1,), countdown=asked, queue=queue).apply_async()
    published = datetime.now(UTC)
    key = app.conf.broker_transport_options["global_keyprefix"] + queue
    try:
        (raw,) = redis_client.lrange(key, 0, -1)
    finally:
        redis_client.delete(key)
    eta = datetime.fromisoformat(json.loads(raw)["headers"]["eta"])
    assert timedelta(0) < eta - published <= timedelta(seconds=celeryconfig.MAX_COUNTDOWN)
    assert celeryconfig.MAX_COUNTDOWN < celeryconfig.VISIBILITY_TIMEOUT
    # a short countdown is left alone
    send.apply_async((1,), countdown=30, queue=queue)
    try:
        (raw,) = redis_client.lrange(key, 0, -1)
    finally:
        redis_client.delete(key)
    eta = datetime.fromisoformat(json.loads(raw)["headers"]["eta"])
    assert timedelta(seconds=25) < eta - datetime.now(UTC) <= timedelta(seconds=30)


def test_broker_keys_are_namespaced() -> None:
    # Test runs share one Redis: each run's broker keys carry its own prefix.
    assert app.conf.broker_transport_options["global_keyprefix"].startswith("hnpal-test-")


@pytest.mark.slow
def test_ping_runs_end_to_end_on_a_real_worker() -> None:
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, shutdown_timeout=30):
        result = app.send_task("hnpal.health.ping")
        answer = result.get(timeout=60)
    assert answer["pong"] is True
    assert answer["hostname"]


@pytest.mark.slow
def test_celery_cli_call_reaches_a_worker(spawn_worker) -> None:
    """What an engineer types: `celery -A hnpal call hnpal.health.ping`, answered by a real worker."""
    import os
    import subprocess
    import sys

    worker = spawn_worker("default")
    worker.wait_ready()
    called = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "hnpal", "call", "hnpal.health.ping"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert called.returncode == 0, called.stderr
    task_id = called.stdout.strip().splitlines()[-1]
    assert app.AsyncResult(task_id).get(timeout=60)["pong"] is True
