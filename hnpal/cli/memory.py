"""``hnpal memory ...``: what HN Pal keeps about a user's discussions and memory.

``memory_app`` is added to the root command by one ``app.add_typer(memory_app, name="memory")`` in
:mod:`hnpal.cli.main`; memory commands of other areas register on the same Typer object.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hnpal.cli._common import announce_embedded

memory_app = typer.Typer(help="A user's discussions and memory.", no_args_is_help=True)


@memory_app.command("stats")
def stats_cmd(
    telegram_id: Annotated[int, typer.Argument(help="The user's Telegram id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Context size, history length and whether compression applied, for the user's latest discussion."""
    import json

    from rich.console import Console
    from rich.table import Table

    from hnpal.conversations.service import stats
    from hnpal.db.session import session_scope

    announce_embedded()
    with session_scope() as session:
        try:
            found = stats(session=session, telegram_id=telegram_id)
        except LookupError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    latest = found["latest"]
    if latest is None:
        typer.echo(f"user {telegram_id}: no discussions yet")
        return
    table = Table(title=f"Discussions of user {telegram_id}: {found['conversations']} in all; the latest")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("post", latest["post"]),
        ("status", latest["status"]),
        ("context size", f"{latest['context_tokens']:,} tokens (budget {latest['context_budget_tokens']:,})"),
        ("  article", f"{latest['article_tokens']:,} tokens"),
        ("  comments / memory items / past talks",
         f"{latest['comments']} / {latest['memory_items']} / {latest['related_conversations']}"),
        ("history length", f"{latest['messages']:,} messages, {latest['history_chars']:,} characters"),
        ("compression applied", "yes" if latest["compression_applied"] else "no"),
        ("  folded into the summary", f"{latest['summarized_count']:,} messages ({latest['summary_chars']:,} chars)"),
        ("  verbatim", f"{latest['verbatim']:,} messages (the prompt keeps the last ones under the cap)"),
        ("prompt cap", f"{latest['prompt_cap_bytes']:,} bytes"),
        ("tokens / cost", f"{latest['total_tokens']:,} / ${latest['total_cost_usd']}"),
    ]  # fmt: skip
    for what, value in rows:
        table.add_row(what, str(value))
    Console().print(table)
