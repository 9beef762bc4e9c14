"""``run_demo``: one process tree that comes up, refreshes, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import free_port
from token_worker.store import connect_redis

from .conftest import THREE, Fleet, subprocess_env

pytestmark = pytest.mark.integration


def _run_demo(fleet: Fleet, config: str, duration: float) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from token_worker.demo import run_demo; "
            "run_demo(sys.argv[1], lifetime=8, duration=float(sys.argv[2]))")
    result = subprocess.run([sys.executable, "-c", code, config, str(duration)],
                            capture_output=True, text=True, timeout=duration + 60,
                            env=subprocess_env(), cwd=fleet.tmp)
    fleet.outputs.append(result.stdout + result.stderr)
    return result


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_starts_a_private_redis_when_none_answers_and_cleans_up(fleet: Fleet) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = fleet.config(redis_url=dead)
    result = _run_demo(fleet, str(config), duration=10)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    private = re.search(r"private redis-server (redis://\S+)", out)
    assert private, out[-2000:]
    final = out.rsplit("token_worker demo", 1)[1]
    for profile in THREE:
        assert re.search(rf"^{profile}\s+(valid|refresh_due)\s", final, re.M), final
    assert "demo stopped: worker exited with status 0; private redis-server stopped" in out
    pid = int(re.search(r"worker pid (\d+)", out)[1])  # type: ignore[index]
    assert _gone(pid)
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        connect_redis(private[1], socket_timeout=0.5).ping()


def test_demo_uses_the_configured_redis_under_the_demo_prefix(fleet: Fleet) -> None:
    config = fleet.config()
    result = _run_demo(fleet, str(config), duration=6)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "(prefix 'demo')" in result.stdout
    final = result.stdout.rsplit("token_worker demo", 1)[1]
    assert re.search(r"^payments\s+(valid|refresh_due)\s", final, re.M), final
    # nothing of the demo stays behind, and the production prefix was never used
    assert fleet.store_client().keys("demo:*") == []
    assert fleet.store_client().keys("*token_worker_demo*") == []
    assert fleet.store_client().keys("stitch:*") == []
