"""The pages' common ground: the templates (autoescaped), the request context, and the ``view`` decorator
that checks the session, the role and the CSRF token of every page but ``/login`` and ``/healthz``, and
runs the page in one transaction (jobs a page enqueues go out after its commit)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

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

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        settings = get_settings()
        return render(name, status, me=self.principal, csrf=self.principal.csrf, settings=settings,
                      pii=self.principal.can("reviewer"), **context)  # fmt: skip

    def form_list(self, key: str) -> list[str]:
        return list(self.form.get(f"__list__{key}", []))


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def secure(request: Request) -> bool:
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
        response = fn(Ctx(request, session, principal, form))  # its jobs are sent after this commit
    return response
