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

from hnpal.ingest.client import HNClient


def comment_text(html: str) -> str:
    try:
        tree = lxml.html.fragment_fromstring(html, create_parent="div")
    except (ValueError, lxml.etree.ParserError):
        return html
    for para in tree.iter("p"):
        para.text = "\n\n" + (para.text or "")
    return tree.text_content().strip()


def fetch_thread(client: HNClient, story: dict[str, Any], *, depth: int, limit: int) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    level: list[int] = [k for k in story.get("kids") or [] if isinstance(k, int)]
    for current_depth in range(depth):
        if not level or len(kept) >= limit:
            break
        # Never fetch more of a level than could still be kept.
        level = level[: max(0, limit - len(kept)) * 2]
        items = client.items(level)
        next_level: list[int] = []
        for comment_id in level:
            item = items.get(comment_id)
            if not isinstance(item, dict) or item.get("deleted") or item.get("dead") or not item.get("text"):
                continue
            if item.get("type") not in (None, "comment"):
                continue
            if len(kept) >= limit:
                break
            kept.append(
                {
                    "id": comment_id,
                    "by": item.get("by"),
                    "time": item.get("time"),
                    "parent": item.get("parent"),
                    "depth": current_depth,
                    "text": comment_text(item["text"]),
                    "html": item["text"],
                }
            )
            next_level.extend(k for k in item.get("kids") or [] if isinstance(k, int))
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
