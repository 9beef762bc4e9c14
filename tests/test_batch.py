"""batch.py: several claimed refreshes in one task, against Redis and the emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from token_worker.batch import refresh_batch
from token_worker.config import load_config
from token_worker.outcomes import Outcome
from token_worker.refresh import Refresher
from token_worker.testing.configs import write_config
from token_worker.testing.emulator import Emulator
from token_worker.tokens import PHASE_FLOOR

from .support import raw_status

NAMES = [f"m{i:02d}" for i in range(12)]


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str, emulator: Emulator,
          secret_env: str) -> Iterator[Refresher]:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        profiles={n: ["client_paymentrequest"] for n in NAMES})
    refresher = Refresher.from_config(load_config(path))
    yield refresher
    refresher.close()


def test_each_profile_is_refreshed_under_its_own_lock_with_its_own_record(
        fleet: Refresher, emulator: Emulator) -> None:
    _, claims = fleet.claim_due(horizon=1.0, hold=60.0)
    assert len(claims) == len(NAMES)
    items = refresh_batch(fleet, NAMES)
    assert [i.profile for i in items] == NAMES
    assert all(i.result is not None and i.result.outcome is Outcome.REFRESHED for i in items)
    assert emulator.calls == len(NAMES)
    fingerprints = {i.result.fingerprint for i in items if i.result}
    assert len(fingerprints) == len(NAMES)  # one token each, none shared
    for name in NAMES:
        assert raw_status(fleet.store, name)["last_success_at"]
        assert fleet.store.lock_ttl(name) == 0  # every lock released
    assert fleet.store.claims() == {}  # every claim released with the bookkeeping


def test_refreshes_of_a_batch_run_at_once(fleet: Refresher, emulator: Emulator) -> None:
    emulator.set_latency(0.2)
    started = time.monotonic()
    items = refresh_batch(fleet, NAMES, threads=4)
    took = time.monotonic() - started
    assert all(i.result and i.result.outcome is Outcome.REFRESHED for i in items)
    # 12 calls of 0.2 s on 4 threads: three rounds, not twelve
    assert emulator.stats()["concurrent_max"] == 4
    assert took < 12 * 0.2


def test_a_batch_of_tokens_not_due_calls_nothing_and_frees_the_claims(
        fleet: Refresher, emulator: Emulator) -> None:
    refresh_batch(fleet, NAMES)
    fleet.claim_due(horizon=10_000.0, hold=60.0)
    assert set(fleet.store.claims()) == set(NAMES)
    again = refresh_batch(fleet, NAMES)
    assert {i.result.outcome for i in again if i.result} == {Outcome.NOT_DUE}
    assert emulator.calls == len(NAMES)
    assert fleet.store.claims() == {}


def test_an_unknown_profile_is_handed_back_and_the_rest_still_run(
        fleet: Refresher, emulator: Emulator) -> None:
    items = refresh_batch(fleet, ["m00", "not-ours", "m01", "m00"])
    assert [i.profile for i in items] == ["m00", "not-ours", "m01"]  # a repeat runs once
    assert items[1].unknown is not None and items[1].result is None
    assert emulator.calls == 2


def test_a_store_failure_is_reported_per_profile(fleet: Refresher, redis_url: str) -> None:
    fleet.store.redis.connection_pool.disconnect()
    fleet.store.redis.connection_pool.connection_kwargs["port"] = 1  # nothing listens
    items = refresh_batch(fleet, ["m00", "m01"])
    assert all(i.unreachable is not None and i.result is None for i in items)
    assert "127.0.0.1" in str(items[0].unreachable)


def test_first_tokens_of_a_batch_come_due_spread_over_the_lead(
        fleet: Refresher) -> None:
    refresh_batch(fleet, NAMES)
    tokens = [fleet.store.get_token(n) for n in NAMES]
    lead = 3600 - 600
    shares = sorted((t.refresh_at - t.issued_at) / lead for t in tokens if t)
    # twelve profiles fetched at once, spread past the first tenth of the lead, with no
    # two closer than a fortieth of it and no gap wider than a fifth
    assert shares[0] >= PHASE_FLOOR and shares[-1] < 1.0
    gaps = [b - a for a, b in zip(shares, shares[1:], strict=False)]
    assert min(gaps) > 1 / 40 and max(gaps) < 1 / 5, shares


def test_a_refresh_under_way_holds_its_claim_only_as_long_as_its_lock(
        fleet: Refresher, emulator: Emulator) -> None:
    import threading

    emulator.set_latency(0.6)
    fleet.claim_due(horizon=1.0, hold=600.0)  # a message that may wait ten minutes
    worker = threading.Thread(target=refresh_batch, args=(fleet, ["m00"]))
    worker.start()
    time.sleep(0.3)  # mid-call: a worker killed now must not block it for ten minutes
    until = fleet.store.claims()["m00"] - fleet.store.time()
    worker.join()
    assert 0 < until <= fleet.config.lock_ttl_seconds + 1.0
    assert "m00" not in fleet.store.claims()
