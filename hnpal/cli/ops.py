"""Operator commands: ``hnpal up``, ``hnpal metrics [serve]``, ``hnpal quarantine list|retry|drop``.

Added to the root command by one ``app.add_typer(ops_app)`` in :mod:`hnpal.cli.main`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hnpal.cli._common import announce_embedded, err

ops_app = typer.Typer()
metrics_app = typer.Typer(
    help="The pipeline's Prometheus metrics: print them, or `serve` them over HTTP.", invoke_without_command=True
)
quarantine_app = typer.Typer(
    help="Work that failed for good: poison Telegram updates, failed crawls, digests and summaries.",
    no_args_is_help=True,
)
ops_app.add_typer(metrics_app, name="metrics")
ops_app.add_typer(quarantine_app, name="quarantine")


# --- up ---------------------------------------------------------------------------------------------
@ops_app.command("up")
def up_cmd(
    crawl_concurrency: Annotated[int, typer.Option(min=1, max=64, help="Processes of the crawl worker.")] = 2,
    default_concurrency: Annotated[int, typer.Option(min=1, max=64, help="Processes of the default worker.")] = 2,
    llm_threads: Annotated[int, typer.Option(min=1, max=256, help="Threads of the llm worker.")] = 4,
    telegram_threads: Annotated[int, typer.Option(min=1, max=256, help="Threads of the telegram worker.")] = 8,
    flower: Annotated[bool, typer.Option(help="Run Flower (HNPAL_FLOWER_ADDRESS/PORT, basic auth).")] = True,
    metrics: Annotated[bool, typer.Option(help="Serve the pipeline's metrics (HNPAL_METRICS_PORT).")] = True,
    bot: Annotated[bool, typer.Option(help="Run the bot (needs HNPAL_TELEGRAM_TOKEN).")] = True,
    console: Annotated[bool, typer.Option(help="Run the operator console (HNPAL_CONSOLE_ADDRESS/PORT).")] = True,
    stop_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a worker may take to finish its running tasks on shutdown.")
    ] = 120.0,
    status_interval: Annotated[
        float, typer.Option(min=1, help="Seconds between status blocks when the output is not a terminal.")
    ] = 60.0,
    keep_embedded: Annotated[
        bool, typer.Option(help="Leave the embedded PostgreSQL and Redis running on exit.")
    ] = False,
) -> None:
    """Run the whole system on this machine: workers per queue, one beat, the bot, Flower, metrics and the
    operator console.

    Restarts a crashed child with back-off; Ctrl-C or SIGTERM stops everything warmly (no task lost).
    """
    from hnpal.ops.supervisor import Options, UpError, run_up

    options = Options(
        crawl_concurrency=crawl_concurrency,
        default_concurrency=default_concurrency,
        llm_threads=llm_threads,
        telegram_threads=telegram_threads,
        flower=flower,
        metrics=metrics,
        console=console,
        bot=bot,
        stop_timeout=stop_timeout,
        status_interval=status_interval,
        keep_embedded=keep_embedded,
    )
    try:
        code = run_up(options)
    except UpError as exc:
        raise err(f"hnpal up: {exc}", 2) from None
    raise typer.Exit(code)


# --- metrics ----------------------------------------------------------------------------------------
@metrics_app.callback()
def metrics_print(ctx: typer.Context) -> None:
    """Print the pipeline's metrics in the Prometheus text format (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    from hnpal.ops.metrics import render

    announce_embedded()
    typer.echo(render(), nl=False)


@metrics_app.command("serve")
def metrics_serve(
    address: Annotated[str | None, typer.Option(help="Address to bind (default HNPAL_METRICS_ADDRESS).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default HNPAL_METRICS_PORT).")] = None,
) -> None:
    """Serve the metrics on http://ADDRESS:PORT/metrics until stopped."""
    from config.settings import get_settings
    from hnpal.ops.metrics import serve

    settings = get_settings()
    announce_embedded()
    try:
        serve(address=address or settings.metrics_address, port=port or settings.metrics_port)
    except OSError as exc:
        raise err(f"cannot serve metrics on {address or settings.metrics_address}:{port}: {exc}") from None


# --- quarantine -------------------------------------------------------------------------------------
@quarantine_app.command("list")
def quarantine_list(
    kind: Annotated[str | None, typer.Option(help="update, crawl, digest or summary (default: all).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many of each kind.")] = 100,
) -> None:
    """List what failed for good, with its error (REF is what retry and drop take)."""
    from hnpal.db.session import session_scope
    from hnpal.ops.quarantine import QuarantineError, list_failed

    announce_embedded()
    try:
        with session_scope() as session:
            items = list_failed(session=session, kind=kind, limit=limit)
    except QuarantineError as exc:
        raise err(str(exc), 2) from None
    if not items:
        typer.echo("nothing failed for good" + (f" (kind {kind})" if kind else ""))
        return
    for item in items:
        when = f"{item.when:%Y-%m-%d %H:%M}" if item.when else "-"
        error = " ".join(item.error.split())[:160] or "(no error recorded)"
        typer.echo(f"{item.ref:<16} {when:<16} {item.detail}\n{'':<16} error: {error}")
    typer.echo(f"{len(items)} item(s); `hnpal quarantine retry REF` or `hnpal quarantine drop REF`")


@quarantine_app.command("retry")
def quarantine_retry(
    ref: Annotated[str, typer.Argument(help="KIND:ID from `list` (update:812, crawl:45, digest:9).")],
) -> None:
    """Reset the row and enqueue its task again (after the commit)."""
    from hnpal import jobs
    from hnpal.db.session import session_scope
    from hnpal.ops.quarantine import QuarantineError, retry

    announce_embedded()
    try:
        with session_scope() as session:
            job = retry(session=session, ref=ref)
    except QuarantineError as exc:
        raise err(str(exc), 2) from None
    jobs.enqueue(None, job.task, *job.args)
    typer.echo(f"{ref}: reset; {job.task}{list(job.args)} enqueued")


@quarantine_app.command("drop")
def quarantine_drop(
    ref: Annotated[str, typer.Argument(help="KIND:ID from `list`.")],
) -> None:
    """Set it aside for good (a poison update is deleted; a crawl or digest stays failed, off the list)."""
    from hnpal.db.session import session_scope
    from hnpal.ops.quarantine import QuarantineError, drop

    announce_embedded()
    try:
        with session_scope() as session:
            done = drop(session=session, ref=ref)
    except QuarantineError as exc:
        raise err(str(exc), 2) from None
    typer.echo(f"{ref}: {done}")
