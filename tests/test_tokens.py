"""tokens.py: the one place that decides due / fresh / expired (pure time logic)."""

from __future__ import annotations

import json
import random
import time

import pytest
from freezegun import freeze_time

from token_worker.testing.clock import ManualClock
from token_worker.tokens import (
    JITTER_CAP_SECONDS,
    JITTER_FRACTION,
    PHASE_FLOOR,
    Token,
    TokenState,
    fingerprint,
    schedule_refresh,
    token_state,
)

T0 = "2024-06-01 12:00:00"
T0_UNIX = 1_717_243_200.0  # T0 as Unix seconds (UTC)


class Extreme(random.Random):
    """An rng pinned to one end of every range, to hit the jitter bounds exactly."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


# -- schedule_refresh -------------------------------------------------------------------

def test_due_at_margin_before_expiry_without_jitter() -> None:
    assert schedule_refresh(1000.0, 4600.0, 600, rng=Extreme(False)) == 4000.0


def test_jitter_only_moves_refresh_earlier_and_is_capped() -> None:
    # lead time 3000s: a tenth is 300s, capped at JITTER_CAP_SECONDS
    earliest = schedule_refresh(1000.0, 4600.0, 600, rng=Extreme(True))
    assert earliest == 4000.0 - JITTER_CAP_SECONDS
    for seed in range(200):
        at = schedule_refresh(1000.0, 4600.0, 600, rng=random.Random(seed))
        assert 4000.0 - JITTER_CAP_SECONDS <= at <= 4000.0


def test_jitter_is_a_small_share_of_a_short_lead_time() -> None:
    # lifetime 100s, margin 60s: due at 40s after issue, jitter at most 2% of it (0.8s)
    assert JITTER_FRACTION == 0.02
    assert schedule_refresh(0.0, 100.0, 60, rng=Extreme(True)) == pytest.approx(39.2)


def test_a_slot_places_the_refresh_at_that_share_of_the_lead_past_its_floor() -> None:
    # lead 3000 s (due at 4000 for a token issued at 1000); the floor keeps 300 s of it
    assert PHASE_FLOOR == 0.1
    assert schedule_refresh(1000.0, 4600.0, 600, slot=0.0) == pytest.approx(1300.0)
    assert schedule_refresh(1000.0, 4600.0, 600, slot=0.5) == pytest.approx(2650.0)
    assert schedule_refresh(1000.0, 4600.0, 600, slot=0.999) < 4000.0
    # margin over the lifetime: the lead is half the lifetime (50 s)
    assert schedule_refresh(0.0, 100.0, 600, slot=0.5) == pytest.approx(27.5)
    # out of range (NaN, 1, negative, inf) is no slot: the normal rule decides
    for bad in (float("nan"), 1.0, -0.1, float("inf")):
        assert schedule_refresh(1000.0, 4600.0, 600, rng=Extreme(False), slot=bad) == 4000.0


def test_golden_ratio_slots_spread_a_fleet_fetched_unevenly_over_the_lead() -> None:
    # 300 profiles fetched over 6 s in rank order (a throughput-bound cold start), rank k
    # in slot k * 0.618... mod 1: steady state (refresh times mod the 9 s rotation) holds
    # no second with more than 1.25x the mean of 33 calls
    golden = (5 ** 0.5 - 1) / 2
    at = [schedule_refresh(1000.0 + 6 * k / 300, 1012.0 + 6 * k / 300, 3.0,
                           slot=(k * golden) % 1.0) for k in range(300)]
    per_second = [sum(1 for a in at if s <= a % 9.0 < s + 1) for s in range(9)]
    assert max(per_second) <= 1.25 * 300 / 9, per_second
    # the jitter alone would put all 300 in the last 2% of the lead
    rng = random.Random(7)
    jittered = [schedule_refresh(0.0, 12.0, 3.0, rng=rng) for _ in range(300)]
    assert min(jittered) >= 9.0 * (1 - JITTER_FRACTION)


def test_jitter_spreads_profiles_issued_together() -> None:
    moments = {schedule_refresh(0.0, 3600.0, 600, rng=random.Random(s)) for s in range(20)}
    assert len(moments) > 10


@pytest.mark.parametrize("margin", [3600, 3601, 7200])
def test_margin_not_less_than_lifetime_refreshes_at_half_life(margin: float) -> None:
    assert schedule_refresh(0.0, 3600.0, margin, rng=Extreme(False)) == 1800.0
    assert schedule_refresh(0.0, 3600.0, margin, rng=Extreme(True)) == 1800.0 - 30.0


def test_margin_just_under_lifetime_uses_the_margin() -> None:
    assert schedule_refresh(0.0, 3600.0, 3599, rng=Extreme(False)) == 1.0


def test_zero_margin_refreshes_at_expiry_at_the_latest() -> None:
    assert schedule_refresh(0.0, 60.0, 0, rng=Extreme(False)) == 60.0
    earliest = schedule_refresh(0.0, 60.0, 0, rng=Extreme(True))
    assert earliest == pytest.approx(60.0 * (1 - JITTER_FRACTION))


# -- token_state at its boundaries, on a frozen clock -----------------------------------

def test_token_state_walks_valid_due_expired_at_the_exact_boundaries() -> None:
    with freeze_time(T0) as clock:
        issued_at = time.time()
        expires_at = issued_at + 3600
        refresh_at = schedule_refresh(issued_at, expires_at, 600, rng=Extreme(False))
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.VALID
        clock.tick(2999.999)
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.VALID
        clock.tick(0.001)  # exactly refresh_at
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.REFRESH_DUE
        clock.tick(599.999)
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.REFRESH_DUE
        clock.tick(0.001)  # exactly expires_at
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.EXPIRED


def test_half_life_boundary_on_a_frozen_clock() -> None:
    with freeze_time(T0) as clock:
        issued_at = time.time()
        expires_at = issued_at + 60  # margin 600 > lifetime 60: half-life rule
        refresh_at = schedule_refresh(issued_at, expires_at, 600, rng=Extreme(False))
        clock.tick(29.999)
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.VALID
        clock.tick(0.001)
        assert token_state(expires_at, refresh_at, time.time()) is TokenState.REFRESH_DUE


def test_missing_token_is_missing() -> None:
    assert token_state(None, None, 1000.0) is TokenState.MISSING


def test_rejected_token_is_due_at_once_but_expired_stays_expired() -> None:
    assert token_state(2000.0, 1900.0, 1000.0, rejected=True) is TokenState.REFRESH_DUE
    assert token_state(2000.0, 1900.0, 2000.0, rejected=True) is TokenState.EXPIRED


def test_token_without_refresh_at_is_valid_until_expiry() -> None:
    assert token_state(2000.0, None, 1999.0) is TokenState.VALID
    assert token_state(2000.0, None, 2000.0) is TokenState.EXPIRED


def test_states_are_the_contract_strings() -> None:
    assert [str(s) for s in TokenState] == ["valid", "refresh_due", "expired", "missing"]


# -- Token ------------------------------------------------------------------------------

def test_expires_in_counts_down_on_the_monotonic_clock() -> None:
    clock = ManualClock(wall=T0_UNIX)
    data = {"access_token": "tok", "token_type": "Bearer", "scope": "a b",
            "issued_at": clock.wall(), "expires_at": clock.wall() + 100,
            "refresh_at": clock.wall() + 50}
    token = Token.from_dict(data, ttl=100.0, clock=clock.clock)
    assert token.expires_in == pytest.approx(100.0)
    clock.advance(30)
    assert token.expires_in == pytest.approx(70.0)
    clock.step_wall(-3600)  # a wall-clock step moves nothing
    assert token.expires_in == pytest.approx(70.0)
    clock.advance(100)
    assert token.expires_in == 0.0  # never negative


def test_redis_ttl_wins_over_a_wrong_local_wall_clock() -> None:
    clock = ManualClock(wall=T0_UNIX)
    # expires_at says long dead by this host's clock; Redis says 50s left
    data = {"access_token": "tok", "token_type": "Bearer", "scope": "a",
            "issued_at": 0.0, "expires_at": 10.0}
    token = Token.from_dict(data, ttl=50.0, clock=clock.clock)
    assert token.expires_in == pytest.approx(50.0)
    assert token.refresh_at == 10.0  # defaults to expires_at when absent


def test_without_ttl_remaining_life_comes_from_expires_at() -> None:
    clock = ManualClock(wall=T0_UNIX)
    data = {"access_token": "tok", "token_type": "Bearer", "scope": "a",
            "issued_at": clock.wall(), "expires_at": clock.wall() + 42}
    assert Token.from_dict(data, clock=clock.clock).expires_in == pytest.approx(42.0)


def test_published_json_round_trips() -> None:
    token = Token(access_token="tok-xyz", token_type="Bearer", scopes=("a", "b"),
                  issued_at=1.5, expires_at=3601.5, refresh_at=3000.0)
    data = json.loads(token.to_json())
    assert data == {"access_token": "tok-xyz", "token_type": "Bearer", "scope": "a b",
                    "issued_at": 1.5, "expires_at": 3601.5, "refresh_at": 3000.0}
    again = Token.from_dict(data, ttl=10)
    assert again == token  # deadline is not part of equality
    assert again.scope == "a b"


def test_fingerprint_is_short_stable_and_not_the_token() -> None:
    fp = fingerprint("emu_secret_token_value")
    assert fp == fingerprint("emu_secret_token_value")
    assert fp != fingerprint("emu_secret_token_valuf")
    assert len(fp) == 12 and "secret" not in fp


def test_token_repr_shows_fingerprint_never_the_token() -> None:
    token = Token(access_token="tok-very-private", token_type="Bearer", scopes=("a",),
                  issued_at=0.0, expires_at=10.0, refresh_at=5.0)
    assert "tok-very-private" not in repr(token)
    assert "tok-very-private" not in str(token)
    assert token.fingerprint in repr(token)
