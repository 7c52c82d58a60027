"""URL normalization for repost detection, and the domain shown next to a post."""

from __future__ import annotations

import ipaddress
from functools import cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import tldextract

# Query parameters that say where a click came from, not what the page is.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "igshid",
        "ref",
        "ref_src",
        "ref_url",
        "source",
        "share",
        "_hsenc",
        "_hsmi",
        "yclid",
        "twclid",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hmb_")


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def canonical_url(url: str | None) -> str | None:
    """One spelling per page: https, no ``www.``, no default port, no fragment, no trailing slash,
    no tracking parameters, remaining parameters sorted. ``None`` for anything that is not http(s)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if port and port not in (80, 443):
        host = f"{host}:{port}"
    # Only the slashes right after the host are collapsed: a ``//`` inside a path is part of it
    # (web.archive.org/web/2020/https://example.com/ would break without it).
    path = "/" + parts.path.lstrip("/")
    if len(path) > 1:
        path = path.rstrip("/")
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)))
    return urlunsplit(("https", host, path, query, ""))


@cache
def _extractor() -> tldextract.TLDExtract:
    # The Public Suffix List bundled with the package, used offline: no list URL, no cache directory,
    # so nothing is fetched or written at run time. Private suffixes (github.io, blogspot.com...) are
    # included, so user.github.io stays apart from other users' sites, as on HN.
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), include_psl_private_domains=True)


def registrable_domain(host: str) -> str:
    """The registrable domain of a host (``en.wikipedia.org`` -> ``wikipedia.org``, ``news.bbc.co.uk`` ->
    ``bbc.co.uk``), lower-cased. IP addresses, single labels and bare public suffixes stay as given."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    registrable = _extractor().extract_str(host).top_domain_under_public_suffix
    return registrable or host


def domain_of(url: str | None) -> str | None:
    """The domain HN shows in parentheses: the registrable domain of the host, from the Public Suffix
    List (``https://en.m.wikipedia.org/x`` -> ``wikipedia.org``)."""
    if not url:
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    return registrable_domain(host)


def normalize_domain(value: str) -> str:
    """What a user typed as a domain to mute (``https://en.wikipedia.org/wiki``, ``WWW.Example.com``),
    as the registrable domain posts store, so muting a domain mutes its subdomains too. What is no host
    at all is kept as typed (lower case, without ``www.``): it mutes nothing, and the user sees it."""
    raw = value.strip().lower()
    candidate = raw if "://" in raw else "http://" + raw.lstrip("/")
    try:
        host = urlsplit(candidate).hostname
    except ValueError:
        host = None
    return (registrable_domain(host) if host else "") or raw.removeprefix("www.")
