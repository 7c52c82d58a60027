"""Payloads across threads, and a payload that cannot be stored: retried, then quarantined and listed."""

from __future__ import annotations

import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from hnpal.cli.main import app
from hnpal.content.payload import decode_payload, encode_payload
from hnpal.db.session import session_scope
from hnpal.posts.models import Post


def test_payloads_round_trip_from_many_threads_at_once() -> None:
    """python-zstandard objects are not thread-safe: each thread must use its own."""
    texts = [os.urandom(1024).hex() * (1 + n % 7) for n in range(64)]

    def round_trip(text: str) -> bool:
        return all(decode_payload(encode_payload(text=text, meta={"n": i}))["text"] == text for i in range(25))

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(round_trip, texts * 4))


def test_a_payload_that_cannot_be_stored_is_retried_then_quarantined(tmp_path: Path, spawn_worker) -> None:
    from hnpal import jobs
    from hnpal.content.service import STORE_RETRIES

    with session_scope() as session:
        post = Post(hn_id=9_700_001, type="story", title="corrupt", url="https://example.com/c", crawl_status="fetched")
        session.add(post)
        session.flush()
        post_id = post.id
    text_post_id = None
    try:
        with session_scope() as session:
            text_post = Post(hn_id=9_700_002, type="ask_hn", title="Ask HN: corrupt", crawl_status="fetched")
            session.add(text_post)
            session.flush()
            text_post_id = text_post.id
        worker = spawn_worker("content", env={"HNPAL_CONTENT_PATH": str(tmp_path / "content.rocksdb")})
        worker.wait_ready()
        # a zstd frame, corrupted (fixed bytes: random ones may claim a size that fails with MemoryError)
        garbage = base64.b64encode(b"\x28\xb5\x2f\xfd" + bytes(200)).decode()
        jobs.enqueue(None, jobs.CONTENT_STORE, post_id, garbage)
        jobs.enqueue(None, jobs.CONTENT_STORE, text_post_id, garbage)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with session_scope() as session:
                statuses = set(session.scalars(select(Post.crawl_status).where(Post.id.in_([post_id, text_post_id]))))
            if statuses == {"failed"}:
                break
            time.sleep(0.2)
        assert statuses == {"failed"}, worker.log()
        assert worker.log().count("Retry in") >= 2 * STORE_RETRIES
        assert worker.log().count("task=hnpal.content.store") and "state=FAILURE" in worker.log()  # not green
        with session_scope() as session:
            error = session.scalar(select(Post.crawl_error).where(Post.id == post_id))
        assert error.startswith("content could not be stored: ZstdError")
        listed = CliRunner().invoke(app, ["quarantine", "list", "--kind", "crawl"])
        assert f"crawl:{post_id}" in listed.output and f"crawl:{text_post_id}" in listed.output, listed.output
        # a retry of the text post hands it to the content sweep, which fetches its HN text again
        retried = CliRunner().invoke(app, ["quarantine", "retry", f"crawl:{text_post_id}"])
        assert retried.exit_code == 0, retried.output
        with session_scope() as session:
            assert session.scalar(select(Post.crawl_status).where(Post.id == text_post_id)) == "fetched"
    finally:
        with session_scope() as session:
            session.execute(Post.__table__.delete().where(Post.id.in_([post_id, text_post_id or 0])))
