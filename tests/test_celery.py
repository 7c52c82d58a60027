"""The Celery skeleton on the real Redis broker, through a real worker."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

import celeryconfig
from hnpal import queues
from hnpal.celery import app


def test_task_names_follow_the_convention() -> None:
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    assert "hnpal.health.ping" in ours
    for name in ours:
        area_verb = name.split(".")
        assert area_verb[0] == "hnpal" and len(area_verb) == 3, name


def test_reliability_defaults() -> None:
    conf = app.conf
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_acks_late is False  # switched on per idempotent task only
    assert conf.task_ignore_result is True
    assert conf.broker_transport_options["visibility_timeout"] > celeryconfig.MAX_COUNTDOWN
    assert set(queues.QUEUES) == {"default", "crawl", "content", "llm", "telegram"}


# Where each task runs, as the operators' docs and `hnpal up` start the workers: every registered task
# declares its queue (and bulk work its priority) on its decorator.
QUEUE_OF = {
    "hnpal.content.": queues.CONTENT,
    "hnpal.crawl.post": queues.CRAWL,
    "hnpal.summaries.summarize": queues.LLM,
    "hnpal.memory.extract": queues.LLM,
    "hnpal.discussions.sweep": queues.DEFAULT,
    "hnpal.discussions.": queues.LLM,
    "hnpal.digests.send": queues.TELEGRAM,  # and send_batch
    "hnpal.telegram.sweep": queues.DEFAULT,
    "hnpal.telegram.": queues.TELEGRAM,
    "hnpal.review.sweep": queues.DEFAULT,
    "hnpal.review.": queues.TELEGRAM,
}
BULK = {"hnpal.digests.send", "hnpal.digests.send_batch", "hnpal.summaries.summarize", "hnpal.memory.extract"}


def test_every_task_declares_its_queue_and_bulk_work_its_priority() -> None:
    app.loader.import_default_modules()
    ours = sorted(name for name in app.tasks if name.startswith("hnpal."))
    assert len(ours) >= 30
    for name in ours:
        task = app.tasks[name]
        expected = next((queue for prefix, queue in QUEUE_OF.items() if name.startswith(prefix)), queues.DEFAULT)
        assert task.queue == expected, name
        assert task.priority == (queues.BULK_PRIORITY if name in BULK else None), name


def test_a_process_that_never_imported_the_tasks_sends_each_job_to_its_declared_queue() -> None:
    """The bot, beat and `celery call` name tasks they never imported: the app finds each task's own
    declaration (queue, priority), a user's wait goes ahead of bulk work, and an unknown name is refused."""
    import json
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        """
        import json, sys
        from hnpal import jobs
        from hnpal.celery import app

        sent = []
        def record(producer, name, message, **options):
            sent.append([name, options["queue"].name, options.get("priority")])
        app.amqp.send_task_message = record
        before = sorted(m for m in sys.modules if m.startswith("tasks."))
        for name in (jobs.CRAWL_POST, jobs.CONTENT_STORE, jobs.DIGESTS_SEND, jobs.SUMMARIES_SUMMARIZE,
                     jobs.INGEST_COMMENTS, jobs.TELEGRAM_HANDLE):
            jobs.enqueue(None, name, 1)
        jobs.enqueue(None, jobs.DIGESTS_SEND, 2, waited_on=True)
        try:
            jobs.enqueue(None, "hnpal.nothing.here", 1)
        except Exception as exc:
            sent.append(type(exc).__name__)
        print(json.dumps({"before": before, "sent": sent}))
        """
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == []
    assert result["sent"] == [
        ["hnpal.crawl.post", "crawl", None],
        ["hnpal.content.store", "content", None],
        ["hnpal.digests.send", "telegram", queues.BULK_PRIORITY],
        ["hnpal.summaries.summarize", "llm", queues.BULK_PRIORITY],
        ["hnpal.ingest.comments", "default", None],
        ["hnpal.telegram.handle", "telegram", None],
        ["hnpal.digests.send", "telegram", queues.WAITED_ON],
        "NotRegistered",
    ]


