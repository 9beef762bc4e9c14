"""ops/ against a real fleet: a ``celery worker --beat`` (prefork) with its /metrics, the
emulator, a private Redis. Forced refreshes go through the workers, a broken secret is
diagnosed from the script's one line, and the fix needs no restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, SECRET, free_port, wait_until
from tests.test_metrics import scrape, value
from token_worker.testing.emulator import Emulator

from .conftest import Fleet, subprocess_env

pytestmark = pytest.mark.integration

OPS = REPO / "ops"


def run(fleet: Fleet, script: str, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(TOKEN_WORKER_CONFIG=str(config))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    out = subprocess.run([str(OPS / script), *args], capture_output=True, text=True, env=env,
                         cwd=fleet.tmp, timeout=90)
    fleet.outputs.append(out.stdout + out.stderr)  # searched for leaks at teardown
    return out


def test_force_refresh_through_workers_and_a_broken_secret_diagnosed(
        fleet: Fleet, emulator: Emulator) -> None:
    secret_file = fleet.tmp / "stitch-secret"
    secret_file.write_text(SECRET)
    port = free_port()
    config = fleet.config(profiles={"payments": ["client_paymentrequest"],
                                    "refunds": ["client_refund"]})
    config.write_text(
        config.read_text().replace('client_secret_env = "STITCH_CLIENT_SECRET"',
                                   f'client_secret_file = "{secret_file}"')
        + f'\n[metrics]\nport = {port}\nhost = "127.0.0.1"\n')
    worker = fleet.start_worker(config, concurrency=2)
    worker.wait_ready()
    # beat's first tick publishes both tokens
    assert wait_until(lambda: run(fleet, "check", "60", config=config).returncode == 0, 30)

    before = emulator.stats()["calls"]
    out = run(fleet, "force-refresh", "--all", "--wait", "30", config=config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "force-refresh: OK payments, refunds: new tokens published"
    assert emulator.stats()["calls"] == before + 2

    # the worker's endpoint sums its pool children: initial + forced refresh per profile
    m = scrape(port)
    for profile in ("payments", "refunds"):
        assert value(m, "token_worker_refresh_total", profile=profile,
                     outcome="refreshed") == 2
        assert value(m, "token_worker_token_request_duration_seconds_count",
                     profile=profile, result="ok") == 2
    assert value(m, "token_worker_up") == 1

    # a deliberately broken secret: the one line says what status reports
    secret_file.write_text("not-the-secret")
    out = run(fleet, "force-refresh", "payments", "--wait", "4", config=config)
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("force-refresh: FAILED (exit 1): payments: FAILED:")
    assert "invalid_client" in line
    assert value(scrape(port), "token_worker_refresh_consecutive_failures",
                 profile="payments") >= 1
    assert run(fleet, "check", "60", config=config).returncode == 0  # still served

    # fixed in place: the worker reads the file on every request, no restart
    secret_file.write_text(SECRET)
    out = run(fleet, "force-refresh", "payments", "--wait", "30", config=config)
    assert out.returncode == 0, out.stderr
    assert value(scrape(port), "token_worker_refresh_consecutive_failures",
                 profile="payments") == 0
