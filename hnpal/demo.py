"""``hnpal demo``: the main job, offline, on embedded defaults.

It starts what a deployment runs (the embedded PostgreSQL and Redis unless URLs are configured, the
content writer, a worker for the other queues, and one beat), points HN Pal at the sandbox HN server
with the bundled snapshot, and runs the pipeline: fetch -> crawl -> content store -> summarize (offline
extractive provider, no key needed). It prints what
happened to every post and a stored article, then stops everything it started.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import func, select

from config.settings import get_settings, reset_settings_cache
from hnpal.procs import celery_beat, celery_worker, wait_ready

TERMINAL = ("success", "reused", "failed", "skipped")


def _configure(data_dir: Path, api_url: str) -> dict[str, str]:
    """Settings for the demo's processes (inherited by the children through the environment)."""
    values = {
        "HNPAL_DATA_DIR": str(data_dir),
        "HNPAL_HN_API_BASE_URL": api_url,
        "HNPAL_CRAWL_ALLOW_HOSTS": "127.0.0.1",
        # The snapshot links to hostile pages on purpose; keep their timeouts and retries short.
        "HNPAL_CRAWL_READ_TIMEOUT": "2",
        "HNPAL_CRAWL_TOTAL_TIMEOUT": "5",
        "HNPAL_CRAWL_RETRY_BACKOFF": "1",
        "HNPAL_CRAWL_DISPATCH_INTERVAL": "10",
        "HNPAL_CONTENT_SWEEP_INTERVAL": "30",
    }
    os.environ.update(values)
    for key in ("HNPAL_CONTENT_PATH",):
        os.environ.pop(key, None)
    reset_settings_cache()
    return values


