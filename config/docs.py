"""The settings documented from the Settings model itself: ``.env.example`` and the README table
(``hnpal settings --format env|markdown`` prints them; tests check both files are complete)."""

from __future__ import annotations

from config.settings import Settings

HEADER = (
    "# HN Pal settings. Copy to .env and edit; every variable is optional (empty = the default).\n"
    "# Empty HNPAL_DATABASE_URL / HNPAL_REDIS_URL: HN Pal starts an embedded PostgreSQL / Redis under HNPAL_DATA_DIR.\n"
)


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True)
        if isinstance(value, dict):
            return ", ".join(value)
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)
    return "" if field.default is None else str(field.default)


def env_example() -> str:
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        default = "" if Settings.model_fields[name].default_factory is not None else _default(name)
        lines.append(f"# {field.description}\nHNPAL_{name.upper()}={default}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `HNPAL_{name.upper()}` | `{_default(name) or '(empty)'}` | {field.description} |")
    return "\n".join(rows)
