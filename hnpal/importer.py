"""``hnpal import-jsonl``: the seed migration path from JSONL exports into PostgreSQL and RocksDB.

Each line is one post, either in HN's item format (id, type, title, url, by, score, descendants, time)
or in HN Pal's (hn_id, type, title, url, author, score, comment_count, hn_published_at). Posts are
upserted in batches (re-running adds no duplicates); content files named by HN id in ``content_dir``
(``<id>.html``, ``<id>.txt``, ``<id>.md``, optionally gzipped) go to RocksDB: directly when no content
worker holds the store, through the content queue when one does. Bad lines are skipped with a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from hnpal import jobs
from hnpal.crawl.urls import canonical_url, domain_of
from hnpal.db.session import session_scope
from hnpal.ingest.items import classify
from hnpal.posts.models import Post
from hnpal.posts.schemas import PostCreate

BATCH = 500
SUFFIXES = {"html": (".html", ".htm"), "text": (".txt", ".text"), "markdown": (".md", ".markdown")}


@dataclass
class ImportReport:
    inserted: int = 0
    updated: int = 0
    content_files: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        return len(self.skipped)


def _to_post(obj: Any) -> PostCreate:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "hn_id" not in obj and "id" in obj:  # HN item format
        if obj.get("deleted") or obj.get("dead"):
            raise ValueError("deleted or dead item")
        published = obj.get("time")
        obj = {
            "hn_id": obj.get("id"),
            "type": classify(obj),
            "title": obj.get("title"),
            "url": obj.get("url"),
            "author": obj.get("by"),
            "score": obj.get("score") or 0,
            "comment_count": obj.get("descendants") or 0,
            "hn_published_at": datetime.fromtimestamp(published, tz=UTC) if isinstance(published, int) else None,
        }
    fields = {k: obj.get(k) for k in PostCreate.model_fields if obj.get(k) is not None}
    if fields.get("url") and "domain" not in fields:
        fields["domain"] = domain_of(fields["url"])
    return PostCreate(**fields)


def _read_content(content_dir: Path, hn_id: int) -> dict[str, str]:
    import gzip

    found: dict[str, str] = {}
    for kind, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            for name in (f"{hn_id}{suffix}", f"{hn_id}{suffix}.gz"):
                path = content_dir / name
                if path.is_file():
                    data = path.read_bytes()
                    if name.endswith(".gz"):
                        data = gzip.decompress(data)
                    found[kind] = data.decode("utf-8", errors="replace")
                    break
            if kind in found:
                break
    return found


class _ContentSink:
    """Writes content directly when the store is free, else through the content worker."""

    def __init__(self) -> None:
        from config.settings import get_settings
        from hnpal.content import ContentStore, ContentStoreLocked

        self.store = None
        try:
            self.store = ContentStore.open_writer(get_settings().content_dir)
        except ContentStoreLocked:
            self.store = None

    def write(self, post_id: int, hn_id: int, docs: dict[str, str]) -> None:
        from hnpal.content.payload import encode_payload

        payload = encode_payload(**docs, meta={"method": "import"})
        if self.store is None:  # the content worker runs: it writes
            jobs.enqueue(None, jobs.CONTENT_STORE, post_id, payload)
            return
        from hnpal.content.service import store_payload

        with session_scope() as session:
            store_payload(session=session, store=self.store, post_id=post_id, payload=payload)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def import_jsonl(path: Path, *, content_dir: Path | None = None, progress: bool = True) -> ImportReport:
    report = ImportReport()
    sink = _ContentSink() if content_dir is not None else None
    total = path.stat().st_size
    columns = [TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, disable=not progress, transient=True) as bar, path.open("rb") as handle:
            task = bar.add_task("import", total=total)
            batch: list[dict[str, Any]] = []
            for line_no, raw in enumerate(handle, start=1):
                bar.advance(task, len(raw))
                if not raw.strip():
                    continue
                try:
                    post = _to_post(json.loads(raw))
                except json.JSONDecodeError as exc:
                    report.skipped.append((line_no, f"invalid JSON: {exc.msg}"))
                    continue
                except (ValidationError, ValueError, TypeError, OverflowError) as exc:
                    report.skipped.append((line_no, " ".join(str(exc).split())[:200]))
                    continue
                row = post.model_dump(exclude={"url"})
                row["url"] = str(post.url) if post.url else None
                row["canonical_url"] = canonical_url(row["url"])
                row["crawl_status"] = "pending" if row["url"] else "skipped"
                batch.append(row)
                if len(batch) >= BATCH:
                    _flush(batch, report, content_dir, sink)
                    batch = []
            if batch:
                _flush(batch, report, content_dir, sink)
    finally:
        if sink is not None:
            sink.close()
    return report


def _flush(batch: list[dict[str, Any]], report: ImportReport, content_dir: Path | None, sink) -> None:
    # One row per hn_id within a statement (ON CONFLICT cannot touch a row twice): the last line wins.
    unique = list({row["hn_id"]: row for row in batch}.values())
    with session_scope() as session:
        insert_rows = insert(Post).values(unique)
        stmt = insert_rows.on_conflict_do_update(
            index_elements=[Post.hn_id],
            set_={"score": insert_rows.excluded.score, "comment_count": insert_rows.excluded.comment_count},
        ).returning(Post.id, Post.hn_id, text("(xmax = 0) AS inserted"))
        rows = session.execute(stmt).all()
    for _post_id, _hn_id, inserted in rows:
        if inserted:
            report.inserted += 1
        else:
            report.updated += 1
    if content_dir is not None and sink is not None:
        for post_id, hn_id, _inserted in rows:
            docs = _read_content(content_dir, hn_id)
            if docs:
                sink.write(post_id, hn_id, docs)
                report.content_files += len(docs)
