"""Load one page for ``hnpal extract``: a local file or a URL, as the crawler would see it."""

from __future__ import annotations

import gzip
from pathlib import Path

from hnpal.crawl.fetch import FetchedPage, Fetcher


def load_page(source: str) -> FetchedPage:
    if source.startswith(("http://", "https://")):
        with Fetcher() as fetcher:
            return fetcher.fetch(source)
    path = Path(source)
    data = path.read_bytes()
    name = path.name.lower()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
        name = name[:-3]
    kind = "pdf" if name.endswith(".pdf") or data[:5] == b"%PDF-" else "html"
    uri = path.absolute().as_uri()
    return FetchedPage(url=uri, final_url=uri, status=200, content_type=kind, body=data)
