"""Graceful shutdown: SIGTERM lets an in-flight refresh finish; SIGKILL costs only time."""

from __future__ import annotations

import time

import pytest

from tests.support import wait_until
from token_worker import TokenReader
from token_worker.config import load_config

from .conftest import Fleet

pytestmark = pytest.mark.integration

ONE = {"payments": ["client_paymentrequest"]}


def test_sigterm_during_a_refresh_lets_it_finish(fleet: Fleet) -> None:
    fleet.emulator.set_latency(3)
    config = fleet.config(profiles=ONE, retries=0, timeout=6)
    worker = fleet.start_worker(config)
    assert wait_until(lambda: fleet.emulator.calls >= 1, 60), "no refresh started"
    worker.proc.send_signal(15)  # SIGTERM, while the endpoint is still answering
    sent = time.monotonic()
    assert worker.proc.wait(30) == 0
    print(f"\nwarm shutdown took {time.monotonic() - sent:.2f}s")
    rds = fleet.store_client()
    assert rds.exists("stitch:token:payments")
    assert not rds.exists("stitch:lock:payments")
    log = worker.log()
    assert "refresh profile=payments outcome=refreshed" in log
    assert "Warm shutdown" in log or "warm shutdown" in log.lower()


def test_sigkill_leaves_a_lock_that_expires_and_the_next_tick_takes_over(
        fleet: Fleet) -> None:
    fleet.emulator.set_latency(3)
    path = fleet.config(profiles=ONE, retries=0, timeout=5)
    lock_ttl = load_config(path).lock_ttl_seconds
    first = fleet.start_worker(path)
    assert wait_until(lambda: fleet.emulator.calls >= 1, 60), "no refresh started"
    first.kill()  # the whole group: no process survives to publish
    killed = time.monotonic()
    rds = fleet.store_client()
    assert rds.pttl("stitch:lock:payments") > 0
    fleet.emulator.set_latency(0)

    fleet.start_worker(path)
    reader = TokenReader(fleet.redis_url, "stitch")
    try:
        reader.get("payments", wait=lock_ttl + 30)
    finally:
        reader.close()
    waited = time.monotonic() - killed
    print(f"\ntoken published {waited:.1f}s after SIGKILL (lock ttl {lock_ttl:g}s)")
    # nothing while the dead worker's lock lived, then the next tick's refresh
    assert lock_ttl - 2 <= waited <= lock_ttl + 15
    assert fleet.emulator.calls == 2
    # while the dead worker's claim lived (as long as its lock, plus 1 s) the new worker
    # sent nothing; then it re-sent the lapsed claim, once
    log = fleet.workers[1].log()
    assert "lapsed=1 profiles=payments" in log
    assert "outcome=done_elsewhere" not in log
