"""Steps 1-4: fetch through the queue, then wait for crawls, the content store, comment threads and
summaries; and the table of posts afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from hnpal.demo.common import DemoError

TERMINAL = ("success", "reused", "failed", "skipped")


def _counts() -> dict[str, int]:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    with session_scope() as session:
        rows = session.execute(select(Post.crawl_status, func.count()).group_by(Post.crawl_status)).all()
    return dict(rows)


def run_pipeline(console: Console, timeout: float, check: Callable[[], None] = lambda: None) -> bool:
    """Run the pipeline and wait for it; ``check`` is called while waiting (it raises to stop early)."""
    from hnpal import jobs

    console.print("[bold]1. fetch[/] HN lists through the queue (hnpal.ingest.fetch)")
    report = jobs.send_now(jobs.INGEST_FETCH, ["top", "new", "job"], 100).get(timeout=120)
    skipped = ", ".join(f"{k}={v}" for k, v in report["skipped"].items())
    console.print(
        f"   {report['inserted']} new posts, {report['updated']} refreshed, skipped {skipped}; "
        f"{report['crawl_enqueued']} crawls enqueued, {report['text_posts']} text posts sent to the writer"
    )
    console.print("[bold]2. crawl[/] each linked page (crawl queue) -> [bold]3. store[/] (content writer)")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        check()
        counts = _counts()
        if counts != last:
            console.print("   " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            last = counts
        if counts and all(k in TERMINAL for k in counts):
            console.print("[bold]4. summarize[/] (llm queue, offline extractive provider) and fetch comment threads")
            if _comments_done(deadline, check) and _summaries_done(deadline, check):
                return True
            break
        time.sleep(0.5)
    raise DemoError(f"the pipeline did not finish within {timeout:.0f}s")


def _comments_done(deadline: float, check: Callable[[], None]) -> bool:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    while time.monotonic() < deadline:
        check()
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


def _summaries_done(deadline: float, check: Callable[[], None]) -> bool:
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    while time.monotonic() < deadline:
        check()
        with session_scope() as session:
            waiting = session.scalar(
                select(func.count()).where(Post.is_crawl_success, Post.summary_status == "pending")
            )
        if not waiting:
            return True
        time.sleep(0.5)
    return False


def report_posts(console: Console) -> None:
    from hnpal.content.host import reader
    from hnpal.db.session import session_scope
    from hnpal.posts.models import Post

    with session_scope() as session:
        posts = session.scalars(select(Post).order_by(Post.score.desc())).all()
    table = Table(title="posts after the pipeline", show_lines=False)
    for column in ("hn id", "score", "title", "outcome", "how / why", "summary"):
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
            str(post.score),
            Text(post.title[:60]),
            f"[{colour}]{post.crawl_status}[/]",
            Text(why[:70]),
            Text(f"{post.summary_status}" + (f" ({post.summary_basis})" if post.summary_basis else "")),
        )
    console.print(table)
    store = reader()
    article = next((p for p in posts if p.crawl_status == "success" and p.extraction_method == "trafilatura"), None)
    if article is not None:
        markdown = store.get_text(article.hn_id, "markdown") or ""
        excerpt = "\n\n".join(markdown.split("\n\n")[:2])
        console.print(Panel(Markdown(excerpt), title=f"stored markdown of HN {article.hn_id}: {escape(article.title)}"))
    stats = store.stats()
    keys = {k: v["estimated_keys"] for k, v in stats["kinds"].items()}
    console.print(f"content store: {keys}, {stats['disk_bytes'] / 1024:.0f} KiB on disk")
