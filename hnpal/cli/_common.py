"""What every ``hnpal`` command module shares: the one-line error and the embedded servers' start.

The command modules (``main``, ``console``, ``memory``, ``ops``, ``users``) import from here, never from
each other, so :mod:`hnpal.cli.main` can import them all at the top without a cycle.
"""

from __future__ import annotations

import typer

from config.settings import get_settings


def err(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` in red on stderr; return the ``Exit`` (code ``code``) for the caller to raise."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def announce_embedded() -> None:
    """Start the embedded servers that the settings call for and say where they are."""
    from hnpal import runtime

    settings = get_settings()
    if settings.embedded_database:
        pg = runtime.ensure_embedded_postgres(settings)
        typer.echo(f"embedded PostgreSQL: {pg.url} (data in {pg.path})", err=True)
    if settings.embedded_redis:
        rd = runtime.ensure_embedded_redis(settings)
        typer.echo(f"embedded Redis: {rd.url} (data in {rd.path})", err=True)
