"""``hnpal``: the operator and engineer command line (typer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from config.settings import SettingsError, get_settings
from hnpal.cli._common import announce_embedded, err
from hnpal.cli.console import console_app
from hnpal.cli.memory import memory_app
from hnpal.cli.ops import ops_app
from hnpal.cli.users import users_app

app = typer.Typer(help="HN Pal: a Hacker News companion for Telegram.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
content_app = typer.Typer(help="The RocksDB content store.", no_args_is_help=True)
embedded_app = typer.Typer(help="The embedded PostgreSQL and Redis under HNPAL_DATA_DIR.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(content_app, name="content")
app.add_typer(embedded_app, name="embedded")
app.add_typer(users_app, name="user")  # export (hnpal/cli/users.py)
app.add_typer(ops_app)  # up, metrics, quarantine (hnpal/cli/ops.py)
app.add_typer(console_app)  # console, operator add|passwd|disable (hnpal/cli/console.py)
app.add_typer(memory_app, name="memory")  # stats, and the memory commands (hnpal/cli/memory.py)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (not one line).")] = False,
) -> None:
    from config.logging import configure_logging

    get_settings()  # a bad setting stops here with one line
    configure_logging()


# --- db ---------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from hnpal import runtime
    from hnpal.db import migrate

    announce_embedded()
    migrate.upgrade(revision=revision)
    typer.echo(f"database at {migrate.current_revision(runtime.database_url()) or 'base'}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, or 'base'.")] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step; 'base' reverts all)."""
    from hnpal import runtime
    from hnpal.db import migrate

    announce_embedded()
    migrate.downgrade(revision=revision)
    typer.echo(f"database at {migrate.current_revision(runtime.database_url()) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the code's head."""
    from hnpal import runtime
    from hnpal.db import migrate

    announce_embedded()
    current, head = migrate.current_revision(runtime.database_url()), migrate.head_revision()
    state = "up to date" if current == head else "behind: run `hnpal db upgrade`"
    typer.echo(f"current={current or 'base'} head={head} ({state})")


# --- content ----------------------------------------------------------------------------------------
@content_app.command("get")
def content_get(
    hn_id: int,
    kind: Annotated[str, typer.Option(help="html, text, markdown, comments or hn_text.")] = "markdown",
) -> None:
    """Print one stored document."""
    from hnpal.content import KINDS, ContentStoreError
    from hnpal.content.host import reader

    if kind not in KINDS:
        raise err(f"--kind must be one of {', '.join(KINDS)}", 2)
    try:
        value = reader().get_text(hn_id, kind)
    except ContentStoreError as exc:
        raise err(str(exc)) from None
    if value is None:
        raise err(f"no {kind} stored for HN item {hn_id}")
    sys.stdout.write(value if value.endswith("\n") else value + "\n")


@content_app.command("stats")
def content_stats() -> None:
    """Print key counts and sizes per column family (JSON)."""
    from hnpal.content import ContentStoreError
    from hnpal.content.host import reader

    try:
        stats = reader().stats()
    except ContentStoreError as exc:
        raise err(str(exc)) from None
    typer.echo(json.dumps(stats, indent=2, default=str))


@content_app.command("init")
def content_init() -> None:
    """Create an empty content store (the content worker also does this on first start)."""
    from hnpal.content import ContentStore, ContentStoreError

    path = get_settings().content_dir
    try:
        ContentStore.open_writer(path).close()
    except ContentStoreError as exc:
        raise err(str(exc)) from None
    typer.echo(f"content store ready at {path}")


@content_app.command("backup")
def content_backup(
    dest: Path,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the content worker.")] = 300.0,
) -> None:
    """Take a consistent checkpoint into DEST while the system runs.

    When the content worker holds the store, the checkpoint is taken by it (a task on the `content`
    queue); otherwise this process opens the store itself.
    """
    from hnpal.content import ContentStore, ContentStoreError, ContentStoreLocked

    dest = dest.absolute()
    if dest.exists():
        raise err(f"{dest} already exists; give a new directory", 2)
    path = get_settings().content_dir
    try:
        with ContentStore.open_writer(path) as store:
            store.checkpoint(dest)
        typer.echo(f"checkpoint of {path} written to {dest}")
        return
    except ContentStoreLocked:
        pass  # the content worker runs: ask it
    except ContentStoreError as exc:
        raise err(str(exc)) from None
    from hnpal import jobs

    announce_embedded()
    result = jobs.send_now(jobs.CONTENT_BACKUP, str(dest))
    try:
        written = result.get(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - the worker's error (any type), or a timeout
        raise err(f"backup by the content worker failed: {exc}") from None
    typer.echo(f"checkpoint of {path} written to {written} by the content worker")


# --- pipeline ---------------------------------------------------------------------------------------
@app.command("extract")
def extract_cmd(
    source: Annotated[str, typer.Argument(help="A .html, .html.gz or .pdf file, or an http(s) URL.")],
    fmt: Annotated[str, typer.Option("--format", help="text or markdown.")] = "text",
) -> None:
    """Print the extraction of one page, through exactly the pipeline's code path."""
    from hnpal.crawl.extract import ExtractionError
    from hnpal.crawl.pages import load_page
    from hnpal.crawl.service import extract_page

    if fmt not in ("text", "markdown"):
        raise err("--format must be text or markdown", 2)
    try:
        page = load_page(source)
        extraction = extract_page(page)
    except (OSError, ExtractionError, ValueError) as exc:
        raise err(f"{source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - FetchError and friends: one clear line
        raise err(f"{source}: {exc}") from None
    typer.echo(extraction.text if fmt == "text" else extraction.markdown)
    typer.secho(
        f"[{extraction.method}, {len(extraction.text)} chars of text, {len(extraction.markdown)} of markdown]",
        err=True,
        fg=typer.colors.BRIGHT_BLACK,
    )


@app.command("fetch")
def fetch_cmd(
    lists: Annotated[list[str], typer.Option("--list", help="top, new, best, ask, show or job (repeatable).")] = [],  # noqa: B006
    limit: Annotated[int, typer.Option(help="Ids taken from each list.")] = 30,
    enqueue: Annotated[bool, typer.Option(help="Enqueue crawls for new posts.")] = True,
) -> None:
    """Fetch HN lists now (in this process) and upsert the posts; crawls go to the queue."""
    from contextlib import AbstractContextManager, nullcontext

    from hnpal import jobs
    from hnpal.db.session import session_scope
    from hnpal.ingest import service
    from hnpal.ingest.client import LISTS

    unknown = [x for x in lists if x not in LISTS]
    if unknown:
        raise err(f"unknown list(s) {unknown}; choose from {', '.join(LISTS)}", 2)
    announce_embedded()
    follow_ups: AbstractContextManager[object] = nullcontext() if enqueue else jobs.recording()  # --no-enqueue
    with follow_ups, session_scope() as session:
        report = service.fetch_lists(session=session, lists=lists or get_settings().hn_lists, limit=limit)
    typer.echo(json.dumps(report.as_dict()))


@app.command("crawl")
def crawl_cmd(
    hn_id: int,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the outcome (0: just enqueue).")] = 0.0,
) -> None:
    """Enqueue a crawl of one post (fetching the HN item first if it is not known yet)."""
    import time

    from sqlalchemy import select

    from hnpal import jobs
    from hnpal.db.session import session_scope
    from hnpal.ingest import service
    from hnpal.posts.models import Post

    announce_embedded()
    with jobs.recording(), session_scope() as session:  # storing the item starts nothing: the crawl is sent below
        post = session.scalar(select(Post).where(Post.hn_id == hn_id))
        if post is None:
            report = service.fetch_items(session=session, hn_ids=[hn_id])
            if not report.inserted and not report.updated:
                raise err(f"HN item {hn_id} could not be stored: {dict(report.skipped)}")
            post = session.scalar(select(Post).where(Post.hn_id == hn_id))
            assert post is not None  # stored just now, in this transaction
        if post.is_crawl_success:
            typer.echo(f"post {hn_id} is already crawled ({post.extraction_method}); re-queued nothing")
            return
        post.crawl_status, post.crawl_retry_count, post.crawl_error = "queued", 0, None
        post_id = post.id
    jobs.enqueue(None, jobs.CRAWL_POST, post_id)
    typer.echo(f"crawl of HN item {hn_id} (post {post_id}) enqueued on the crawl queue")
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        with session_scope() as session:
            post = session.get(Post, post_id)
            assert post is not None, f"post {post_id} was deleted"
            if post.crawl_status in ("success", "reused", "failed", "skipped"):
                typer.echo(f"{post.crawl_status}: {post.extraction_method or post.crawl_error or ''}")
                raise typer.Exit(0 if post.is_crawl_success else 1)
        time.sleep(0.5)
    if wait:
        raise err(f"no outcome after {wait:.0f}s (are the crawl and content workers running?)")


@app.command("import-jsonl")
def import_jsonl_cmd(
    posts: Annotated[Path, typer.Argument(help="JSONL export: one post object per line.")],
    content_dir: Annotated[
        Path | None, typer.Option(help="Directory with <hn_id>.html / .txt / .md files to import.")
    ] = None,
) -> None:
    """Import a JSONL export of posts (and their content files); re-runs add no duplicates."""
    from hnpal.importer import import_jsonl

    if not posts.is_file():
        raise err(f"{posts}: no such file", 2)
    if content_dir is not None and not content_dir.is_dir():
        raise err(f"{content_dir}: no such directory", 2)
    announce_embedded()
    report = import_jsonl(posts, content_dir=content_dir)
    typer.echo(
        f"imported {report.inserted} new and {report.updated} existing posts, "
        f"{report.content_files} content documents; skipped {report.skipped_total} line(s)"
    )
    for line_no, reason in report.skipped[:50]:
        typer.secho(f"  line {line_no}: {reason}", fg=typer.colors.YELLOW)
    if len(report.skipped) > 50:
        typer.secho(f"  ... and {len(report.skipped) - 50} more", fg=typer.colors.YELLOW)


# --- embedded ---------------------------------------------------------------------------------------
@embedded_app.command("start")
def embedded_start() -> None:
    """Start the embedded servers (only those whose URL is not configured)."""
    settings = get_settings()
    if not (settings.embedded_database or settings.embedded_redis):
        typer.echo("HNPAL_DATABASE_URL and HNPAL_REDIS_URL are both set: nothing embedded to start")
        return
    announce_embedded()


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded servers under HNPAL_DATA_DIR."""
    from hnpal.runtime import stop_embedded

    stopped = stop_embedded()
    typer.echo("stopped: " + ", ".join(stopped) if stopped else "no embedded server was running")


@app.command("usage")
def usage_cmd(
    user: Annotated[int | None, typer.Option(help="A user's Telegram id: their daily usage.")] = None,
    days: Annotated[int, typer.Option(help="How many days back (today included).")] = 7,
) -> None:
    """Tokens and cost of LLM calls per day (all calls, or one user's)."""
    from rich.console import Console
    from rich.table import Table

    from hnpal.db.session import session_scope
    from hnpal.usage.report import usage_rows

    if days < 1:
        raise err("--days must be at least 1", 2)
    announce_embedded()
    with session_scope() as session:
        try:
            title, columns, rows = usage_rows(session, telegram_id=user, days=days)
        except LookupError as exc:
            raise err(str(exc)) from None
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in ("date", "agent", "model") else "right")
    for row in rows:
        table.add_row(*[str(x) for x in row])
    Console().print(table)


@app.command("settings")
def settings_cmd(
    fmt: Annotated[str, typer.Option("--format", help="env (a .env template) or markdown (docs/settings.md).")] = "env",
) -> None:
    """Print every setting with its default and meaning."""
    from config.docs import env_example, markdown_table

    if fmt not in ("env", "markdown"):
        raise err("--format must be env or markdown", 2)
    typer.echo(env_example() if fmt == "env" else markdown_table())


# --- bot --------------------------------------------------------------------------------------------
@app.command("bot")
def bot_cmd() -> None:
    """Run the Telegram bot process: store each update, enqueue it, nothing else (polling or webhook)."""
    import asyncio

    from hnpal.telegram.bot import BotProcess

    announce_embedded()
    asyncio.run(BotProcess().run())


# --- demo -------------------------------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    timeout: Annotated[float, typer.Option(help="Seconds the pipeline may take.")] = 300.0,
    keep_data: Annotated[bool, typer.Option(help="Keep the previous demo's data instead of starting fresh.")] = False,
) -> None:
    """Run the main job offline: sandbox HN, embedded stack, real workers and beat; then stop it all."""
    from hnpal.demo import run_demo

    raise typer.Exit(run_demo(timeout=timeout, keep_data=keep_data))


# --- doctor -----------------------------------------------------------------------------------------
@app.command("doctor")
def doctor() -> None:
    """Check the configuration, PostgreSQL, Redis, the content store and the migration level."""
    from hnpal.doctor import run_checks

    failed = 0
    for check in run_checks():
        colour = {"ok": typer.colors.GREEN, "warn": typer.colors.YELLOW}.get(check.status, typer.colors.RED)
        line = f"{check.status.upper():4} {check.name:<11} {check.detail}"
        if check.fix:
            line += f"  → fix: {check.fix}"
        typer.secho(line, fg=colour)
        failed += check.status == "fail"
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    """The ``hnpal`` command. A configuration or connection error ends it with one line saying what
    failed and the fix (exit code 2 for a setting, 1 otherwise); ``--debug`` shows the traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        app(standalone_mode=True)
    except SettingsError as exc:
        typer.secho(f"hnpal: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        from hnpal.cli.errors import describe

        typer.secho(f"hnpal: {describe(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
