"""Kill -9 the content writer (the ``content`` queue's only worker) in the middle of a batch of writes.

The pipeline runs on a private PostgreSQL and Redis (its beat must not touch other tests' rows): pages
are crawled while no writer runs, so their content waits in the ``content`` queue as a batch; then the
writer starts and is killed (its whole process tree, SIGKILL) after a few writes.

Afterwards the RocksDB store must open cleanly (a reader opens it, a new writer starts on it, ``hnpal
content stats`` works: RocksDB's write-ahead log makes an interrupted write all-or-nothing, and the
writer's lock dies with its process), and the content that was not written must be written: the
queued messages by the new writer; the message the dead writer held (``hnpal.content.store`` is
idempotent, acks_late) comes back from Redis after the visibility timeout; and a message the dead
writer had taken off the queue but not yet recorded as unacknowledged (Redis's BRPOP, then the
write to the unacked set: a kill between the two loses the message) is made again by the content sweep,
which re-crawls posts left ``fetched``. Every post ends with its ``has_*`` flags true and its blobs
present (the HTML exactly as served).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from hnpal.content import ContentStore
from tests.conftest import REPO
from tests.reliability.conftest import Pipeline, hnpal_executable, wait_until

POSTS = 60


@pytest.mark.slow
def test_content_writer_killed_mid_batch(pipeline: Pipeline) -> None:
    from sqlalchemy import text

    post_ids = pipeline.add_posts(POSTS, delay=0, paragraphs=40)
    # Redelivery (and the content sweep's staleness limit) later than the crawling takes here.
    pipeline.stack.env.update({"HNPAL_BROKER_VISIBILITY_TIMEOUT": "20", "HNPAL_MAX_COUNTDOWN": "10"})
    stack = pipeline.stack
    content_path = stack.env["HNPAL_CONTENT_PATH"]
    ContentStore.open_writer(content_path, block_cache_mb=8).close()  # an empty store, as `hnpal content init`
    pipeline.start_crawling(writer=False)
    wait_until(
        lambda: pipeline.statuses(post_ids).get("fetched") == POSTS,
        120,
        lambda: f"crawls did not finish: {pipeline.statuses(post_ids)}\n{stack.logs()}",
    )

    def stored() -> int:
        with pipeline.engine.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM posts WHERE id = ANY(:ids) AND has_html AND has_text AND has_markdown"),
                {"ids": post_ids},
            ).scalar_one()

    writer = stack.worker("content", name="content")
    wait_until(lambda: stored() >= 10, 120, lambda: f"the writer wrote nothing:\n{stack.logs()}")
    killed = writer.kill9()
    at_kill = stored()
    assert at_kill < POSTS, "the whole batch was written before the kill"

    # The store opens cleanly: a reader now, then a new writer (its start-up probe opens it read-write).
    ContentStore.open_reader(content_path, block_cache_mb=8).close()
    replacement = stack.worker("content", name="content2")
    replacement.wait_ready()
    wait_until(lambda: stored() == POSTS, 120, lambda: f"{stored()}/{POSTS} written:\n{stack.logs()}")

    cli = subprocess.run(
        [hnpal_executable(), "content", "stats"], env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    reader = ContentStore.open_reader(content_path, block_cache_mb=8)
    try:
        wrong = [
            hn
            for hn, html in pipeline.pages.items()
            if reader.get_text(hn, "html") != html
            or not reader.get_text(hn, "text")
            or not reader.get_text(hn, "markdown")
        ]
    finally:
        reader.close()
    posts = pipeline.posts(post_ids)
    logs = "\n".join(p.log() for p in stack.procs)
    recrawled = sum(int(n) for n in re.findall(r"'recrawled': (\d+)", logs))
    print(
        f"reliability writer-kill: posts={POSTS} kills=1 processes_killed={killed} written_at_kill={at_kill} "
        f"written_after={POSTS - at_kill} recrawled_by_sweep={recrawled} flags_true={stored()} "
        f"blobs_wrong={len(wrong)} store_opens=ok"
    )
    assert wrong == []
    assert all(p["crawl_status"] == "success" and not p["crawl_retry_count"] for p in posts), posts
