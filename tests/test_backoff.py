"""backoff.py: how long a failing profile waits (pure)."""

from __future__ import annotations

import random

import pytest

from token_worker.backoff import BACKOFF_MAX_SECONDS, BACKOFF_MAX_WITHOUT_TOKEN, next_attempt_delay


@pytest.mark.parametrize(
    ("time_left", "interval", "expected"),
    [
        (None, 30, BACKOFF_MAX_WITHOUT_TOKEN),
        (0, 30, BACKOFF_MAX_WITHOUT_TOKEN),
        (3600, 30, BACKOFF_MAX_SECONDS),
        (400, 30, 100.0),  # four attempts still fit before expiry
        (40, 30, 30.0),  # never more often than beat checks
        (None, 120, 120.0),
    ],
)
def test_permanent_errors_retry_slowly_but_before_expiry(time_left: float | None,
                                                         interval: float,
                                                         expected: float) -> None:
    assert next_attempt_delay(1, False, time_left, interval) == expected
    assert next_attempt_delay(9, False, time_left, interval) == expected


def test_transient_errors_back_off_exponentially_with_jitter() -> None:
    for failures, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (20, 300.0)]:
        delays = [next_attempt_delay(failures, True, 3600, 1, rng=random.Random(s))
                  for s in range(100)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter actually spreads


def test_transient_backoff_never_exceeds_the_time_left_cap() -> None:
    delays = [next_attempt_delay(30, True, 40, 1, rng=random.Random(s)) for s in range(50)]
    assert max(delays) <= 10.0


def test_retry_after_is_a_floor_up_to_the_cap() -> None:
    assert next_attempt_delay(1, True, 3600, 1, retry_after=7, rng=random.Random(1)) >= 7
    assert next_attempt_delay(1, True, 3600, 1, retry_after=10_000,
                              rng=random.Random(1)) == BACKOFF_MAX_SECONDS
