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
