"""SSRF guard: the crawler only talks to public addresses.

Every URL (the first and each redirect) is checked after DNS resolution, and the address the connection
actually reached is checked again, so a name that resolves to a private address (or changes its answer
between the check and the connection) is refused. Hosts in HNPAL_CRAWL_ALLOW_HOSTS are let through, so
tests and the sandbox can use loopback.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from hnpal.errors import HNPalError


class BlockedAddress(HNPalError):
    """The URL points at an address the crawler must not reach."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unwrap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def address_problem(ip: IPAddress) -> str | None:
    """Why this address is refused, or None when it is a public unicast address."""
    ip = _unwrap(ip)
    for attribute, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_unspecified", "unspecified"),
    ):
        if getattr(ip, attribute):
            return label
    if not ip.is_global:
        return "non-global"
    return None


class Guard:
    def __init__(self, allow_hosts: Iterable[str] = ()) -> None:
        self.allow_hosts = {h.lower().strip("[]") for h in allow_hosts}

    def allowed_host(self, host: str) -> bool:
        return host.lower().strip("[]") in self.allow_hosts

    def check_url(self, url: str) -> None:
        """Refuse non-http(s) URLs and hosts that resolve to a non-public address."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise BlockedAddress(f"invalid URL {url!r}: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise BlockedAddress(f"scheme {parts.scheme!r} is not fetched (http and https only)")
        host = parts.hostname
        if not host:
            raise BlockedAddress(f"URL {url!r} has no host")
        if self.allowed_host(host):
            return
        for ip in self.resolve(host, port):
            self.check_ip(ip, host)

    def check_ip(self, ip: IPAddress | str, host: str = "") -> None:
        """Only the host as written in the URL can be allowlisted: a name that merely resolves to an
        allowlisted address (``localhost`` for ``127.0.0.1``) is checked like any other."""
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip.split("%", 1)[0])
        if self.allowed_host(host or str(ip)):
            return
        problem = address_problem(ip)
        if problem:
            name = f"{host} ({ip})" if host and host != str(ip) else str(ip)
            raise BlockedAddress(f"refused {problem} address {name}")

    @staticmethod
    def resolve(host: str, port: int) -> list[IPAddress]:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            return [literal]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DNSFailure(
                f"DNS lookup of {host} failed: {exc.strerror}", temporary=exc.errno == socket.EAI_AGAIN
            ) from None
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


class DNSFailure(HNPalError):
    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary
