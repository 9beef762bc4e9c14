"""Beat-driven refresh in real fleets: first tokens, rotation, duplicated beats."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from token_worker import TokenReader
from token_worker.tokens import PHASE_FLOOR

from ..support import record_publishes
from .conftest import THREE, Fleet, subprocess_env

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("probe.py")


def test_tokens_appear_within_one_interval_of_start(fleet: Fleet) -> None:
    interval = 2.0
    config = fleet.config(interval=interval)
    worker = fleet.start_worker(config)
    reader = TokenReader(fleet.redis_url, "stitch")
    got: dict[str, float] = {}
    for profile in THREE:
        reader.get(profile, wait=60)  # woken by the publish, not by polling
        got[profile] = time.time()
    ready = worker.wait_ready()
    since_start = {p: t - worker.started for p, t in got.items()}
    since_ready = {p: t - ready for p, t in got.items()}
    print(f"\nfirst token: longest wait {max(since_start.values()):.2f}s after the worker "
          f"process started, {max(since_ready.values()):.2f}s after it was ready "
          f"(interval {interval:g}s)")
    assert max(since_ready.values()) <= interval + 1.5, since_ready
    reader.close()


def test_rotation_ahead_of_expiry_while_a_reader_never_misses(fleet: Fleet) -> None:
    lifetime, margin, run = 10, 4.0, 30
    fleet.emulator.set_expires_in(lifetime)
    config = fleet.config(margin=margin, interval=1)
    fleet.start_worker(config)
    probe = subprocess.run(
        [sys.executable, str(PROBE), fleet.redis_url, "stitch", str(run), *THREE],
        capture_output=True, text=True, timeout=run + 90, env=subprocess_env())
    assert probe.returncode == 0, probe.stderr
    stats = json.loads(probe.stdout)
    for profile, s in stats.items():
        print(f"\n{profile}: {s['reads']} reads, {len(s['fingerprints'])} tokens seen, "
              f"least life left when read {s['min_left']:.2f}s, errors {len(s['errors'])}")
        assert s["errors"] == [], s["errors"][:3]
        # ~every 6s over 30s: at least four distinct tokens, each replaced early
        assert len(s["fingerprints"]) >= 4
        assert s["min_left"] >= 2.0
    calls = fleet.emulator.stats()["by_scope"]
    assert all(calls[scopes[0]] <= run / (lifetime - margin) + 3 for scopes in THREE.values())


def test_two_workers_with_beat_make_one_call_per_profile_per_lifetime(fleet: Fleet) -> None:
    lifetime, margin, run = 10, 4.0, 30
    fleet.emulator.set_expires_in(lifetime)
    config = fleet.config(margin=margin, interval=1)
    publishes: dict[str, list[float]] = {}
    collector = record_publishes(fleet.redis_url, publishes)
    workers = [fleet.start_worker(config), fleet.start_worker(config)]
    for w in workers:
        w.wait_ready()
    time.sleep(run)
    for w in workers:  # first, so a refresh in flight is published before we stop counting
        assert w.terminate() == 0
    time.sleep(0.5)
    collector.stop(5)
    stats = fleet.emulator.stats()["by_scope"]
    ratios = []
    for profile, scopes in THREE.items():
        times = publishes.get(profile, [])
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # a duplicate would publish within milliseconds of the first; rotations are ~6 s
        # apart, but the first token takes its profile's phase: it is kept at least
        # PHASE_FLOOR of the lead (0.6 s), then rotations keep to the margin
        lead = lifetime - margin
        assert all(g >= (lead / 2) for g in gaps[1:]), gaps
        cycles = 1 + sum(1 for g in gaps if g >= PHASE_FLOOR * lead * 0.9)
        calls = stats.get(scopes[0], 0)
        ratios.append(calls / cycles)
        print(f"\n{profile}: {calls} endpoint calls, {len(times)} publishes, {cycles} token "
              f"lifetimes, shortest gap {min(gaps, default=0):.2f}s")
        assert calls == len(times) == cycles
        assert cycles >= run / (lifetime - margin) - 1
    print(f"endpoint calls per profile per token lifetime (two workers, two beats): "
          f"{sum(ratios) / len(ratios):.2f}")
    assert ratios == [1.0] * len(THREE)
    for w in workers:  # both beats really ran
        assert "Sending due task token_worker.refresh_due" in w.log()
