"""HN ingestion tasks (``default`` queue): list fetches, score refreshes, comment threads."""

from __future__ import annotations

from config.settings import get_settings
from hnpal import queues
from hnpal.celery import app
from hnpal.db.session import session_scope
from hnpal.ingest import service


@app.task(name="hnpal.ingest.fetch", queue=queues.DEFAULT, ignore_result=False)
def fetch_lists(lists: list[str] | None = None, limit: int | None = None) -> dict:
    """Fetch HN lists (default: HNPAL_HN_LISTS, HNPAL_HN_LIST_LIMIT ids each) and upsert the items."""
    settings = get_settings()
    with session_scope() as session:
        report = service.fetch_lists(
            session=session, lists=lists or settings.hn_lists, limit=limit or settings.hn_list_limit
        )
    return report.as_dict()


@app.task(name="hnpal.ingest.items", queue=queues.DEFAULT, ignore_result=False)
def fetch_items(hn_ids: list[int]) -> dict:
    """Fetch and upsert specific HN items by id."""
    with session_scope() as session:
        report = service.fetch_items(session=session, hn_ids=[int(i) for i in hn_ids])
    return report.as_dict()


@app.task(name="hnpal.ingest.refresh", queue=queues.DEFAULT)
def refresh_recent() -> dict:
    """Refresh score and comment_count of posts from the last HNPAL_REFRESH_WINDOW_HOURS."""
    with session_scope() as session:
        report = service.refresh_recent(session=session, hours=get_settings().refresh_window_hours)
    return report.as_dict()


@app.task(name="hnpal.ingest.comments", queue=queues.DEFAULT, autoretry_for=(OSError,), retry_backoff=30,
          retry_backoff_max=1800, max_retries=5)  # fmt: skip
def fetch_comments(post_id: int) -> int | None:
    """Fetch a post's top comments and hand them to the content writer. Returns the post id."""
    settings = get_settings()
    return service.send_comments(post_id=post_id, depth=settings.comments_depth, limit=settings.comments_max)
