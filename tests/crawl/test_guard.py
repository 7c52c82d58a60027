"""The SSRF guard refuses every non-public address, whichever way it is written."""

from __future__ import annotations

import socket

import pytest

from hnpal.crawl.guard import BlockedAddress, Guard


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/admin",
        "http://localhost/",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:7f00:1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[2002:7f00:0001::]/",  # 6to4 wrapping 127.0.0.1
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f000001/",
    ],
)
def test_private_and_special_addresses_are_refused(url: str) -> None:
    with pytest.raises(BlockedAddress):
        Guard().check_url(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x/", "ftp://example.com/", "http:///nohost"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(BlockedAddress):
        Guard().check_url(url)


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host, port, *args, **kwargs):  # the DNS answer of a hostile name
        assert host == "innocent.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(BlockedAddress, match=r"innocent\.example \(10\.1\.2\.3\)"):
        Guard().check_url("https://innocent.example/page")


def test_one_private_answer_among_public_ones_is_enough_to_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [("93.184.216.34", 443), ("192.168.0.10", 443)]
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", addr) for addr in answers],
    )
    with pytest.raises(BlockedAddress, match="private"):
        Guard().check_url("https://mixed.example/")


def test_public_address_passes() -> None:
    Guard().check_url("http://93.184.216.34/")
    Guard().check_ip("2606:2800:220:1:248:1893:25c8:1946")


def test_allowlisted_hosts_pass() -> None:
    guard = Guard(["127.0.0.1", "localhost"])
    guard.check_url("http://127.0.0.1:8765/articles/x.html")
    guard.check_ip("127.0.0.1")
    with pytest.raises(BlockedAddress):
        guard.check_url("http://10.0.0.1/")
