"""The trust review's fleet-level findings, each against real workers with beat."""

from __future__ import annotations

import time

import pytest

from token_worker import TokenReader, TokenUnavailable

from .conftest import THREE, Fleet

pytestmark = pytest.mark.integration


def test_a_token_key_gone_from_redis_is_fetched_at_the_next_tick(fleet: Fleet) -> None:
    # evicted (volatile-* policies pick token keys: the only keys with a TTL), lost in a
    # failover, or deleted by hand: it used to stay missing until the schedule said so
    config = fleet.config(interval=1, margin=600)
    fleet.start_worker(config)
    reader = TokenReader(fleet.redis_url, cache=False)
    try:
        for profile in THREE:
            reader.get(profile, wait=60)
        calls = fleet.emulator.calls
        rds = fleet.store_client()
        assert rds.delete("stitch:token:payments") == 1
        gone = time.monotonic()
        token = reader.get("payments", wait=10)
        back = time.monotonic() - gone
        print(f"\ntoken deleted by hand: back after {back:.2f}s (interval 1s)")
        assert back < 3.5
        time.sleep(2.5)  # a few more ticks: no further calls
        assert fleet.emulator.calls == calls + 1
        assert reader.get("payments").fingerprint == token.fingerprint
    finally:
        reader.close()


def test_workers_with_different_configs_never_undo_each_other(fleet: Fleet) -> None:
    # a rolling deploy adds "disbursements": old workers do not know it, new ones do
    old = fleet.config("old.toml", interval=1,
                       profiles={k: v for k, v in THREE.items() if k != "disbursements"})
    new = fleet.config("new.toml", interval=1)
    fleet.start_worker(old)
    fleet.start_worker(new)
    bare = TokenReader(fleet.redis_url, cache=False)  # no profile list: asks the registry
    rds = fleet.store_client()
    try:
        bare.get("disbursements", wait=60)
        for profile in THREE:
            bare.get(profile, wait=30)
        calls = fleet.emulator.calls
        unknown = missing_from_schedule = 0
        until = time.monotonic() + 6
        while time.monotonic() < until:
            try:
                bare.get("disbursements")
            except TokenUnavailable as exc:
                unknown += exc.reason == "unknown_profile"
            missing_from_schedule += rds.zscore("stitch:schedule", "disbursements") is None
            time.sleep(0.02)
        print(f"\nmixed configs over 6s: unknown_profile {unknown}, schedule entry missing "
              f"{missing_from_schedule} times, extra calls {fleet.emulator.calls - calls}")
        assert unknown == 0 and missing_from_schedule == 0
        assert fleet.emulator.calls == calls  # nobody refreshes what is not due
        assert sorted(rds.hkeys("stitch:profiles")) == sorted(THREE)
    finally:
        bare.close()


def test_a_refresh_reaching_a_worker_without_the_profile_is_handed_on(fleet: Fleet) -> None:
    # both workers consume one queue: a refresh of the profile only the new config has
    # lands on the old worker about half the time, and used to be dropped there
    old = fleet.config("old.toml", interval=1,
                       profiles={k: v for k, v in THREE.items() if k != "disbursements"})
    new = fleet.config("new.toml", interval=1)
    old_worker = fleet.start_worker(old)
    fleet.start_worker(new, beat=False)
    for worker in fleet.workers:
        worker.wait_ready()
    for attempt in range(6):
        result = fleet.cli(new, "refresh", "disbursements", "--force", "--wait", "15",
                           timeout=60)
        assert result.returncode == 0, (attempt, result.stdout + result.stderr)
    print(f"\n6 forced refreshes of a profile one of two workers lacks: all published; "
          f"handed on {old_worker.log().count('handing it on')} times")
    assert "refresh profile=disbursements skipped" not in old_worker.log()
