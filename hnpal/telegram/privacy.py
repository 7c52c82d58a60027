"""Memory and privacy commands (issue 6): /memory, /deletemydata, /export."""

from __future__ import annotations

from typing import Any

COMMANDS: dict[str, Any] = {}
BUTTONS: dict[str, Any] = {}
