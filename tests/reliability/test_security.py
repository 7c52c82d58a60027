"""Security: SSRF refused by the real crawler, forged and replayed button data refused by the
real bot, admin commands only for ``HNPAL_ADMIN_IDS``, Flower behind basic auth, and parameterized SQL
(hostile strings through every user input, then the tables checked intact and the values verbatim).

* SSRF: each hostile URL is a post crawled by :func:`hnpal.crawl.service.crawl` with a real
  :class:`~hnpal.crawl.fetch.Fetcher` whose allowlist is EMPTY, while a loopback HTTP server counts the
  requests that reach it (none may, except the one a DNS-rebinding connection makes before the peer check
  refuses its answer).
* The Telegram parts run through ``tg_stack`` (tests/telegram/conftest.py: the sandbox Bot API, a real
  worker and the real ``hnpal bot``), with one admin id in ``HNPAL_ADMIN_IDS``.
* Flower: tests/ops/test_up.py checks Flower under ``hnpal up``; here ``celery flower`` alone, started as
  the supervisor starts it (:func:`hnpal.ops.supervisor.flower_child`, ``FLOWER_BASIC_AUTH`` in its
  environment).
"""

from __future__ import annotations

import http.server
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from config.settings import load_settings
from hnpal.crawl import service as crawl_service
from hnpal.crawl.fetch import Fetcher
from hnpal.crawl.urls import normalize_domain
from hnpal.db.session import session_scope
from hnpal.posts.models import Post
from hnpal.telegram.callbacks import sign
from tests.conftest import REPO, rows
from tests.telegram.conftest import Stack, free_port, tg_stack  # noqa: F401  (tg_stack: the fixture)

pytestmark = pytest.mark.slow

ADMIN = 6_900_001  # outside the ids tests/telegram/conftest.py hands out
_hn_ids = itertools.count(940_000_001)


# --- helpers ----------------------------------------------------------------------------------------


def scalar(sql: str, **params: Any) -> Any:
    with session_scope() as session:
        return session.execute(text(sql), params).scalar()


def new_post(url: str | None, title: str = "security test") -> tuple[int, int]:
    hn_id = next(_hn_ids)
    with session_scope() as session:
        post = Post(hn_id=hn_id, type="story", title=title, url=url, crawl_status="queued", score=10)
        session.add(post)
        session.flush()
        return post.id, hn_id


