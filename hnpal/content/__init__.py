"""Content storage: fetched pages, extracted text/markdown and comment threads per HN item."""

from __future__ import annotations

from hnpal.content.store import (
    KINDS,
    ContentStore,
    ContentStoreError,
    ContentStoreLocked,
    ContentStoreMissing,
)

__all__ = ["KINDS", "ContentStore", "ContentStoreError", "ContentStoreLocked", "ContentStoreMissing"]
