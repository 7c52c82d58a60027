"""docker-compose.yml: it validates, and it keeps the invariants the deployment relies on.

Runs ``docker-compose`` (Debian bookworm ships 1.29.2: ``apt-get install docker-compose``); ``config``
only parses and interpolates the file, so no Docker engine is needed.

The checks are hermetic: HNPAL_* variables of the calling shell are dropped and an empty ``--env-file``
replaces a developer's ``.env`` next to the compose file.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"

QUEUE_WORKERS = {
    "worker-default": "default",
    "worker-crawl": "crawl",
    "worker-content": "content",
    "worker-llm": "llm",
    "worker-telegram": "telegram",
}
LONG_RUNNING = {"postgres", "redis", *QUEUE_WORKERS, "beat", "bot", "flower", "console"}
EXPECTED_SERVICES = LONG_RUNNING | {"migrate"}
CONTENT_VOLUME = "content"
CONTENT_WRITER = "worker-content"
CONTENT_READERS = {"worker-llm", "bot", "console"}


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose); CI installs it")
    return exe


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory):
    """Run ``docker-compose --env-file <empty> -f docker-compose.yml <args>`` in a clean environment."""
    exe = _docker_compose()
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HNPAL_")}

    def run(*args: str, flower_auth: str | None = "admin:secret") -> subprocess.CompletedProcess[str]:
        env = dict(base_env)
        if flower_auth is not None:
            env["HNPAL_FLOWER_BASIC_AUTH"] = flower_auth
        return subprocess.run(
            [exe, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def _yaml_to_data(text: str) -> Any:
    """Parse YAML with PyYAML, which is not an HN Pal dependency.

    Falls back to the interpreter docker-compose itself runs on (1.29 is a Python program that
    depends on PyYAML).
    """
    try:
        import yaml
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)

    with open(_docker_compose(), "rb") as fh:
        first_line = fh.readline(200).decode(errors="replace").strip()
    if not (first_line.startswith("#!") and "python" in first_line):
        pytest.skip("PyYAML is not importable and docker-compose is not a Python script")
    interpreter = shlex.split(first_line[2:])
    proc = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def config(compose) -> dict[str, Any]:
    proc = compose("config")
    assert proc.returncode == 0, proc.stderr
    data = _yaml_to_data(proc.stdout)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(config) -> dict[str, dict[str, Any]]:
    return config["services"]


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def _option(tokens: list[str], *names: str) -> list[str]:
    """Every value given to any of ``names`` (``-Q x``, ``--queues=x`` ...)."""
    values = []
    for i, token in enumerate(tokens):
        for name in names:
            if token == name and i + 1 < len(tokens):
                values.append(tokens[i + 1])
            elif name.startswith("--") and token.startswith(name + "="):
                values.append(token[len(name) + 1 :])
    return values


def _is_celery(tokens: list[str], subcommand: str) -> bool:
    return bool(tokens) and Path(tokens[0]).name == "celery" and subcommand in tokens


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for each volume of a service, short or long syntax."""
    mounts = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
            modes = parts[2].split(",") if len(parts) > 2 else []
            mounts.append((source, target, "ro" in modes))
        else:
            source, target = str(vol.get("source", "")), str(vol.get("target", ""))
            mounts.append((source, target, bool(vol.get("read_only"))))
    return mounts


def test_compose_file_validates(compose) -> None:
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_flower_basic_auth_is_mandatory(compose) -> None:
    proc = compose("config", "-q", flower_auth=None)
    assert proc.returncode != 0
    assert "HNPAL_FLOWER_BASIC_AUTH" in proc.stderr


def test_service_list(compose) -> None:
    proc = compose("config", "--services")
    assert proc.returncode == 0, proc.stderr
    listed = set(proc.stdout.split())
    assert EXPECTED_SERVICES <= listed, f"missing services: {sorted(EXPECTED_SERVICES - listed)}"


def test_only_worker_content_writes_the_content_store(services) -> None:
    writers = {
        name
        for name, svc in services.items()
        for source, _target, read_only in _mounts(svc)
        if source == CONTENT_VOLUME and not read_only
    }
    readers = {
        name
        for name, svc in services.items()
        for source, _target, read_only in _mounts(svc)
        if source == CONTENT_VOLUME and read_only
    }
    assert writers == {CONTENT_WRITER}
    assert CONTENT_READERS <= readers
    assert CONTENT_WRITER not in readers


def test_worker_content_is_a_single_writer(services) -> None:
    svc = services[CONTENT_WRITER]
    tokens = _command(svc)
    assert _is_celery(tokens, "worker"), tokens
    assert _option(tokens, "-Q", "--queues") == ["content"]
    assert _option(tokens, "-c", "--concurrency") == ["1"]
    assert svc.get("deploy", {}).get("replicas", 1) == 1
    assert "scale" not in svc
    # Exactly one worker consumes the content queue.
    consumers = [
        name
        for name, s in services.items()
        if _is_celery(_command(s), "worker")
        and "content" in ",".join(_option(_command(s), "-Q", "--queues")).split(",")
    ]
    assert consumers == [CONTENT_WRITER]


