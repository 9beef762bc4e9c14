"""The refresher and the reader run on the clock they are given, not on a patched one."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from token_worker import TokenReader, TokenUnavailable
from token_worker.clock import SYSTEM
from token_worker.config import Config
from token_worker.outcomes import Outcome, Reason
from token_worker.refresh import Refresher
from token_worker.store import TokenStore
from token_worker.testing.clock import ManualClock
from token_worker.testing.emulator import Emulator

from .support import make_token, wait_until


def test_retry_pauses_go_through_the_refreshers_clock(config: Config,
                                                      emulator: Emulator) -> None:
    clock = ManualClock()
    refresher = Refresher(config, Refresher.from_config(config).store,
                          Refresher.from_config(config).client, clock=clock.clock)
    emulator.set_faults([{"mode": "http_error", "status": 503, "count": 2}])
    started = time.monotonic()
    try:
        result = refresher.refresh_profile("payments")
    finally:
        refresher.close()
    assert result.outcome is Outcome.REFRESHED and emulator.calls == 3
    assert len(clock.sleeps) == 2 and all(s > 0 for s in clock.sleeps)
    assert time.monotonic() - started < 2  # no real pause was taken


def test_a_forced_wait_ends_at_its_deadline_on_the_given_clock(config: Config) -> None:
    clock = ManualClock()
    base = Refresher.from_config(config)
    refresher = Refresher(config, base.store, base.client, clock=clock.clock)
    refresher.store.acquire_lock("payments", 60)
    # a wait of an hour ends when the clock says so, not after an hour
    threading.Timer(0.3, clock.advance, (3601,)).start()
    started = time.monotonic()
    try:
        result = refresher.refresh_profile("payments", force=True, wait_seconds=3600)
    finally:
        refresher.close()
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.LOCK_BUSY)
    assert 0.25 < time.monotonic() - started < 3


def test_reader_cache_and_deadlines_follow_the_given_clock(store: TokenStore,
                                                           redis_url: str) -> None:
    clock = ManualClock()
    store.publish("payments", make_token(store, 300))
    reader = TokenReader(redis_url, clock=clock.clock, cache_max_age=5)
    try:
        reader.get("payments")
        assert wait_until(reader._listening, 5)  # the cache serves only while subscribed
        first = reader.get("payments")
        assert 299 < first.expires_in <= 300
        store.redis.delete(store.keys.token("payments"))  # no event: the cache cannot know
        clock.advance(4)
        assert reader.get("payments") is first  # within cache_max_age on our clock
        assert 295 < first.expires_in <= 296  # its deadline is on our clock too
        clock.advance(2)
        with pytest.raises(TokenUnavailable):  # past cache_max_age: Redis is asked again
            reader.get("payments")
    finally:
        reader.close()


def test_an_applications_freezegun_cannot_stretch_a_readers_deadlines(
        store: TokenStore, redis_url: str) -> None:
    # SYSTEM binds the real clocks at import: freezing or stepping time.monotonic in the
    # application's own tests leaves the reader's deadlines on the real one
    assert SYSTEM.monotonic is not time.monotonic or not hasattr(time.monotonic, "__wrapped__")
    store.publish("payments", make_token(store, 1.5))
    reader = TokenReader(redis_url, min_ttl=0.2)
    try:
        with freeze_time(datetime.now(UTC) + timedelta(days=1)):
            assert reader.get("payments").expires_in <= 1.5
        with freeze_time(datetime.now(UTC) - timedelta(days=1)):
            assert reader.get("payments").expires_in <= 1.5
    finally:
        reader.close()
