"""The ``hnpal`` command line, run as a user would run it (a real process, real servers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hnpal.db import migrate


def hnpal(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hnpal.cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_db_upgrade_downgrade_upgrade(fresh_database: str) -> None:
    env = {"HNPAL_DATABASE_URL": fresh_database}
    first = hnpal("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "alembic.runtime.plugins" not in first.stderr + first.stdout  # seven "setup plugin" lines, silenced
    assert f"database at {migrate.head_revision()}" in first.stdout
    down = hnpal("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "database at base" in down.stdout
    again = hnpal("db", "upgrade", env=env)
    assert again.returncode == 0, again.stderr
    current = hnpal("db", "current", env=env)
    assert "(up to date)" in current.stdout


def test_db_current_says_when_behind(fresh_database: str) -> None:
    result = hnpal("db", "current", env={"HNPAL_DATABASE_URL": fresh_database})
    assert result.returncode == 0
    assert "current=base" in result.stdout and "run `hnpal db upgrade`" in result.stdout


@pytest.fixture(scope="module")
def hn_api():  # type: ignore[no-untyped-def]
    """The sandbox Hacker News API (doctor checks that the configured one answers)."""
    from hnpal.sandbox.hn_replay import HNReplayServer

    with HNReplayServer() as server:
        yield server.api_url


def test_doctor_with_the_machine_servers(tmp_path: Path, hn_api: str) -> None:
    result = hnpal("doctor", env={"HNPAL_CONTENT_PATH": str(tmp_path / "store"), "HNPAL_HN_API_BASE_URL": hn_api})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    names = [line.split()[1] for line in lines]
    assert names == ["config", "postgresql", "redis", "content", "migrations", "hn", "telegram", "model"]
    assert lines[3].startswith("WARN") and "hnpal content init" in lines[3]
    assert lines[6].startswith("WARN") and "@BotFather" in lines[6]  # no token: the bot cannot start
    assert lines[7].startswith("OK") and "offline summarizer" in lines[7]  # no key: offline summaries
    assert all(line.startswith(("OK", "WARN")) for line in lines)


def test_doctor_checks_the_token_the_key_and_each_endpoint(tmp_path: Path, hn_api: str) -> None:
    """Each endpoint asked for real: a refused token and key, then accepted ones, then nothing listening."""
    from hnpal.sandbox.llm_api import LLMServer
    from hnpal.sandbox.telegram_api import TelegramServer

    with TelegramServer() as tg, LLMServer(api_key="sk-right-0123456789") as model:
        base = {"HNPAL_CONTENT_PATH": str(tmp_path / "store"), "HNPAL_HN_API_BASE_URL": hn_api,
                "HNPAL_TELEGRAM_BASE_URL": tg.base_url, "HNPAL_OPENAI_BASE_URL": model.base_url,
                "HNPAL_OPENAI_MODEL": model.model}  # fmt: skip
        wrong = hnpal("doctor", env={**base, "HNPAL_TELEGRAM_TOKEN": "999:not-the-token",
                                     "HNPAL_OPENAI_API_KEY": "sk-wrong-9876543210"})  # fmt: skip
        right = hnpal("doctor", env={**base, "HNPAL_TELEGRAM_TOKEN": tg.token,
                                     "HNPAL_OPENAI_API_KEY": "sk-right-0123456789"})  # fmt: skip
    down = hnpal("doctor", env={**base, "HNPAL_HN_API_BASE_URL": "http://127.0.0.1:9/v0/",
                                "HNPAL_TELEGRAM_TOKEN": "1:x", "HNPAL_OPENAI_API_KEY": "sk-x"})  # fmt: skip

    def lines(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return {line.split()[1]: line for line in result.stdout.strip().splitlines()}

    assert wrong.returncode == 1
    assert lines(wrong)["telegram"].startswith("FAIL") and "fix: copy the token" in lines(wrong)["telegram"]
    assert lines(wrong)["model"].startswith("FAIL") and "401" in lines(wrong)["model"]
    assert "fix: check HNPAL_OPENAI_API_KEY" in lines(wrong)["model"]
    assert "not-the-token" not in wrong.stdout and "sk-wrong-9876543210" not in wrong.stdout
    assert right.returncode == 0, right.stdout
    assert lines(right)["telegram"].startswith("OK") and "token accepted: @" in lines(right)["telegram"]
    assert lines(right)["model"].startswith("OK") and "key accepted" in lines(right)["model"]
    assert down.returncode == 1
    for name, fix in (("hn", "HNPAL_HN_API_BASE_URL"), ("telegram", "HNPAL_TELEGRAM_BASE_URL"),
                      ("model", "HNPAL_OPENAI_BASE_URL")):  # fmt: skip
        assert lines(down)[name].startswith("FAIL") and f"fix: check {fix}" in lines(down)[name], down.stdout


def test_doctor_reports_each_failure_with_a_fix(fresh_database: str, tmp_path: Path) -> None:
    result = hnpal(
        "doctor",
        env={
            "HNPAL_DATABASE_URL": fresh_database,  # not migrated
            "HNPAL_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
            "HNPAL_CONTENT_PATH": str(tmp_path / "store"),
        },
    )
    assert result.returncode == 1
    by_name = {line.split()[1]: line for line in result.stdout.strip().splitlines()}
    assert by_name["redis"].startswith("FAIL") and "fix: start Redis" in by_name["redis"]
    assert by_name["migrations"].startswith("FAIL") and "fix: run `hnpal db upgrade`" in by_name["migrations"]
    assert by_name["postgresql"].startswith("OK")


def test_doctor_reports_an_unreachable_database(tmp_path: Path) -> None:
    result = hnpal(
        "doctor",
        env={
            "HNPAL_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "HNPAL_CONTENT_PATH": str(tmp_path / "store"),
        },
    )
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if " postgresql " in f" {x} ")
    assert line.startswith("FAIL") and "fix: start PostgreSQL or correct HNPAL_DATABASE_URL" in line


@pytest.mark.slow
def test_embedded_stack_first_run_needs_no_servers(tmp_path: Path, hn_api: str) -> None:
    """No URLs configured: real PostgreSQL and Redis start under the data dir, migrated; doctor passes."""
    env = {"HNPAL_DATABASE_URL": "", "HNPAL_REDIS_URL": "", "HNPAL_DATA_DIR": str(tmp_path / "var"),
           "HNPAL_HN_API_BASE_URL": hn_api}  # fmt: skip
    try:
        start = hnpal("embedded", "start", env=env, timeout=300)
        assert start.returncode == 0, start.stderr
        assert "embedded PostgreSQL: postgresql://" in start.stderr
        assert "embedded Redis: unix://" in start.stderr
        doctor = hnpal("doctor", env=env)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "OK   migrations" in doctor.stdout
        assert "embedded server" in doctor.stdout
        # The servers outlive the process that started them, for the workers, beat and bot.
        current = hnpal("db", "current", env=env)
        assert "(up to date)" in current.stdout
    finally:
        stop = hnpal("embedded", "stop", env=env)
    assert "redis" in stop.stdout and "postgresql" in stop.stdout
    assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()


WRONG_DB = "postgresql+psycopg2://hnpal:hunter2@127.0.0.1:1/hnpal"


@pytest.mark.parametrize("command", [("db", "upgrade"), ("usage",), ("up", "--no-flower", "--no-bot")])
def test_a_wrong_database_url_is_one_line_with_a_fix(command: tuple[str, ...], tmp_path: Path) -> None:
    result = hnpal(*command, env={"HNPAL_DATABASE_URL": WRONG_DB, "HNPAL_DATA_DIR": str(tmp_path / "var")})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "127.0.0.1:1" in errors[0] and "HNPAL_DATABASE_URL" in errors[0] and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "alembic.runtime.plugins" not in result.stderr + result.stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = hnpal("--debug", "usage", env={"HNPAL_DATABASE_URL": WRONG_DB})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_up_says_why_it_cannot_start_when_redis_is_down(tmp_path: Path) -> None:
    result = hnpal("up", "--no-flower", env={"HNPAL_REDIS_URL": "redis://127.0.0.1:1/0",
                                             "HNPAL_DATA_DIR": str(tmp_path / "var")})  # fmt: skip
    assert result.returncode == 2
    assert "Redis at redis://127.0.0.1:1/0 does not answer" in result.stderr and "HNPAL_REDIS_URL" in result.stderr
    assert "nothing was started" in result.stderr and "Traceback" not in result.stderr