def run_demo(*, timeout: float = 300.0, keep_data: bool = False) -> int:
    console = Console(width=None if Console().is_terminal else 140)
    settings = get_settings()
    embedded = settings.embedded_database or settings.embedded_redis
    data_dir = (settings.data_dir / "demo").absolute()
    if embedded and not keep_data and data_dir.exists():
        from hnpal.runtime import stop_embedded

        stop_embedded(settings.model_copy(update={"data_dir": data_dir}))
        shutil.rmtree(data_dir)

    from hnpal.sandbox.hn_replay import HNReplayServer

    hn = HNReplayServer().start()
    _configure(data_dir, hn.api_url)
    settings = get_settings()
    console.rule("[bold]HN Pal demo")
    console.print(f"sandbox HN API: {hn.api_url} (bundled snapshot, {len(hn.items)} items)")

    from hnpal import runtime

    if settings.embedded_database:
        console.print(f"embedded PostgreSQL: {runtime.ensure_embedded_postgres(settings).path}")
    if settings.embedded_redis:
        console.print(f"embedded Redis: {runtime.ensure_embedded_redis(settings).url}")
    from hnpal.db import migrate

    migrate.upgrade()
    console.print(f"database at revision {migrate.current_revision()}; content store {settings.content_dir}")

    log_dir = data_dir / "logs"
    children = [
        celery_worker("content", "content", concurrency=1, log_dir=log_dir),
        celery_worker("pipeline", "default,crawl,llm,telegram", concurrency=2, log_dir=log_dir),
        celery_beat(log_dir, data_dir / "celerybeat-schedule"),
    ]
    env = dict(os.environ)
    started = time.monotonic()
    ok = False
    try:
        for child in children:
            child.start(env)
        wait_ready(children)
        console.print(f"started {', '.join(c.name for c in children)} (logs in {log_dir})")
        ok = _pipeline(console, timeout)
        _report(console)
    finally:
        console.print("stopping workers and beat (warm shutdown)...")
        for child in children:
            child.stop()
        hn.stop()
        if embedded:
            from hnpal.runtime import stop_embedded

            stopped = stop_embedded(settings)
            console.print(f"stopped {', '.join(stopped) or 'nothing'}")
    console.rule(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


def _counts() -> dict[str, int]:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    with session_scope() as session:
        rows = session.execute(select(Post.crawl_status, func.count()).group_by(Post.crawl_status)).all()
    return dict(rows)


def _pipeline(console: Console, timeout: float) -> bool:
    from tasks.ingest import fetch_lists

    console.print("[bold]1. fetch[/] HN lists through the queue (hnpal.ingest.fetch)")
    report = fetch_lists.delay(["top", "new", "job"], 100).get(timeout=120)
    skipped = ", ".join(f"{k}={v}" for k, v in report["skipped"].items())
    console.print(
        f"   {report['inserted']} new posts, {report['updated']} refreshed, skipped {skipped}; "
        f"{report['crawl_enqueued']} crawls enqueued, {report['text_posts']} text posts sent to the writer"
    )
    console.print("[bold]2. crawl[/] each linked page (crawl queue) -> [bold]3. store[/] (content writer)")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        counts = _counts()
        if counts != last:
            console.print("   " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            last = counts
        if counts and all(k in TERMINAL for k in counts):
            console.print("[bold]4. summarize[/] (llm queue, offline extractive provider) and fetch comment threads")
            return _comments_done(deadline) and _summaries_done(deadline)
        time.sleep(0.5)
    console.print("[red]timed out waiting for the pipeline")
    return False


def _comments_done(deadline: float) -> bool:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    while time.monotonic() < deadline:
        with session_scope() as session:
            waiting = session.scalar(
                select(func.count()).where(
                    Post.is_crawl_success, Post.comment_count > 0, Post.comments_fetched_at.is_(None)
                )
            )
        if not waiting:
            return True
        time.sleep(0.5)
    return False


def _summaries_done(deadline: float) -> bool:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    while time.monotonic() < deadline:
        with session_scope() as session:
            waiting = session.scalar(
                select(func.count()).where(Post.is_crawl_success, Post.summary_status == "pending")
            )
        if not waiting:
            return True
        time.sleep(0.5)
    return False


def _report(console: Console) -> None:
    from hnpal.content.host import reader
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    with session_scope() as session:
        posts = session.scalars(select(Post).order_by(Post.score.desc())).all()
    table = Table(title="posts after the pipeline", show_lines=False)
    for column in ("hn id", "type", "title", "outcome", "how / why"):
        table.add_column(column, overflow="fold")
    for post in posts:
        colour = {"success": "green", "reused": "cyan", "failed": "red"}.get(post.crawl_status, "yellow")
        why = post.extraction_method or ""
        if post.crawl_status == "failed":
            why = f"{post.crawl_error} (attempts: {post.crawl_retry_count})"
        if post.repost_of_post_id:
            why += f" (repost of post {post.repost_of_post_id})"
        table.add_row(
            str(post.hn_id),
            post.type,
            post.title[:60],
            f"[{colour}]{post.crawl_status}[/]",
            why[:90],
        )
    console.print(table)
    summarized = [p for p in posts if p.summary][:4]
    for post in summarized:
        console.print(
            Panel(
                post.summary,
                title=f"summary of HN {post.hn_id} ({post.summary_prompt_type}, {post.summary_model}, "
                f"from {post.summary_basis})",
                subtitle=post.title[:70],
            )
        )
    store = reader()
    article = next((p for p in posts if p.crawl_status == "success" and p.extraction_method == "trafilatura"), None)
    if article is not None:
        markdown = store.get_text(article.hn_id, "markdown") or ""
        excerpt = "\n\n".join(markdown.split("\n\n")[:4])
        console.print(Panel(Markdown(excerpt), title=f"stored markdown of HN {article.hn_id}: {article.title}"))
    stats = store.stats()
    keys = {k: v["estimated_keys"] for k, v in stats["kinds"].items()}
    console.print(f"content store: {keys}, {stats['disk_bytes'] / 1024:.0f} KiB on disk")