def test_queue_workers(services) -> None:
    for name, queue in QUEUE_WORKERS.items():
        tokens = _command(services[name])
        assert _is_celery(tokens, "worker"), (name, tokens)
        assert _option(tokens, "-Q", "--queues") == [queue], name
        assert _option(tokens, "--prefetch-multiplier") == ["1"], name
        assert _option(tokens, "-n", "--hostname") == [f"{queue}@%h"], name
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    crawl = _command(services["worker-crawl"])
    assert _option(crawl, "-c", "--concurrency") == ["4"]
    llm = _command(services["worker-llm"])
    assert _option(llm, "-P", "--pool") == ["threads"]
    assert _option(llm, "-c", "--concurrency") == ["8"]


def test_exactly_one_beat(services) -> None:
    beats = [name for name, svc in services.items() if _is_celery(_command(svc), "beat")]
    assert beats == ["beat"]
    svc = services["beat"]
    assert svc.get("deploy", {}).get("replicas", 1) == 1
    assert _option(_command(svc), "-s", "--schedule") == ["/data/beat/celerybeat-schedule"]


def test_flower_requires_basic_auth(services) -> None:
    tokens = _command(services["flower"])
    assert _is_celery(tokens, "flower"), tokens
    assert _option(tokens, "--basic-auth") == []  # not on the command line, where `ps` shows it
    environment = services["flower"]["environment"]
    assert environment["FLOWER_BASIC_AUTH"] == "admin:secret"
    assert environment["HNPAL_REDIS_URL"]  # the shared settings still reach it


def test_console_is_published_on_loopback_only(services) -> None:
    console = services["console"]
    ports = [str(p.get("host_ip", "")) + ":" + str(p.get("published", "")) if isinstance(p, dict) else str(p)
             for p in console.get("ports", [])]  # fmt: skip
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
    assert "hnpal console" in " ".join(console["command"] if isinstance(console["command"], list)
                                       else [console["command"]])  # fmt: skip


def test_migrate_is_one_shot(services) -> None:
    svc = services["migrate"]
    assert _command(svc)[-2:] == ["db", "upgrade"]
    assert str(svc.get("restart", "no")) in {"no", "False", "false"}
    assert "healthcheck" not in svc


def test_long_running_services_have_healthchecks(services) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable"), f"{name} has no healthcheck"
        assert test != ["NONE"], name
    for name, queue in QUEUE_WORKERS.items():
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "inspect ping" in test and f"{queue}@$" in test, (name, test)


# --- every setting reaches every container --------------------------------------------------------

HNPAL_SERVICES = {*QUEUE_WORKERS, "beat", "bot", "flower", "migrate"}
FLOWER_ONLY = {"HNPAL_FLOWER_BASIC_AUTH"}  # given to Flower alone, as FLOWER_BASIC_AUTH


def _every_setting() -> set[str]:
    from config.settings import Settings

    return {f"HNPAL_{name.upper()}" for name in Settings.model_fields} - FLOWER_ONLY


def test_every_setting_is_passed_to_every_hnpal_service() -> None:
    """Read from the file itself (PyYAML resolves the anchors), so it runs without docker-compose too."""
    data = _yaml_to_data(COMPOSE_FILE.read_text())
    for name in HNPAL_SERVICES:
        environment = data["services"][name]["environment"]
        missing = _every_setting() - set(environment)
        assert not missing, (name, sorted(missing))
    assert not set(data["x-hnpal-env"]) & FLOWER_ONLY


def test_a_setting_in_the_env_file_reaches_every_container(tmp_path: Path) -> None:
    """`docker-compose config` with a .env that sets the daily budget and the score threshold: every HN Pal
    service gets them (they used to be dropped: only 13 settings were passed)."""
    exe = _docker_compose()
    env_file = tmp_path / ".env"
    env_file.write_text("HNPAL_LLM_DAILY_BUDGET_USD=3.5\nHNPAL_LLM_PAID_MIN_SCORE=120\nHNPAL_FLOWER_BASIC_AUTH=a:b\n")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HNPAL_")}
    proc = subprocess.run([exe, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"], env=base_env,
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    services = _yaml_to_data(proc.stdout)["services"]
    for name in HNPAL_SERVICES:
        environment = services[name]["environment"]
        assert environment["HNPAL_LLM_DAILY_BUDGET_USD"] == "3.5", name
        assert environment["HNPAL_LLM_PAID_MIN_SCORE"] == "120", name
        assert _every_setting() <= set(environment), name
