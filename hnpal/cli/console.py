"""``hnpal console`` (the operator console's web server) and ``hnpal operator add|passwd|disable``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from hnpal.cli._common import announce_embedded, err

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

console_app = typer.Typer()
operator_app = typer.Typer(help="Operators of the console: add, change a password, disable.", no_args_is_help=True)
console_app.add_typer(operator_app, name="operator")


@console_app.command("console")
def console_cmd(
    address: Annotated[str | None, typer.Option(help="Address to bind (default HNPAL_CONSOLE_ADDRESS).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default HNPAL_CONSOLE_PORT).")] = None,
) -> None:
    """Serve the operator console: review queue, users, silence protocol, costs, pipeline."""
    from config.settings import get_settings
    from hnpal.console.app import serve

    settings = get_settings()
    announce_embedded()
    serve(address or settings.console_address, port or settings.console_port)


def _password(password_stdin: bool) -> str:
    """The new password: from stdin (one line) with --password-stdin or HNPAL_OPERATOR_PASSWORD, else asked
    twice on the terminal. Never an argument: `ps` would show it."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get("HNPAL_OPERATOR_PASSWORD"):
        return os.environ["HNPAL_OPERATOR_PASSWORD"]
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _change(command: str, change: Callable[[Session], object], done: str) -> None:
    """Apply one change to the operators in its own transaction; a refused one is a one-line error."""
    from hnpal.console import auth
    from hnpal.db.session import session_scope

    announce_embedded()
    try:
        with session_scope() as session:
            change(session)
    except auth.AuthError as exc:
        raise err(f"hnpal operator {command}: {exc}", 2) from None
    typer.echo(done)


@operator_app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="Operator name (letters, digits, . _ - @).")],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin.")] = "reviewer",
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Add an operator (the password is hashed with argon2id)."""
    from hnpal.console import auth

    password = _password(password_stdin)
    _change(
        "add",
        lambda session: auth.add_operator(session, name=name, password=password, role=role),
        f"operator {name} added ({role})",
    )


@operator_app.command("passwd")
def passwd_cmd(
    name: Annotated[str, typer.Argument(help="Operator name.")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Set an operator's password (their sessions end)."""
    from hnpal.console import auth

    password = _password(password_stdin)
    _change(
        "passwd",
        lambda session: auth.set_password(session, name=name, password=password),
        f"password of {name} changed; their sessions ended",
    )


@operator_app.command("disable")
def disable_cmd(
    name: Annotated[str, typer.Argument(help="Operator name.")],
    enable: Annotated[bool, typer.Option("--enable", help="Enable the operator again instead.")] = False,
) -> None:
    """Disable an operator (their sessions end at once), or --enable them again."""
    from hnpal.console import auth

    _change(
        "disable",
        lambda session: auth.set_disabled(session, name=name, disabled=not enable),
        f"operator {name} {'enabled' if enable else 'disabled'}",
    )
