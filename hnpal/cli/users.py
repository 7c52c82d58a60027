"""``hnpal user``: one user's data (``hnpal user export TELEGRAM_ID``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hnpal.cli._common import announce_embedded, err

users_app = typer.Typer(help="One user's data: export it.", no_args_is_help=True)


@users_app.command("export")
def export_cmd(
    telegram_id: Annotated[int, typer.Argument(help="The user's Telegram id.")],
    fmt: Annotated[str, typer.Option("--format", help="json or md (Markdown).")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (or directory) to write; default: stdout.")
    ] = None,
) -> None:
    """Export everything HN Pal holds about one user, as JSON or Markdown.

    Profile, preferences, saved posts, deliveries and reactions, conversations, memory and LLM usage.
    The export is written to audit_log."""
    from sqlalchemy import select

    from hnpal.db.session import session_scope
    from hnpal.privacy import service as privacy
    from hnpal.users.models import User

    fmt = fmt.lower().lstrip(".")
    fmt = "md" if fmt == "markdown" else fmt
    if fmt not in privacy.EXPORT_FORMATS:
        raise err(f"--format must be json or md, not {fmt!r}", 2)
    if output is not None and output.is_dir() is False and not output.parent.exists():
        raise err(f"cannot write {output}: the directory {output.parent} does not exist", 2)
    announce_embedded()
    with session_scope() as session:
        user = session.scalar(select(User).where(User.telegram_id == telegram_id))
        if user is None:
            raise err(f"no user with Telegram id {telegram_id}")
        filename, body = privacy.export(session=session, user=user, fmt=fmt, actor_type="admin")
    if output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    target = output / filename if output.is_dir() else output
    target.write_bytes(body)
    typer.echo(f"wrote {len(body):,} bytes to {target}", err=True)
