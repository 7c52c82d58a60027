"""The top of a post's HN comment thread, as JSON for the ``comments`` column family.

Breadth-first, level by level (each level fetched concurrently), in HN's rank order, down to
HNPAL_COMMENTS_DEPTH levels and at most HNPAL_COMMENTS_MAX comments; dead, deleted and empty comments
are dropped (with their replies).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import lxml.html

from hnpal.crawl.extract import expand_hn_links
from hnpal.ingest.client import HNClient


def comment_text(html: str) -> str:
    try:
        tree = lxml.html.fragment_fromstring(html, create_parent="div")
    except (ValueError, lxml.etree.ParserError):
        return html
    expand_hn_links(tree)
    for para in tree.iter("p"):
        para.text = "\n\n" + (para.text or "")
    return tree.text_content().strip()


def _kids(item: dict[str, Any]) -> list[int]:
    """An item's reply ids: a list of positive ints (anything else in ``kids`` is ignored)."""
    kids = item.get("kids")
    if not isinstance(kids, list):
        return []
    return [k for k in kids if isinstance(k, int) and not isinstance(k, bool) and k > 0]


def fetch_thread(client: HNClient, story: dict[str, Any], *, depth: int, limit: int) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    # Every id is visited once: a comment listing itself, an ancestor or a sibling as a reply (a
    # cycle) is neither fetched again nor kept twice.
    seen: set[int] = {story["id"]} if isinstance(story.get("id"), int) else set()
    level: list[int] = []
    for kid in _kids(story):
        if kid not in seen:
            seen.add(kid)
            level.append(kid)
    for current_depth in range(depth):
        if not level or len(kept) >= limit:
            break
        # Never fetch more of a level than could still be kept.
        level = level[: max(0, limit - len(kept)) * 2]
        items = client.items(level)
        next_level: list[int] = []
        for comment_id in level:
            item = items.get(comment_id)
            if not isinstance(item, dict) or item.get("deleted") or item.get("dead"):
                continue
            if item.get("type") not in (None, "comment") or not isinstance(item.get("text"), str) or not item["text"]:
                continue
            if len(kept) >= limit:
                break
            by, posted = item.get("by"), item.get("time")
            kept.append(
                {
                    "id": comment_id,
                    "by": by if isinstance(by, str) else None,
                    "time": posted if isinstance(posted, int) and not isinstance(posted, bool) else None,
                    "parent": item.get("parent") if isinstance(item.get("parent"), int) else None,
                    "depth": current_depth,
                    "text": comment_text(item["text"]),
                    "html": item["text"],
                }
            )
            for kid in _kids(item):
                if kid not in seen:
                    seen.add(kid)
                    next_level.append(kid)
        level = next_level
    return kept


def thread_document(hn_id: int, comments: list[dict[str, Any]], comment_count: int) -> str:
    return json.dumps(
        {
            "hn_id": hn_id,
            "fetched_at": datetime.now(UTC).isoformat(),
            "comment_count": comment_count,
            "comments": comments,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
