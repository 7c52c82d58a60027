"""The redelivery settings the kill tests rely on: the visibility timeout stays above every countdown, and
a worker looks for a dead worker's messages (and lets go of the restore lock) in step with the timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

import celeryconfig
from config.settings import Settings
from tests.conftest import REPO


def test_the_timeout_must_exceed_the_longest_countdown() -> None:
    with pytest.raises(ValidationError, match="HNPAL_BROKER_VISIBILITY_TIMEOUT .* must exceed HNPAL_MAX_COUNTDOWN"):
        Settings(broker_visibility_timeout=600, max_countdown=600)
    defaults = Settings()
    assert (defaults.broker_visibility_timeout, defaults.max_countdown) == (7200, 3600)


def test_defaults_keep_kombus_restore_cadence() -> None:
    options = celeryconfig.broker_transport_options
    assert options["visibility_timeout"] == 7200 > celeryconfig.MAX_COUNTDOWN == 3600
    assert (options["unacked_restore_interval"], options["unacked_restore_throttle"]) == (10, 10)
    assert options["unacked_mutex_expire"] == 300
    assert celeryconfig.beat_schedule["digests-sweep"]["schedule"] == 300


def test_a_short_timeout_is_looked_for_every_second() -> None:
    code = (
        "import celeryconfig, json; from hnpal.crawl import service as crawl; from hnpal.deliveries import runs; "
        "print(json.dumps({**celeryconfig.broker_transport_options, "
        "'sweep': celeryconfig.beat_schedule['digests-sweep']['schedule'], "
        "'stale': [crawl.STALE_IN_FLIGHT.total_seconds(), crawl.STALE_HANDOFF.total_seconds(), "
        "runs.STALE_DIGEST.total_seconds()]}))"
    )
    env = {**os.environ, "HNPAL_BROKER_VISIBILITY_TIMEOUT": "8", "HNPAL_MAX_COUNTDOWN": "4"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    options = json.loads(out.stdout.strip().splitlines()[-1])
    assert options["visibility_timeout"] == 8
    assert (options["unacked_restore_interval"], options["unacked_restore_throttle"]) == (1, 1)
    assert options["unacked_mutex_expire"] == 8
    assert options["sweep"] == 8  # the digest sweep runs as often, and work untouched that long counts as lost
    assert options["stale"] == [8, 8, 8]


def test_defaults_keep_the_sweeps_thresholds() -> None:
    from hnpal.crawl import service as crawl
    from hnpal.deliveries import runs

    assert crawl.STALE_IN_FLIGHT.total_seconds() == 2 * 3600  # as before the setting existed
    assert crawl.STALE_HANDOFF.total_seconds() == 15 * 60
    assert runs.STALE_DIGEST.total_seconds() == 10 * 60
