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
from collections.abc import Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from hnpal.console import auth
from hnpal.console.pages import (
    COOKIE,
    CSP,
    LOGIN_COOKIE,
    Ctx,
    address_of,
    render,
    secure,
    view,
)
from hnpal.db.session import session_scope

log = logging.getLogger(__name__)


# --- login ------------------------------------------------------------------------------------------


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render("login.html", status, login_csrf=token, error=error, me=None)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure(request), path="/login")
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
    name, password, address = form.get("name", "")[:200], form.get("password", "")[:1100], address_of(request)
    try:
        with session_scope() as session:
            operator = auth.authenticate(session, name=name, password=password, address=address)
            token = auth.open_session(session, operator, address) if operator is not None else None
    except auth.TooManyAttempts as exc:
        return _login_page(request, 429, str(exc))
    if token is None:
        return _login_page(request, 401, "Wrong name or password.")
    response = RedirectResponse("/queue", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure(request), path="/")
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
