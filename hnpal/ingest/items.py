"""From a raw HN item to a validated post, or a counted reason to skip it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from pydantic import ValidationError

from hnpal.crawl.urls import canonical_url, domain_of
from hnpal.posts.schemas import BIGINT_MAX, INT_MAX, PostCreate, PostType

SKIP_REASONS = ("null", "deleted", "dead", "not_a_post", "missing_fields", "invalid", "fetch_failed")


class Skip(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in SKIP_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def classify(item: dict[str, Any]) -> PostType:
    """story / ask_hn / show_hn / poll / job, from the item type and the title prefix."""
    kind = item.get("type")
    if kind == "job":
        return "job"
    if kind == "poll":
        return "poll"
    title = (item.get("title") or "").lstrip().lower()
    if title.startswith("ask hn"):
        return "ask_hn"
    if title.startswith("show hn"):
        return "show_hn"
    return "story"


@overload
def _no_nul(value: str) -> str: ...
@overload
def _no_nul(value: str | None) -> str | None: ...
def _no_nul(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: one in an HN field is kept as U+FFFD (as in Telegram updates)."""
    return value.replace("\x00", "\ufffd") if value is not None else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_item(item: dict[str, Any] | None) -> tuple[PostCreate, dict[str, Any]]:
    """A post and the extra fields the pipeline keeps (canonical URL, HN text). Raises Skip."""
    if item is None:
        raise Skip("null")
    if not isinstance(item, dict):
        raise Skip("invalid", f"item is a {type(item).__name__}")
    if item.get("deleted"):
        raise Skip("deleted")
    if item.get("dead"):
        raise Skip("dead")
    if item.get("type") not in ("story", "job", "poll"):
        raise Skip("not_a_post", str(item.get("type")))
    if not _is_int(item.get("id")) or not item.get("title") or not _is_int(item.get("time")):
        raise Skip("missing_fields", f"id={item.get('id')!r}")
    for name in ("title", "url", "by", "text"):  # a wrongly typed field skips the item, not the whole batch
        if item.get(name) is not None and not isinstance(item[name], str):
            raise Skip("invalid", f"{name} is a {type(item[name]).__name__}")
    # Numbers are whole JSON integers within their columns' range (a float, a string, a bool or
    # 2**31 would fail the whole batched INSERT): anything else skips this one item.
    for name, top in (("id", BIGINT_MAX), ("score", INT_MAX), ("descendants", INT_MAX)):
        value = item.get(name)
        if value is None and name != "id":
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise Skip("invalid", f"{name} is a {type(value).__name__}")
        if (name == "id" and value <= 0) or value > top:
            raise Skip("invalid", f"{name} {value} out of range")
    url = item.get("url") or None
    if url is not None and ("\x00" in url or canonical_url(url) is None):
        url = None  # javascript:, mailto: and other non-web links are not crawled
    title = " ".join(_no_nul(item["title"]).split())
    try:
        post = PostCreate(
            hn_id=item["id"],
            type=classify(item),
            title=title[:500],
            url=url,
            domain=domain_of(url),
            author=_no_nul(item.get("by")),
            score=max(0, item.get("score") or 0),
            comment_count=max(0, item.get("descendants") or 0),
            hn_published_at=datetime.fromtimestamp(item["time"], tz=UTC),
        )
    except (ValidationError, ValueError, TypeError, OverflowError) as exc:
        raise Skip("invalid", " ".join(str(exc).split())[:200]) from None
    extra = {"canonical_url": canonical_url(url), "text": _no_nul(item.get("text")) or None}
    return post, extra
