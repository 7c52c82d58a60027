"""Settings: defaults, parsing, and one clear line naming a bad setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.logging import mask_secrets
from config.settings import Settings, SettingsError, load_settings


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HNPAL_DATABASE_URL", "HNPAL_REDIS_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(_env_file=None)
    assert settings.embedded_database and settings.embedded_redis
    assert settings.openai_api_key is None  # the offline summarizer is the default
    assert str(settings.hn_api_base_url).startswith("https://hacker-news.firebaseio.com/")
    assert settings.content_dir.name == "content.rocksdb"


def test_env_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HNPAL_CRAWL_ALLOW_HOSTS", "127.0.0.1, Localhost")
    monkeypatch.setenv("HNPAL_ADMIN_IDS", "1,22")
    monkeypatch.setenv("HNPAL_LLM_PRICES", '{"m": {"input": "1.5", "output": "2"}}')
    monkeypatch.setenv("HNPAL_DATABASE_URL", "postgres://u:p@h/db")
    settings = load_settings()
    assert settings.crawl_allow_hosts == ["127.0.0.1", "localhost"]
    assert settings.admin_ids == [1, 22]
    assert str(settings.llm_prices["m"].input) == "1.5"
    assert settings.database_url == "postgresql://u:p@h/db"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("HNPAL_DATABASE_URL", "mysql://x", "HNPAL_DATABASE_URL"),
        ("HNPAL_REDIS_URL", "memcached://x", "HNPAL_REDIS_URL"),
        ("HNPAL_LOG_LEVEL", "LOUD", "HNPAL_LOG_LEVEL"),
        ("HNPAL_OPENAI_TIMEOUT", "-3", "HNPAL_OPENAI_TIMEOUT"),
        ("HNPAL_CONTENT_BLOCK_CACHE_MB", "lots", "HNPAL_CONTENT_BLOCK_CACHE_MB"),
        ("HNPAL_ADMIN_IDS", "1,two", "HNPAL_ADMIN_IDS"),
        ("HNPAL_REDIS_KEY_PREFIX", "bad prefix", "HNPAL_REDIS_KEY_PREFIX"),
    ],
)
def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HNPAL_DATABASE_URL", "mysql://admin:hunter2@db/x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)


def test_cli_stops_with_one_line_on_a_bad_setting() -> None:
    env = dict(os.environ, HNPAL_LOG_LEVEL="LOUD")
    proc = subprocess.run(
        [sys.executable, "-m", "hnpal.cli.main", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "HNPAL_LOG_LEVEL" in lines[0]


def test_env_example_lists_every_setting() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for field in Settings.model_fields:
        assert f"HNPAL_{field.upper()}=" in text, field


def test_log_masking() -> None:
    line = "token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw url postgresql://hnpal:s3cret@db/x key sk-abcdefghijkl"
    masked = mask_secrets(line)
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in masked
    assert "s3cret" not in masked and "postgresql://hnpal:***@db/x" in masked
    assert "sk-abcdefghijkl" not in masked


def test_env_example_as_dotenv_gives_the_defaults(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    for key in list(os.environ):
        if key.startswith("HNPAL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.content_dir == (tmp_path / "var" / "content.rocksdb")
    assert settings.embedded_database and settings.embedded_redis
    assert "gpt-4o-mini" in settings.llm_prices


def test_the_settings_doc_lists_every_setting() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    for field in Settings.model_fields:
        assert f"`HNPAL_{field.upper()}`" in text, field


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HNPAL_")}
    return {**env, **extra}


READ = (
    "import celeryconfig; from config.settings import get_settings; s = get_settings(); "
    "print(celeryconfig.broker_url); print(s.llm_daily_budget_usd); print(s.data_dir); print(s.content_dir)"
)


def test_env_file_is_found_from_another_working_directory(tmp_path) -> None:
    """`hnpal` and `celery` run from anywhere read the same .env: HNPAL_HOME's (the project folder's
    when unset), and a relative data directory is taken from that folder, not from the working one."""
    home = tmp_path / "hnpal-home"
    home.mkdir()
    (home / ".env").write_text(
        "HNPAL_REDIS_URL=redis://127.0.0.1:6399/3\nHNPAL_LLM_DAILY_BUDGET_USD=7.5\nHNPAL_DATA_DIR=var\n"
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    result = subprocess.run([sys.executable, "-c", READ], cwd=elsewhere, env=_clean_env(HNPAL_HOME=str(home)),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    broker, budget, data_dir, content = result.stdout.split()
    assert broker == "redis://127.0.0.1:6399/3" and budget == "7.5"
    assert data_dir == str(home / "var") and content == str(home / "var" / "content.rocksdb")
    assert not (elsewhere / "var").exists()

    # HNPAL_ENV_FILE wins over every other place
    other = tmp_path / "prod.env"
    other.write_text("HNPAL_LLM_DAILY_BUDGET_USD=2\nHNPAL_DATA_DIR=/srv/hnpal\n")
    result = subprocess.run([sys.executable, "-c", READ], cwd=elsewhere,
                            env=_clean_env(HNPAL_HOME=str(home), HNPAL_ENV_FILE=str(other)),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    _broker, budget, data_dir, _content = result.stdout.split()
    assert budget == "2" and data_dir == "/srv/hnpal"


def test_a_missing_env_file_named_by_hnpal_env_file_is_one_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "hnpal.cli.main", "usage"], cwd=tmp_path,
                            env=_clean_env(HNPAL_ENV_FILE=str(tmp_path / "nope.env")),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "HNPAL_ENV_FILE=" in result.stderr and "no such file" in result.stderr
