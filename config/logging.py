"""Logging for every HN Pal process: one line per record, secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys

_SECRET_PATTERNS = [
    # bot tokens: 123456:ABC-xyz...
    (re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b"), "***:***"),
    # API keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}\b"), "sk-***"),
    # passwords in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@"), r"\1***@"),
    # bearer tokens and libpq-style password=... pairs
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (re.compile(r"(\b(?:password|passwd)\s*=\s*)[^\s&'\",;]+", re.IGNORECASE), r"\1***"),
]


# The configured secrets themselves (whatever they look like), registered by configure_logging.
_known_secrets: set[str] = set()


def register_secrets(*values: str | None) -> None:
    """Mask these exact strings wherever they appear (short values are ignored: too many false hits)."""
    for value in values:
        if value and len(value) >= 6:
            _known_secrets.add(value)


def _register_configured_secrets() -> None:
    from urllib.parse import urlsplit

    from config.settings import get_settings

    settings = get_settings()
    values: list[str | None] = []
    for secret in (settings.telegram_token, settings.openai_api_key, settings.flower_basic_auth,
                   settings.telegram_webhook_secret, settings.telegram_callback_secret):  # fmt: skip
        if secret is not None:
            raw = secret.get_secret_value()
            values += [raw, raw.partition(":")[2] if secret is settings.flower_basic_auth else None]
    for url in (settings.database_url, settings.redis_url):
        try:
            values.append(urlsplit(url).password if url else None)
        except ValueError:
            continue
    register_secrets(*values)


def mask_secrets(text: str) -> str:
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretMaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(payload, default=str))


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once per process from the settings (HNPAL_LOG_LEVEL, HNPAL_LOG_FORMAT)."""
    if level is None or fmt is None:
        from config.settings import get_settings

        settings = get_settings()
        level = level or settings.log_level
        fmt = fmt or settings.log_format
    _register_configured_secrets()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(SecretMaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # alembic.runtime.plugins: seven "setup plugin" lines on every command that touches migrations
    for noisy in (
        "httpx",
        "httpcore",
        "urllib3",
        "trafilatura",
        "alembic.runtime.migration",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
