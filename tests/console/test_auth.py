"""Operators and access: sign-in, the session cookie, idle expiry, CSRF, login limits, roles, the CLI."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO, execute, one, rows
from tests.console.conftest import PASSWORD, make_operator, sign_in
from tests.telegram.conftest import hnpal_executable

PAGES = ["/queue", "/review/1", "/users", "/users/1", "/costs", "/pipeline", "/analytics", "/tags"]
POSTS = ["/logout", "/review/1/decide", "/tags/add", "/users/1/silence", "/users/1/unsilence", "/users/1/review",
         "/users/1/export", "/users/1/delete"]  # fmt: skip


def test_nothing_is_reachable_without_a_session_but_login_and_health(client) -> None:  # type: ignore[no-untyped-def]
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login", path
    for path in POSTS:
        response = client.post(path, data={"csrf": "x"}, follow_redirects=False)
        assert response.status_code == 403, path
    assert client.get("/login").status_code == 200
    assert client.get("/healthz").text == "ok"


def test_wrong_password_is_refused_and_the_right_one_opens_a_session(client) -> None:  # type: ignore[no-untyped-def]
    name = make_operator("reviewer")
    refused = sign_in(client, name, "not the password")
    assert refused.status_code == 401 and "Wrong name or password" in refused.text
    assert "hnpal_console=" not in refused.headers.get("set-cookie", "")
    assert sign_in(client, "nobody-" + name).status_code == 401  # an unknown name: the same answer
    accepted = sign_in(client, name)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/queue"
    cookie = [c for c in accepted.headers.get_list("set-cookie") if c.startswith("hnpal_console=")][0]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http on loopback
    assert client.get("/queue").status_code == 200
    audit = rows("SELECT action FROM audit_log WHERE operator = :n ORDER BY id", n=name)
    assert [a["action"] for a in audit] == ["operator.add", "console.login_failed", "console.login"]


def test_cookie_is_secure_over_https(settings_env) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from hnpal.console.app import create_app

    settings_env(console_https="true", console_login_attempts="1000", console_login_address_attempts="1000")
    name = make_operator("viewer")
    with TestClient(create_app(), base_url="https://127.0.0.1") as client:
        accepted = sign_in(client, name)
        assert client.get("/queue").status_code == 200
    cookie = [c for c in accepted.headers.get_list("set-cookie") if c.startswith("hnpal_console=")][0]
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


def test_idle_session_expires(signed_in) -> None:  # type: ignore[no-untyped-def]
    client, name, _ = signed_in("viewer")
    assert client.get("/queue", follow_redirects=False).status_code == 200
    execute(
        "UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes' "
        "WHERE operator_id = (SELECT id FROM operators WHERE name = :n)",
        n=name,
    )
    assert client.get("/queue", follow_redirects=False).headers["location"] == "/login"
    assert one("SELECT count(*) AS n FROM console_sessions s JOIN operators o ON o.id = s.operator_id "
               "WHERE o.name = :n", n=name)["n"] == 0  # fmt: skip


def test_post_without_the_csrf_token_is_refused(signed_in) -> None:  # type: ignore[no-untyped-def]
    client, name, csrf = signed_in("admin")
    assert client.post("/tags/add", data={"name": "no-token"}).status_code == 403
    assert client.post("/tags/add", data={"name": "wrong-token", "csrf": csrf + "x"}).status_code == 403
    assert one("SELECT count(*) AS n FROM edit_tags WHERE name LIKE '%token'")["n"] == 0
    assert client.post("/tags/add", data={"name": "with token", "csrf": csrf}).status_code == 200
    assert one("SELECT created_by FROM edit_tags WHERE name = 'with token'")["created_by"] == name
    # the login form's own token: missing or not matching its cookie, refused
    client.cookies.clear()
    assert client.post("/login", data={"name": name, "password": PASSWORD}).status_code == 403


def test_brute_force_is_slowed_per_name_and_per_address(client, settings_env, redis_client) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import REDIS_PREFIX

    for key in redis_client.scan_iter(match=f"{REDIS_PREFIX}console:login:*"):  # earlier tests' failures
        redis_client.delete(key)
    settings_env(console_login_attempts="3", console_login_address_attempts="6")
    victim = make_operator("admin")
    for _ in range(3):
        assert sign_in(client, victim, "guess guess guess").status_code == 401
    # the right password no longer helps this name until the window passes
    refused = sign_in(client, victim)
    assert refused.status_code == 429 and "too many failed logins" in refused.text
    # other names from the same address: three more failures use the address's allowance up
    other = make_operator("viewer")
    for n in range(3):
        assert sign_in(client, f"someone-{n}", "guess guess guess").status_code == 401
    assert sign_in(client, other).status_code == 429


def test_viewer_cannot_decide_or_see_personal_data(signed_in) -> None:  # type: ignore[no-untyped-def]
    from tests.console.test_review import held_answer

    item_id, user_id = held_answer(username="secret_handle", first_name="Secretname")
    client, _, csrf = signed_in("viewer")
    for path in ("/queue", f"/review/{item_id}", f"/users/{user_id}"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "secret_handle" not in page.text and "Secretname" not in page.text, path
    search = client.get("/users?q=secret_handle").text  # searching by name is not offered to a viewer
    assert f'href="/users/{user_id}"' not in search and "Secretname" not in search
    refused = client.post(f"/review/{item_id}/decide", data={"action": "approve", "csrf": csrf})
    assert refused.status_code == 403
    for action in ("silence", "review", "export", "unsilence"):
        assert client.post(f"/users/{user_id}/{action}", data={"csrf": csrf, "reason": "x"}).status_code == 403
    assert one("SELECT status FROM review_items WHERE id = :i", i=item_id)["status"] == "pending"
    reviewer, _, _ = signed_in("reviewer")
    assert "secret_handle" in reviewer.get(f"/users/{user_id}").text


def test_only_an_admin_deletes_an_account(signed_in) -> None:  # type: ignore[no-untyped-def]
    from tests.console.test_review import held_answer

    _, user_id = held_answer()
    client, _, csrf = signed_in("reviewer")
    assert client.post(f"/users/{user_id}/delete", data={"csrf": csrf}).status_code == 403
    client, name, csrf = signed_in("admin")
    done = client.post(f"/users/{user_id}/delete", data={"csrf": csrf})
    assert done.status_code == 200 and "account deleted" in done.text
    assert one("SELECT status FROM users WHERE id = :u", u=user_id)["status"] == "deleted"
    assert one("SELECT operator FROM audit_log WHERE action = 'account.delete' AND subject_user_id = :u",
               u=user_id)["operator"] == name  # fmt: skip


def test_operator_commands(client) -> None:  # type: ignore[no-untyped-def]
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([hnpal_executable(), "operator", *args], input=stdin, cwd=REPO, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    added = run("add", "ops-cli", "--role", "admin", "--password-stdin", stdin="first password 1\n")
    assert added.returncode == 0, added.stderr
    assert run("add", "ops-cli", "--password-stdin", stdin="first password 1\n").returncode == 2
    short = run("add", "ops-short", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    bad_role = run("add", "ops-role", "--role", "root", "--password-stdin", stdin="first password 1\n")
    assert bad_role.returncode == 2 and "role must be one of" in bad_role.stderr
    stored = one("SELECT password_hash, role FROM operators WHERE name = 'ops-cli'")
    assert stored["password_hash"].startswith("$argon2id$") and stored["role"] == "admin"
    assert sign_in(client, "ops-cli", "first password 1").status_code == 303
    assert run("passwd", "ops-cli", "--password-stdin", stdin="second password 2\n").returncode == 0
    assert client.get("/queue", follow_redirects=False).status_code == 303  # the session ended with it
    assert sign_in(client, "ops-cli", "first password 1").status_code == 401
    assert sign_in(client, "ops-cli", "second password 2").status_code == 303
    assert run("disable", "ops-cli").returncode == 0
    assert client.get("/queue", follow_redirects=False).status_code == 303
    assert sign_in(client, "ops-cli", "second password 2").status_code == 401
    assert run("disable", "nobody-here").returncode == 2


@pytest.mark.parametrize("path", ["/queue", "/login"])
def test_pages_forbid_scripts_and_framing(client, path: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get(path, follow_redirects=False)
    assert "script-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
