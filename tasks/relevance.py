"""Relevance tasks (``default`` queue): what newly fetched posts are about, once per post."""

from __future__ import annotations

from hnpal import queues
from hnpal.celery import app
from hnpal.db.retry import DB_RETRY
from hnpal.relevance import service


# Idempotent: only posts without this model's topics get them, so a redelivered message finds them done.
@app.task(name="hnpal.relevance.classify", queue=queues.DEFAULT, acks_late=True, reject_on_worker_lost=True,
          max_retries=12, **DB_RETRY)  # fmt: skip
def classify(post_ids: list[int], texts: dict[str, str] | None = None) -> int:
    """Compute and store the topics of these posts (``texts``: the start of a post's own HN text)."""
    return service.classify_new(post_ids=post_ids, texts=texts)