# --- SSRF -------------------------------------------------------------------------------------------


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # http.server's name
        type(self).hits.append(self.path)
        body = b"<html><body><article><p>" + b"internal secret " * 50 + b"</p></article></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def internal() -> Iterator[tuple[int, list[str]]]:
    """A loopback server (IPv4 and IPv6 when available) standing for an internal service."""
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    servers = [server]
    try:
        six = type("V6", (http.server.ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        servers.append(six(("::1", port), handler))
    except OSError as exc:
        print(f"no IPv6 loopback server ({exc}): [::1] is still refused before any connection")
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield port, hits
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def strict_fetcher() -> Iterator[Fetcher]:
    settings = load_settings(crawl_allow_hosts="", crawl_read_timeout=2, crawl_total_timeout=5)
    assert settings.crawl_allow_hosts == []
    with Fetcher(settings) as fetcher:
        yield fetcher


SSRF_URLS = [  # (url with {port}, what the refusal names)
    ("http://127.0.0.1:{port}/admin", "loopback"),
    ("http://127.9.8.7:{port}/", "loopback"),
    ("http://localhost:{port}/", "loopback"),  # a DNS name that resolves to 127.0.0.1 / ::1
    ("http://[::1]:{port}/", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:7f00:1]:{port}/", "loopback"),
    ("http://[2002:7f00:1::]:{port}/", "loopback"),  # 6to4 wrapping 127.0.0.1
    ("http://[0:0:0:0:0:0:0:1]:{port}/", "loopback"),
    ("http://2130706433:{port}/", "loopback"),  # decimal
    ("http://0x7f000001:{port}/", "loopback"),  # hex
    ("http://0x7f.0.0.1:{port}/", "loopback"),  # dotted hex
    ("http://0177.0.0.1:{port}/", "loopback"),  # octal
    ("http://017700000001:{port}/", "loopback"),  # one octal number
    ("http://127.1:{port}/", "loopback"),  # short form
    ("http://0:{port}/", "refused private address 0 (0.0.0.0)"),
    ("http://0.0.0.0:{port}/", "refused private address 0.0.0.0"),
    ("http://10.1.2.3:{port}/", "private"),
    ("http://172.16.0.1:{port}/", "private"),
    ("http://192.168.1.1:{port}/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://100.64.0.1/", "non-global"),  # carrier-grade NAT
    ("http://[fd00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://224.0.0.1/", "multicast"),
    ("http://user:pw@127.0.0.1:{port}/", "loopback"),  # credentials in the URL
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://127.0.0.1:{port}/", "scheme 'gopher'"),
]


def test_ssrf_urls_are_refused_by_the_crawler(internal, strict_fetcher: Fetcher) -> None:
    port, hits = internal
    refused = 0
    for template, reason in SSRF_URLS:
        url = template.format(port=port)
        post_id, _ = new_post(url)
        result = crawl_service.crawl(post_id=post_id, fetcher=strict_fetcher)
        (post,) = rows("SELECT crawl_status, crawl_error, crawl_retry_count FROM posts WHERE id = :i", i=post_id)
        assert result.outcome == "failed", (url, result)
        assert post["crawl_status"] == "failed" and post["crawl_retry_count"] == 1, (url, post)
        assert reason in post["crawl_error"], (url, post["crawl_error"])
        refused += 1
    assert hits == [], f"requests reached the internal server: {hits}"
    print(f"ssrf: urls={len(SSRF_URLS)} refused={refused} reached_internal=0")


def test_redirect_to_loopback_is_refused(internal, strict_fetcher: Fetcher) -> None:
    """A public page (an address the guard lets through; its answer from a mock transport, as no public
    network is reachable here) redirects to the internal server: the redirect is refused before it is
    followed."""
    port, hits = internal
    asked: list[str] = []
    targets = [
        f"http://127.0.0.1:{port}/internal",
        f"http://localhost:{port}/internal",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://2130706433:{port}/",
        "http://169.254.169.254/latest/meta-data/",
    ]

    def public(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        n = int(request.url.path.strip("/") or 0)
        return httpx.Response(302, headers={"Location": targets[n]})

    settings = load_settings(crawl_allow_hosts="")
    with Fetcher(settings, transport=httpx.MockTransport(public)) as fetcher:
        for n, target in enumerate(targets):
            post_id, _ = new_post(f"http://93.184.216.34/{n}")
            result = crawl_service.crawl(post_id=post_id, fetcher=fetcher)
            assert result.outcome == "failed" and "refused" in result.detail, (target, result)
    assert asked == [f"http://93.184.216.34/{n}" for n in range(len(targets))]  # the redirects were not asked
    assert hits == []


def test_dns_rebinding_is_refused_on_the_connected_address(
    internal, strict_fetcher: Fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that resolves to a public address when checked and to loopback when connected: the peer
    check refuses the answer (the request did reach the server; nothing of it is kept)."""
    port, hits = internal
    real = socket.getaddrinfo
    answers = {"n": 0}

    def rebinding(host, port_, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "rebind.example":
            answers["n"] += 1
            address = "93.184.216.34" if answers["n"] == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_))]
        return real(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    before = len(hits)
    post_id, _ = new_post(f"http://rebind.example:{port}/page")
    result = crawl_service.crawl(post_id=post_id, fetcher=strict_fetcher)
    assert answers["n"] >= 2
    assert result.outcome == "failed" and "refused loopback" in result.detail, result
    assert scalar("SELECT has_text FROM posts WHERE id = :i", i=post_id) is False
    print(f"dns-rebinding: requests that reached loopback={len(hits) - before}, refused at the peer check")


# --- Flower -----------------------------------------------------------------------------------------


def test_flower_refuses_requests_without_credentials(tmp_path: Path) -> None:
    from hnpal.ops.supervisor import flower_child

    port = free_port()
    auth = ("ops", f"pw-{uuid.uuid4().hex[:10]}")
    settings = load_settings(flower_port=port, data_dir=str(tmp_path))
    child = flower_child(settings, tmp_path / "logs")
    env = {**os.environ, "FLOWER_BASIC_AUTH": ":".join(auth), "HNPAL_REDIS_KEY_PREFIX": f"flower-{port}:"}
    child.start(env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not child.ready():
            assert child.alive(), child.log_text()
            assert time.monotonic() < deadline, child.log_text()
            time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/broker"):
                assert client.get(path).status_code == 401, path
                assert client.get(path, auth=(auth[0], "wrong")).status_code == 401, path
                assert client.get(path, auth=("admin", auth[1])).status_code == 401, path
            assert client.post("/api/task/async-apply/hnpal.ops.sleep", json={}).status_code == 401
            assert client.get("/", auth=auth).status_code == 200
    finally:
        assert child.proc is not None
        child.proc.terminate()
        child.proc.wait(timeout=30)
    assert auth[1].encode() not in " ".join(child.cmd).encode()


# --- through the real bot -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin_env() -> Iterator[None]:
    """Set before ``tg_stack`` starts, so the worker and the bot read it."""
    from config.settings import reset_settings_cache

    patch = pytest.MonkeyPatch()
    patch.setenv("HNPAL_ADMIN_IDS", f"{ADMIN}, 6900777")
    reset_settings_cache()
    yield
    patch.undo()
    reset_settings_cache()


@pytest.fixture
def tg(admin_env: None, tg_stack: Stack) -> Stack:  # noqa: F811
    return tg_stack


def _admin(tg: Stack) -> int:
    if tg.server.user(ADMIN) is None:
        tg.server.add_user(ADMIN, first_name="Root")
    return ADMIN


def test_admin_commands_only_for_admin_ids(tg: Stack) -> None:
    mallory = tg.new_user("Mallory")
    (unknown,) = tg.send(mallory, "/zzzzz")
    expected = unknown.text.replace("/zzzzz", "/admin", 1)
    audits = scalar("SELECT count(*) FROM audit_log WHERE actor_type = 'admin'")
    # a quarantined update to look at and retry
    poison = tg.server.inject_update({"message": "just a string"})
    assert tg.wait_handled(poison["update_id"])["status"] == "quarantined"

    for attempt in ("/admin", "/admin stats", "/admin quarantine", f"/admin retry {poison['update_id']}",
                    "/ADMIN@hnpal_bot stats", "/admin help"):  # fmt: skip
        (reply,) = tg.send(mallory, attempt)
        assert reply.text == expected, attempt
        assert reply.buttons() == unknown.buttons()
    assert scalar("SELECT status FROM telegram_updates WHERE update_id = :u", u=poison["update_id"]) == "quarantined"
    assert scalar("SELECT count(*) FROM audit_log WHERE actor_type = 'admin'") == audits
    # no side effect either: like an unknown command, /admin leaves a pending /settings prompt in place
    (menu,) = tg.send(mallory, "/settings")
    tg.press(mallory, menu, sign(mallory, "st", "max_posts"), check=False, replies=1)
    tg.send(mallory, "/admin stats")
    (saved,) = tg.send(mallory, "7")
    assert saved.text.startswith("Settings")
    assert scalar("SELECT digest_preferences->>'max_posts' FROM users WHERE telegram_id = :t", t=mallory) == "7"

    admin = _admin(tg)
    (helptext,) = tg.send(admin, "/admin")
    assert helptext.text.startswith("Admin\n\n/admin stats")
    (stats,) = tg.send(admin, "/admin stats")
    for part in ("Users: ", "active ", "Posts by crawl status: ", "Queue depths: ", "telegram ",
                 "Quarantined updates: ", "LLM spend today: $"):  # fmt: skip
        assert part in stats.text, (part, stats.text)
    (listing,) = tg.send(admin, "/admin quarantine")
    assert str(poison["update_id"]) in listing.text
    (missing,) = tg.send(admin, "/admin retry 999999999999")
    assert "no quarantined update with id 999999999999" in missing.text
    (bad,) = tg.send(admin, "/admin retry abc")
    assert bad.text.startswith("Send /admin retry with the update's id")
    (done,) = tg.send(admin, f"/admin retry {poison['update_id']}")
    assert done.text == f"Update {poison['update_id']} is queued again."

    def retried() -> bool:  # handled again, and quarantined again: the payload is still poison
        sql = "SELECT status FROM telegram_updates WHERE update_id = :u"
        return scalar(sql, u=poison["update_id"]) == "quarantined"

    tg.wait_until(retried, what="the retried update handled again")
    actions = rows(
        "SELECT a.action, a.actor_id, a.details FROM audit_log a WHERE a.actor_type = 'admin' ORDER BY a.id"
    )[audits:]
    admin_user_id = scalar("SELECT id FROM users WHERE telegram_id = :t", t=admin)
    assert [a["action"] for a in actions] == ["admin_help", "admin_stats", "admin_quarantine_list", "admin_retry"]
    assert {a["actor_id"] for a in actions} == {admin_user_id}
    assert actions[-1]["details"] == {"update_id": poison["update_id"]}


def test_forged_and_replayed_callbacks_are_refused(tg: Stack) -> None:
    owner = tg.new_user("Owner")
    mallory = tg.new_user("Mallory")
    (settings_msg,) = tg.send(owner, "/settings")
    (own,) = tg.send(mallory, "/help")
    prefs_before = scalar("SELECT digest_preferences FROM users WHERE telegram_id = :t", t=owner)
    not_yours = "This button is not valid for you."

    style = sign(owner, "set", "style", 1)
    forged = [
        (mallory, own, style),  # the owner's button pressed by someone else
        (mallory, own, sign(owner, "pdd", "yes", int(time.time()))),  # the owner's delete confirmation
        (owner, settings_msg, style[:-2] + ("AA" if not style.endswith("AA") else "BB")),  # altered MAC
        (owner, settings_msg, style.replace("set:style:1~", "set:style:0~")),  # altered payload
        (owner, settings_msg, "set:style:1"),  # unsigned
        (owner, settings_msg, "x" * 64),  # garbage at Telegram's 64-byte limit
        (owner, settings_msg, "set:style:1~" + "\x00" * 8),
        (owner, settings_msg, sign(mallory, "set", "style", 1)),  # signed for someone else
    ]
    for presser, message, data in forged:
        answer = tg.press(presser, message, data, chat_id=presser, check=False)
        assert answer == not_yours, (data, answer)
    assert scalar("SELECT digest_preferences FROM users WHERE telegram_id = :t", t=owner) == prefs_before

    # replayed: an old confirmation of /deletemydata, signed correctly, long expired
    stale = sign(owner, "pdd", "yes", int(time.time()) - 3600)
    assert tg.press(owner, settings_msg, stale, check=False) == "Expired"
    assert scalar("SELECT status FROM users WHERE telegram_id = :t", t=owner) == "active"
    # replayed choice buttons are idempotent: the same value, however often
    answers = [tg.press(owner, settings_msg, style, check=False) for _ in range(3)]
    assert answers == ["Saved"] * 3
    assert scalar("SELECT digest_preferences->>'style' FROM users WHERE telegram_id = :t", t=owner) == "brief"


# --- parameterized SQL: hostile strings through every user input --------------------------------------

HOSTILE = [
    "'; DROP TABLE users; --",
    "%s",
    "%(telegram_id)s",
    "$$ $1 $$",
    "\\' OR '1'='1",
    "nul\x00byte",
    "ünïcødé 日本語 🚀 \u202eevil",
    "<b>bold</b> &amp; <script>",
    "Robert'); DELETE FROM posts;--",
    "x" * 10_000,
]


def _stored(value: str) -> str:
    return value.replace("\x00", "\ufffd")  # the bot stores a NUL as U+FFFD (JSONB cannot hold one)


def _tables() -> dict[str, int]:
    """Every table of the schema with its row count (counted by the server: format('%I') quotes the name)."""
    found = rows(
        "SELECT table_name AS name, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', "
        "table_name), false, true, '')))[1]::text::bigint AS n "
        "FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    return {r["name"]: r["n"] for r in found}


def test_hostile_strings_through_every_input(tg: Stack) -> None:
    tables_before = _tables()
    uid = tg.new_user("Bobby")
    tg.send(uid, "/start", replies=2)
    post_id, hn_id = new_post("https://example.com/a", title="A post to discuss")
    commands = ["start", "help", "settings", "pause", "resume", "digest", "saved", "token", "discuss", "done",
                "memory", "memory forget", "memory pause", "memory clear", "export", "deletemydata", "admin",
                "admin retry", "nosuchcommand"]  # fmt: skip
    sent = 0
    for command in commands:
        for hostile in HOSTILE:
            tg.send(uid, f"/{command} {hostile}", replies=0)  # asserts: processed (not quarantined)
            sent += 1
    assert scalar("SELECT status FROM users WHERE telegram_id = :t", t=uid) in ("active", "paused")

    # each /settings prompt answer
    (menu,) = tg.send(uid, "/settings")
    for field in ("time", "timezone", "max_posts", "min_score", "muted_keywords", "muted_domains"):
        for hostile in HOSTILE:
            tg.press(uid, menu, sign(uid, "st", field), check=False, replies=1)
            (answer,) = tg.send(uid, hostile)
            sent += 2
            prefs = scalar("SELECT digest_preferences FROM users WHERE telegram_id = :t", t=uid)
            if field in ("muted_keywords", "muted_domains") and len(hostile) <= 100 and "," not in hostile:
                word = _stored(hostile).strip().lower()
                word = normalize_domain(word) if field == "muted_domains" else word
                assert prefs[field] == [word], (field, hostile, prefs[field])
                assert answer.text.startswith("Settings")
            else:
                assert answer.text.startswith("⚠️"), (field, hostile[:40], answer.text[:200])
        tg.send(uid, "/help")  # leaves the prompt

    # discussion text (stored verbatim in conversations.messages; over 10,000 characters is refused)
    tg.send(uid, f"/discuss {hn_id}")
    for hostile in HOSTILE:
        tg.send(uid, hostile, replies=1)  # the (offline) model's answer, or why it was refused
        sent += 1
    (conversation,) = rows(
        "SELECT c.messages FROM conversations c JOIN users u ON u.id = c.user_id "
        "WHERE u.telegram_id = :t AND c.post_id = :p AND c.ended_at IS NULL",
        t=uid,
        p=post_id,
    )
    stored = [m["content"] for m in conversation["messages"] if m["role"] == "user"]
    assert stored == [_stored(h) for h in HOSTILE], [s[:30] for s in stored]
    tg.send(uid, "/done")

    # the export CLI's arguments
    for hostile in (h for h in HOSTILE if "\x00" not in h):  # an OS argument cannot hold a NUL
        for args in (["user", "export", hostile], ["user", "export", str(uid), "--format", hostile]):
            done = subprocess.run([sys.executable, "-m", "hnpal.cli.main", *args], capture_output=True, text=True,
                                  timeout=120, env={**os.environ, **tg.env}, cwd=REPO)  # fmt: skip
            assert done.returncode == 2, (args[:4], done.stderr[-500:])
            assert "Traceback" not in done.stderr
            sent += 1
            if hostile != HOSTILE[0]:
                break  # one run of each argument kind per string is plenty; the first string tries both

    # nothing dropped, nothing deleted, no update quarantined, no task crashed
    tables_after = _tables()
    assert set(tables_after) == set(tables_before)
    for name in ("users", "posts", "audit_log", "telegram_updates"):
        assert tables_after[name] >= tables_before[name], name
    assert scalar("SELECT count(*) FROM posts WHERE id = :i", i=post_id) == 1
    quarantined = scalar(
        "SELECT count(*) FROM telegram_updates WHERE telegram_user_id = :t AND status <> 'processed'", t=uid
    )
    assert quarantined == 0
    assert " raised unexpected" not in tg.worker.log()
    print(f"hostile-strings: inputs={sent} tables={len(tables_after)} intact=yes quarantined=0")
