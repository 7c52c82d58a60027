"""Markdown marks out of summaries (they are shown in Telegram's HTML mode)."""

from __future__ import annotations

import pytest

from hnpal.summaries.plain import plain_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (r"Some \*markdown\* \_bits\_ here.", "Some markdown bits here."),
        (
            "An *italic* and **bold** and _em_ word; snake_case_name stays.",
            "An italic and bold and em word; snake_case_name stays.",
        ),
        (
            "The rollout is in progress. * Deploys happen nightly.",
            "The rollout is in progress. Deploys happen nightly.",
        ),
        (
            "The rollout is in progress. in WAL mode readers never block.",
            "The rollout is in progress. In WAL mode readers never block.",
        ),
        ("See [the notes](https://example.com/a_(b)) and `fsync()`.", "See the notes and fsync()."),
        ("# Heading\n- one\n2. two\n> quoted", "Heading\none\ntwo\nquoted"),
        ("Tools, e.g. sqlite, etc. and v1.2. then more.", "Tools, e.g. sqlite, etc. and v1.2. then more."),
    ],
)
def test_plain_text(raw: str, clean: str) -> None:
    assert plain_text(raw) == clean