@pytest.mark.parametrize("how", ["countdown", "eta", "retry signature", "by name"])
def test_no_task_waits_longer_than_the_visibility_timeout_allows(how: str) -> None:
    """A message waiting out its countdown stays unacknowledged in Redis: every countdown and ETA,
    however a task asks for it, is capped at HNPAL_MAX_COUNTDOWN, below the visibility timeout."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from tasks.digests import send

    queue = f"cap-{uuid.uuid4().hex[:8]}"  # no worker consumes it: the published message stays there
    asked = celeryconfig.MAX_COUNTDOWN * 10
    if how == "countdown":
        send.apply_async((1,), countdown=asked, queue=queue)
    elif how == "eta":
        send.apply_async((1,), eta=datetime.now(UTC) + timedelta(seconds=asked), queue=queue)
    elif how == "by name":  # what hnpal.jobs, beat and `celery call` publish
        app.send_task("hnpal.digests.send", args=[1], countdown=asked, queue=queue)
    else:  # what Task.retry publishes
        send.signature((1,), countdown=asked, queue=queue).apply_async()
    published = datetime.now(UTC)
    (message,) = _take(queue, 1)
    eta = datetime.fromisoformat(message.headers["eta"])
    assert timedelta(0) < eta - published <= timedelta(seconds=celeryconfig.MAX_COUNTDOWN)
    assert celeryconfig.MAX_COUNTDOWN < celeryconfig.VISIBILITY_TIMEOUT
    # a short countdown is left alone
    send.apply_async((1,), countdown=30, queue=queue)
    (message,) = _take(queue, 1)
    eta = datetime.fromisoformat(message.headers["eta"])
    assert timedelta(seconds=25) < eta - datetime.now(UTC) <= timedelta(seconds=30)


def _take(queue: str, count: int) -> list:
    """The next ``count`` messages of ``queue`` as a worker would take them (every priority level), and
    the queue deleted after."""
    with app.connection_for_read() as connection:
        with connection.SimpleQueue(queue, no_ack=True) as simple:
            try:
                return [simple.get(timeout=5) for _ in range(count)]
            finally:
                simple.queue.delete()


def test_what_a_user_waits_on_goes_ahead_of_bulk_work() -> None:
    """Digest sends queued by the thousand on `telegram` (summaries on `llm`) do not hold up a button
    press or a discussion answer: a worker takes the interactive task first, and bulk tasks keep their
    order among themselves."""
    import uuid

    from tasks.digests import send
    from tasks.summaries import summarize

    queue = f"prio-{uuid.uuid4().hex[:8]}"  # no worker consumes it
    for digest_id in (1, 2, 3):
        send.apply_async((digest_id,), queue=queue)  # as the fan-out does
    summarize.apply_async((7, "basic", None), queue=queue)
    app.send_task("hnpal.telegram.handle", args=[10], queue=queue)  # as the bot does
    app.send_task("hnpal.discussions.message", args=[11], queue=queue)
    taken = [(m.headers["task"], m.headers["argsrepr"]) for m in _take(queue, 6)]
    assert taken == [
        ("hnpal.telegram.handle", "[10]"),
        ("hnpal.discussions.message", "[11]"),
        ("hnpal.digests.send", "(1,)"),
        ("hnpal.digests.send", "(2,)"),
        ("hnpal.digests.send", "(3,)"),
        ("hnpal.summaries.summarize", "(7, 'basic', None)"),
    ]


def test_bulk_retries_keep_their_priority() -> None:
    from celery.app.task import Context

    from tasks.digests import send

    request = Context(delivery_info={"priority": queues.BULK_PRIORITY}, args=(1,), kwargs={}, id="x")
    assert send.signature_from_request(request).options["priority"] == queues.BULK_PRIORITY


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
