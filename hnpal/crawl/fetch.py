"""Fetch one article page with every limit a hostile web needs.

Connect and read timeouts plus a deadline for the whole page, a size cap (the body is streamed and cut
off there), a bounded number of redirects each checked by the SSRF guard, a content-type allowlist
(HTML, and PDF for markitdown), binary sniffing, charset detection and an honest User-Agent.
Failures raise :class:`FetchError`, which says whether trying again later can help.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import charset_normalizer
import httpx

from config.settings import Settings, get_settings
from hnpal.crawl.guard import BlockedAddress, DNSFailure, Guard
from hnpal.errors import HNPalError

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
PDF_TYPES = ("application/pdf", "application/x-pdf")
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_SINGLE_BYTE_WESTERN = frozenset(
    {"cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_1", "iso8859_2", "iso8859_15", "mac_roman"}
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


class FetchError(HNPalError):
    """A page could not be fetched. ``transient`` says whether a later attempt may succeed."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass
class FetchedPage:
    url: str  # as requested
    final_url: str  # after redirects
    status: int
    content_type: str  # "html" or "pdf"
    body: bytes
    encoding: str | None = None
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    _text: str | None = field(default=None, repr=False)

    def text(self) -> str:
        """The body decoded with the detected charset (HTML only; decoded once)."""
        if self._text is None:
            self._text, self.encoding = decode_html(self.body, self.encoding)
        return self._text


def decode_html(body: bytes, declared: str | None) -> tuple[str, str]:
    """Decode HTML bytes: the declared charset if it fits, then <meta charset>, then detection."""
    candidates: list[str] = []
    if declared:
        candidates.append(declared)
    match = _META_CHARSET.search(body[:4096])
    if match:
        candidates.append(match.group(1).decode("ascii", "ignore"))
    candidates.append("utf-8")
    for encoding in candidates:
        try:
            return body.decode(encoding), encoding.lower()
        except (LookupError, UnicodeDecodeError):
            continue
    best = charset_normalizer.from_bytes(body[:200_000]).best()
    guess = best.encoding if best is not None and best.encoding else None
    # Mislabelled Western pages are windows-1252 far more often than any sibling single-byte code page
    # (browsers fall back to it too); the detector cannot tell them apart on short texts.
    if guess is None or guess.lower().replace("-", "_") in _SINGLE_BYTE_WESTERN:
        try:
            return body.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    if guess:
        return body.decode(guess, errors="replace"), guess
    return body.decode("utf-8", errors="replace"), "utf-8"


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return control / len(sample) > 0.05


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Fetcher:
    """A reusable page fetcher (one per process: it keeps a connection pool)."""

    def __init__(self, settings: Settings | None = None, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings or get_settings()
        s = self.settings
        self.guard = Guard(s.crawl_allow_hosts)
        self.client = httpx.Client(
            timeout=httpx.Timeout(connect=s.crawl_connect_timeout, read=s.crawl_read_timeout, write=10, pool=10),
            follow_redirects=False,
            headers={
                "User-Agent": s.user_agent,
                "Accept": "text/html,application/xhtml+xml;q=0.9,application/pdf;q=0.8,*/*;q=0.1",
                "Accept-Language": "en;q=1.0,*;q=0.5",
            },
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str) -> FetchedPage:
        s = self.settings
        started = time.monotonic()
        deadline = started + s.crawl_total_timeout
        current = url
        seen: list[str] = []
        for _hop in range(s.crawl_max_redirects + 1):
            self._check(current)
            try:
                with self.client.stream("GET", current) as response:
                    self._check_peer(response, current)
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError(f"HTTP {response.status_code} redirect without Location", transient=False)
                        seen.append(current)
                        current = urljoin(current, location)
                        if current in seen:
                            raise FetchError(f"redirect loop at {current}", transient=False)
                        continue
                    if response.status_code >= 400:
                        transient = response.status_code in TRANSIENT_STATUSES
                        raise FetchError(
                            f"HTTP {response.status_code} from {current}",
                            transient=transient,
                            retry_after=_retry_after(response),
                        )
                    kind, charset = self._classify(response)
                    body, truncated = self._read(response, deadline, kind)
                    if kind == "html" and _looks_binary(body[:2048]):
                        raise FetchError(
                            f"binary body served as {response.headers.get('content-type')}", transient=False
                        )
                    return FetchedPage(
                        url=url,
                        final_url=current,
                        status=response.status_code,
                        content_type=kind,
                        body=body,
                        encoding=charset,
                        truncated=truncated,
                        redirects=seen,
                        elapsed=time.monotonic() - started,
                    )
            except httpx.TimeoutException as exc:
                raise FetchError(f"timeout fetching {current}: {type(exc).__name__}", transient=True) from None
            except httpx.TransportError as exc:
                raise FetchError(f"connection error fetching {current}: {exc}", transient=True) from None
            except httpx.InvalidURL as exc:
                raise FetchError(f"invalid URL {current!r}: {exc}", transient=False) from None
        raise FetchError(f"more than {s.crawl_max_redirects} redirects from {url}", transient=False)

    def _check(self, url: str) -> None:
        try:
            self.guard.check_url(url)
        except BlockedAddress as exc:
            raise FetchError(str(exc), transient=False) from None
        except DNSFailure as exc:
            raise FetchError(str(exc), transient=exc.temporary) from None

    def _check_peer(self, response: httpx.Response, url: str) -> None:
        """The address actually connected to must pass the guard too (DNS can change its answer)."""
        stream = response.extensions.get("network_stream")
        if stream is None:
            return
        peer = stream.get_extra_info("server_addr")
        if not peer:
            return
        host = response.request.url.host
        try:
            self.guard.check_ip(str(peer[0]), host)
        except BlockedAddress as exc:
            raise FetchError(f"{exc} (connected for {url})", transient=False) from None

    @staticmethod
    def _classify(response: httpx.Response) -> tuple[str, str | None]:
        header = response.headers.get("content-type", "")
        media = header.split(";", 1)[0].strip().lower()
        charset = None
        for param in header.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip("\"'")
        if media in HTML_TYPES or media == "":
            return "html", charset
        if media in PDF_TYPES:
            return "pdf", None
        raise FetchError(f"content type {media!r} is not crawled (HTML and PDF only)", transient=False)

    def _read(self, response: httpx.Response, deadline: float, kind: str) -> tuple[bytes, bool]:
        limit = self.settings.crawl_max_bytes
        declared = response.headers.get("content-length")
        if kind == "pdf" and declared and declared.isdigit() and int(declared) > limit:
            raise FetchError(f"PDF of {int(declared)} bytes exceeds the {limit}-byte limit", transient=False)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # as received, so the deadline is checked often
            if time.monotonic() > deadline:
                raise FetchError(
                    f"page took longer than {self.settings.crawl_total_timeout:.0f}s to download",
                    transient=True,
                )
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                if kind == "pdf":  # a cut PDF cannot be read
                    raise FetchError(f"PDF larger than the {limit}-byte limit", transient=False)
                return b"".join(chunks)[:limit], True
        return b"".join(chunks), False
