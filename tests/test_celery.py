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
