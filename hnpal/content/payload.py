"""Content travels to the writer through the broker compressed, and within a stated size limit.

A payload is JSON (html/text/markdown/comments and a little metadata), zstd-compressed and base64-encoded
so the message stays JSON. A page is at most HNPAL_CRAWL_MAX_BYTES raw, so the limit below is rarely
reached; past it the raw HTML is dropped (text and markdown are kept), and past it again the payload
is refused: no message ever exceeds MAX_PAYLOAD_BYTES.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import zstandard

from hnpal.errors import HNPalError

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # encoded size, per broker message
FIELDS = ("html", "text", "markdown", "comments", "hn_text")


class PayloadTooLarge(HNPalError, ValueError):
    pass


class _Codecs(threading.local):
    """One zstd compressor and decompressor per thread: python-zstandard's objects must not be used by
    two threads at once (a shared pair corrupted payloads in a threads-pool worker)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs = _Codecs()


def _pack(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.b64encode(_codecs.compressor.compress(raw)).decode("ascii")


def encode_payload(
    *,
    html: str | None = None,
    text: str | None = None,
    markdown: str | None = None,
    comments: str | None = None,
    hn_text: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    pairs = (("html", html), ("text", text), ("markdown", markdown), ("comments", comments), ("hn_text", hn_text))
    doc: dict[str, Any] = {k: v for k, v in pairs if v}
    if not doc:
        raise ValueError("a content payload needs at least one of " + ", ".join(FIELDS))
    doc["meta"] = meta or {}
    packed = _pack(doc)
    if len(packed) > MAX_PAYLOAD_BYTES and "html" in doc:
        doc.pop("html")
        doc["meta"] = {**doc["meta"], "html_dropped": "payload over the broker size limit"}
        packed = _pack(doc)
    if len(packed) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"content payload of {len(packed)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return packed


def decode_payload(packed: str) -> dict[str, Any]:
    if len(packed) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"content payload of {len(packed)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    raw = _codecs.decompressor.decompress(base64.b64decode(packed), max_output_size=64 * 1024 * 1024)
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("content payload is not a JSON object")
    return doc
