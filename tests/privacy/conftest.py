"""Privacy tests use the memory tests' row factory and the Telegram tests' running stack."""

from __future__ import annotations

from tests.memory.conftest import make  # noqa: F401  (fixture)
from tests.telegram.conftest import pytest_runtest_makereport, tg_stack  # noqa: F401  (fixture and hook)
