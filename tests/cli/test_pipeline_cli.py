"""Engineer commands: import-jsonl, fetch, crawl (real processes, real servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from hnpal.content import ContentStore
from hnpal.db.session import session_scope
from hnpal.posts.models import Post
from hnpal.sandbox.hn_replay import HNReplayServer


def hnpal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hnpal.cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_import_jsonl_with_content_is_rerunnable(tmp_path: Path, settings_env) -> None:
    store = tmp_path / "content.rocksdb"
    settings_env(content_path=str(store))
    lines = [
        # HN Pal's own format
        {"hn_id": 9100001, "type": "story", "title": "Imported one", "url": "https://example.com/one", "score": 5},
        # HN's item format
        {"id": 9100002, "type": "story", "title": "Ask HN: imported?", "by": "pg", "time": 1718900000, "score": 3},
        "not json at all",
        {"hn_id": 9100003, "type": "story", "title": "x" * 600},
        {"hn_id": -1, "type": "story", "title": "negative"},
        {"id": 9100004, "deleted": True, "type": "story", "time": 1},
    ]
    posts = tmp_path / "posts.jsonl"
    posts.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")
    content = tmp_path / "content"
    content.mkdir()
    (content / "9100001.html").write_text("<html><body><p>one</p></body></html>")
    (content / "9100001.txt").write_text("one, the text")
    (content / "9100001.md").write_text("# one")

    env = {"HNPAL_CONTENT_PATH": str(store)}
    first = hnpal("import-jsonl", str(posts), "--content-dir", str(content), env=env)
    assert first.returncode == 0, first.stderr
    assert "imported 2 new and 0 existing posts, 3 content documents; skipped 4 line(s)" in first.stdout
    for line_no in (3, 4, 5, 6):
        assert f"line {line_no}:" in first.stdout
    assert "invalid JSON" in first.stdout and "deleted or dead" in first.stdout

    again = hnpal("import-jsonl", str(posts), "--content-dir", str(content), env=env)
    assert "imported 0 new and 2 existing posts" in again.stdout
    with session_scope() as session:
        rows = session.scalars(select(Post).where(Post.hn_id.in_([9100001, 9100002]))).all()
        assert len(rows) == 2
        one = next(p for p in rows if p.hn_id == 9100001)
        assert one.has_html and one.has_text and one.has_markdown and one.crawl_status == "success"
        assert next(p for p in rows if p.hn_id == 9100002).type == "ask_hn"
        session.execute(Post.__table__.delete().where(Post.hn_id.in_([9100001, 9100002])))
    with ContentStore.open_reader(store) as reader:
        assert reader.get_text(9100001, "text") == "one, the text"


def test_import_jsonl_reports_a_missing_file(tmp_path: Path) -> None:
    result = hnpal("import-jsonl", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and "no such file" in result.stderr


@pytest.fixture
def replay():
    server = HNReplayServer().start()
    yield server
    server.stop()


def test_fetch_and_crawl_commands(replay) -> None:
    env = {"HNPAL_HN_API_BASE_URL": replay.api_url}
    fetched = hnpal("fetch", "--list", "new", "--limit", "5", "--no-enqueue", env=env)
    assert fetched.returncode == 0, fetched.stderr
    report = json.loads(fetched.stdout.strip().splitlines()[-1])
    assert report["requested"] == 5 and report["inserted"] + sum(report["skipped"].values()) == 5

    bad = hnpal("fetch", "--list", "hottest", env=env)
    assert bad.returncode == 2 and "unknown list" in bad.stderr

    story = replay.add_story(title="Crawl me", url=replay.url("/articles/nowhere.html"))
    crawl = hnpal("crawl", str(story), env=env)
    assert crawl.returncode == 0, crawl.stderr
    assert "enqueued on the crawl queue" in crawl.stdout
    with session_scope() as session:
        post = session.scalar(select(Post).where(Post.hn_id == story))
        assert post is not None and post.crawl_status == "queued"
        session.execute(Post.__table__.delete())
