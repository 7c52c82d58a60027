"""Kill -9 the content writer (the ``content`` queue's only worker) in the middle of a batch of writes.

Afterwards the RocksDB store must open cleanly (a new writer starts on it, a reader opens it, ``hnpal
content stats`` works: RocksDB's write-ahead log makes an interrupted write all-or-nothing, and the
writer's lock dies with its process), and the content that was not written when the writer died must be
written by the new one: the message in flight comes back from Redis after the visibility timeout
(``hnpal.content.store`` is idempotent, acks_late), the rest was still queued. Every post ends with its
``has_*`` flags true and exactly the blobs that were sent.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid

import pytest
from sqlalchemy import delete, func, select

from hnpal.content import ContentStore
from hnpal.content.payload import encode_payload
from hnpal.db.session import session_scope
from hnpal.posts.models import Post
from tests.conftest import REPO
from tests.reliability.conftest import hnpal_executable, wait_until

POSTS = 120


def document(n: int) -> dict[str, str]:
    """A large, poorly compressible page (so that each write takes a little while)."""
    seed = hashlib.sha256(str(n).encode()).hexdigest()
    words = [hashlib.sha256(f"{seed}{i}".encode()).hexdigest()[:9] for i in range(30_000)]
    text = " ".join(words)
    return {"html": f"<html><body><p>{text}</p></body></html>", "text": text, "markdown": f"# Post {n}\n\n{text}"}


@pytest.mark.slow
def test_content_writer_killed_mid_batch(shared_env, stack_factory, tmp_path) -> None:
    content_path = tmp_path / "content.rocksdb"
    base = 800_000_000 + uuid.uuid4().int % 10_000_000
    post_ids: list[int] = []
    docs = {base + n: document(n) for n in range(POSTS)}
    try:
        with session_scope() as session:
            for n in range(POSTS):
                post = Post(
                    hn_id=base + n,
                    type="story",
                    title=f"Writer kill {n}",
                    url=f"https://example.com/{base + n}",
                    domain="example.com",
                    comment_count=0,
                    crawl_status="fetched",
                )
                session.add(post)
                session.flush()
                post_ids.append(post.id)
        by_post = dict(zip(post_ids, sorted(docs), strict=True))
        env = {**shared_env, "HNPAL_CONTENT_PATH": str(content_path), "HNPAL_CONTENT_BLOCK_CACHE_MB": "8"}
        stack = stack_factory(env)
        payloads = [(pid, encode_payload(**docs[hn], meta={"method": "trafilatura"})) for pid, hn in by_post.items()]
        stack.send("hnpal.content.store", payloads, queue="content")  # the batch, queued before the writer starts
        writer = stack.worker("content", name="content")

        def stored() -> int:
            with session_scope() as session:
                return session.scalar(
                    select(func.count()).where(Post.id.in_(post_ids), Post.has_markdown, Post.has_html, Post.has_text)
                )

        wait_until(lambda: stored() >= 10, 120, lambda: f"the writer wrote nothing:\n{stack.logs()}")
        killed = writer.kill9()
        at_kill = stored()
        assert at_kill < POSTS, "the whole batch was written before the kill"

        # The store opens cleanly: a reader now, and a new writer (its start-up probe opens it read-write).
        reader = ContentStore.open_reader(content_path, block_cache_mb=8)
        reader.close()
        replacement = stack.worker("content", name="content2")
        replacement.wait_ready()
        wait_until(lambda: stored() == POSTS, 120, lambda: f"{stored()}/{POSTS} rewritten:\n{stack.logs()}")

        cli = subprocess.run(
            [hnpal_executable(), "content", "stats"],
            env=stack.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        reader = ContentStore.open_reader(content_path, block_cache_mb=8)
        try:
            wrong = [
                hn
                for hn, doc in docs.items()
                if any(reader.get_text(hn, kind) != doc[kind] for kind in ("html", "text", "markdown"))
            ]
        finally:
            reader.close()
        with session_scope() as session:
            statuses = dict(
                session.execute(
                    select(Post.crawl_status, func.count()).where(Post.id.in_(post_ids)).group_by(Post.crawl_status)
                ).all()
            )
        print(
            f"reliability writer-kill: posts={POSTS} kills=1 processes_killed={killed} written_at_kill={at_kill} "
            f"rewritten={POSTS - at_kill} flags_true={stored()} blobs_wrong={len(wrong)} statuses={statuses}"
        )
        assert wrong == []
        assert statuses == {"success": POSTS}
    finally:
        with session_scope() as session:
            session.execute(delete(Post).where(Post.id.in_(post_ids)))
