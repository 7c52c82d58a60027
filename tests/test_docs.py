"""The front door: the README stays short, and its real-run path comes right after the two commands."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_a_short_front_door_with_the_real_run_first() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 15 * 1024
    commands = readme.index("make test   # ")
    real = readme.index("## Run it for real")
    assert commands < real and "## " not in readme[commands:real].replace("## Run it for real", "")
    path = readme[real : readme.index("\n## ", real + 5)]
    for step in ("@BotFather", "OpenAI-compatible", "cp .env.example .env", ".venv/bin/hnpal doctor",
                 ".venv/bin/hnpal up", "docker-compose", "/start", "What a day costs", "bench/cost.py"):  # fmt: skip
        assert step in path, step
    assert (REPO / "bench" / "cost.py").exists() and (REPO / ".env.example").exists()
