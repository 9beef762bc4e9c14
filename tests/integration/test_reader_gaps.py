"""Rotations leave readers no gap when their min_ttl comes from the config (item 10).

A small margin (5 s) with a 1 s beat interval and short tokens (8 s): a reader with the
old fixed ``min_ttl`` of 5 s refuses the old token before the new one is published, at
every rotation; a reader from ``TokenReader.from_config()`` (min_ttl = margin - interval
- timeout = 3 s) never does while refreshes succeed. The refresher runs in this process
on a 1 s tick, as beat would, against the emulator (with 0.2 s of latency, as Stitch has)
and a private redis-server.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import write_config
from token_worker import TokenReader, TokenUnavailable
from token_worker.config import load_config
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

pytestmark = pytest.mark.integration

MARGIN, INTERVAL, TIMEOUT, LIFETIME, LATENCY = 5, 1, 1, 8, 0.2
SECONDS = 20.0


def _beat(refresher: Refresher, stop: threading.Event) -> None:
    tick = time.monotonic()
    while not stop.is_set():
        for profile in refresher.due_profiles():
            refresher.refresh_profile(profile, scheduled=True)
        tick += INTERVAL
        stop.wait(max(0.0, tick - time.monotonic()))


def _read(reader: TokenReader, stop: threading.Event, errors: Counter[str],
          reads: list[int]) -> None:
    while not stop.is_set():
        try:
            reader.get("payments")
            reads[0] += 1
        except TokenUnavailable as exc:
            errors[exc.reason] += 1
        time.sleep(0.005)


def test_from_config_readers_see_no_gap_at_rotations_fixed_min_ttl_ones_do(
        tmp_path: Path, redis_url: str, emulator: Emulator, secret_env: str) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        margin=MARGIN, interval=INTERVAL, timeout=TIMEOUT)
    emulator.set_expires_in(LIFETIME)
    emulator.set_latency(LATENCY)
    refresher = Refresher.from_config(load_config(path))
    refresher.refresh_profile("payments")
    gapless = TokenReader.from_config(str(path))
    fixed = TokenReader.from_config(str(path), min_ttl=5)  # the old default, for all
    assert gapless.min_ttl_for("payments") == MARGIN - INTERVAL - TIMEOUT
    stop = threading.Event()
    errors: dict[str, Counter[str]] = {"gapless": Counter(), "fixed": Counter()}
    reads = {"gapless": [0], "fixed": [0]}
    threads = [threading.Thread(target=_beat, args=(refresher, stop), daemon=True)]
    for name, reader in (("gapless", gapless), ("fixed", fixed)):
        threads.append(threading.Thread(target=_read, daemon=True,
                                        args=(reader, stop, errors[name], reads[name])))
    calls = emulator.calls
    try:
        for t in threads:
            t.start()
        time.sleep(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        gapless.close()
        fixed.close()
        refresher.close()
    rotations = emulator.calls - calls
    print(f"\nrotations={rotations} reads={reads} errors={errors}")
    assert rotations >= 4, "the refresher did not rotate the token"
    assert reads["gapless"][0] > 100
    assert not errors["gapless"], f"gaps at rotation: {errors['gapless']}"
    # the fails-before half: the same fleet, a min_ttl that ignores the config
    assert errors["fixed"]["expired"] > 0, errors["fixed"]
