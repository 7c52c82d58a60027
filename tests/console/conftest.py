"""The console under test: the real Starlette app in process (``client``), operators of each role, and
helpers to sign in and to read a page's CSRF token."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from hnpal.console.app import create_app
from hnpal.db.session import session_scope

PASSWORD = "correct horse battery"


def make_operator(role: str, name: str | None = None) -> str:
    from hnpal.console import auth

    name = name or f"{role}-{uuid.uuid4().hex[:6]}"
    with session_scope() as session:
        auth.add_operator(session, name=name, password=PASSWORD, role=role)
    return name


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    page = client.get("/login")
    return client.post(
        "/login", data={"name": name, "password": password, "csrf": csrf_of(page.text)}, follow_redirects=False
    )


@pytest.fixture
def client(settings_env) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings_env(console_login_attempts="1000", console_login_address_attempts="1000")
    with TestClient(create_app(), base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def signed_in(client: TestClient):  # type: ignore[no-untyped-def]
    """A client signed in as a fresh operator of the given role; returns (client, name, csrf)."""

    def sign(role: str = "reviewer") -> tuple[TestClient, str, str]:
        name = make_operator(role)
        client.cookies.clear()
        response = sign_in(client, name)
        assert response.status_code == 303, response.text
        page = client.get("/queue")
        assert page.status_code == 200
        return client, name, csrf_of(page.text)

    return sign


class ConsoleProcess:
    """``hnpal console`` in its own process on a free loopback port, as ``hnpal up`` starts it."""

    def __init__(self, env: dict[str, str]) -> None:
        import os
        import subprocess

        from tests.conftest import REPO, _tmp_root
        from tests.telegram.conftest import free_port, hnpal_executable

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = _tmp_root / f"console-{uuid.uuid4().hex[:6]}.log"
        self._env = {**os.environ, **env, "HNPAL_CONSOLE_PORT": str(self.port)}
        self._cmd = [hnpal_executable(), "console"]
        self._cwd = REPO
        self._popen = subprocess.Popen
        self.proc = None
        self.start()

    def start(self) -> None:
        import time

        import httpx

        log = open(self.log_path, "a")  # the child holds it
        self.proc = self._popen(self._cmd, env=self._env, cwd=self._cwd, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"console exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).text == "ok":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"console not up after 60 s:\n{self.log()}")

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
