"""The console's web application: Starlette routes, server-rendered Jinja2 pages (autoescaped), no
JavaScript at all (the Content-Security-Policy forbids scripts, so hostile text in a page cannot run).

Every page needs a session except ``/login`` and ``/healthz``. Every POST carries the session's CSRF
token (the login form a pre-session one, double-submitted in a cookie); a POST without it is refused
with 403. Roles: a viewer reads the queue, costs, the pipeline and analytics without personal data; a
reviewer also decides, sees personal data and acts on users; an admin also deletes accounts and adds
edit tags.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from config.settings import get_settings
from hnpal.console import auth
from hnpal.db.session import session_scope

log = logging.getLogger(__name__)
COOKIE = "hnpal_console"
LOGIN_COOKIE = "hnpal_console_login"
TEMPLATES = Path(__file__).with_name("templates")
CSP = (
    "default-src 'none'; script-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def safe_url(value: Any) -> str:
    """A link target only when it is http(s); anything else (``javascript:``, ``data:``) becomes '#'."""
    url = str(value or "").strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "#"
    return url if scheme in ("http", "https") else "#"


env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True))
env.filters["safe_url"] = safe_url


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(**context), status_code=status)


@dataclass
class Ctx:
    request: Request
    session: Any
    principal: auth.Principal
    form: dict[str, Any]
    after: list[Callable[[], None]] = field(default_factory=list)  # run after the commit (enqueue tasks)

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        settings = get_settings()
        return render(name, status, me=self.principal, csrf=self.principal.csrf, settings=settings,
                      pii=self.principal.can("reviewer"), **context)  # fmt: skip

    def form_list(self, key: str) -> list[str]:
        return list(self.form.get(f"__list__{key}", []))


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _secure(request: Request) -> bool:
    return get_settings().console_https or request.url.scheme == "https"


def view(role: str = "viewer") -> Callable[[Callable[[Ctx], Response]], Callable[[Request], Any]]:
    """A page that needs a session with at least ``role``; POSTs need the CSRF token."""

    def wrap(fn: Callable[[Ctx], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            form: dict[str, Any] = {}
            if request.method == "POST":
                raw = await request.form()
                form = {k: v for k, v in raw.items() if isinstance(v, str)}
                for key in set(raw.keys()):
                    form[f"__list__{key}"] = [v for v in raw.getlist(key) if isinstance(v, str)]
            return await run_in_threadpool(_dispatch, fn, role, request, form)

        endpoint.__name__ = fn.__name__
        return endpoint

    return wrap


def _dispatch(fn: Callable[[Ctx], Response], role: str, request: Request, form: dict[str, Any]) -> Response:
    after: list[Callable[[], None]] = []
    with session_scope() as session:
        principal = auth.resolve(session, request.cookies.get(COOKIE))
        if principal is None:
            if request.method == "POST":
                return render("error.html", 403, message="Your session has ended: sign in again.", me=None)
            return RedirectResponse("/login", status_code=303)
        if request.method == "POST" and not auth.same(form.get("csrf"), principal.csrf):
            return render("error.html", 403, message="This form has expired (CSRF check): reload the page.",
                          me=principal)  # fmt: skip
        if not principal.can(role):
            return render("error.html", 403, message=f"This needs the {role} role.", me=principal)
        ctx = Ctx(request, session, principal, form, after)
        response = fn(ctx)
    for step in after:  # after the commit: the rows these tasks name exist
        try:
            step()
        except Exception:  # the sweeps resend what could not be enqueued
            log.exception("could not enqueue after a console action; the sweep will")
    return response


# --- login ------------------------------------------------------------------------------------------


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render("login.html", status, login_csrf=token, error=error, me=None)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/login")
    return response


async def login(request: Request) -> Response:
    if request.method == "GET":
        return _login_page(request)
    raw = await request.form()
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    if not auth.same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        return render("error.html", 403, message="This form has expired (CSRF check): reload the page.", me=None)
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: dict[str, str]) -> Response:
    name, password, address = form.get("name", "")[:200], form.get("password", "")[:1100], _address(request)
    try:
        with session_scope() as session:
            operator = auth.authenticate(session, name=name, password=password, address=address)
            token = auth.open_session(session, operator, address) if operator is not None else None
    except auth.TooManyAttempts as exc:
        return _login_page(request, 429, str(exc))
    if token is None:
        return _login_page(request, 401, "Wrong name or password.")
    response = RedirectResponse("/queue", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@view()
def logout(ctx: Ctx) -> Response:
    auth.close_session(ctx.session, ctx.principal)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    def check() -> bool:
        from sqlalchemy import text

        try:
            with session_scope() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001
            return False

    ok = await run_in_threadpool(check)
    return PlainTextResponse("ok" if ok else "database unavailable", status_code=200 if ok else 503)


async def home(request: Request) -> Response:
    return RedirectResponse("/queue", status_code=303)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response


def create_app() -> Starlette:
    from hnpal.console import views

    routes = [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        *views.routes(),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])


def serve(address: str, port: int) -> None:
    """Serve the console (uvicorn, one process; sync pages run in its thread pool)."""
    import uvicorn

    from hnpal.db.session import get_engine

    get_engine()  # fail now, with the database's own message, rather than at the first page

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # SIGTERM/SIGINT: finish the requests in flight and exit with 0 (uvicorn's own handler raises
            # the signal again after its shutdown, and `hnpal up` would report the exit as a failure).
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    config = uvicorn.Config(create_app(), host=address, port=port, log_level="warning", access_log=False,
                            server_header=False)  # fmt: skip
    print(f"console on http://{address}:{port}/ (sign in with an operator: `hnpal operator add`)", flush=True)
    Server(config).run()
