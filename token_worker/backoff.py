"""How long a failing profile waits before its next attempt.

One function, unit-testable on its own (google-auth's ``_can_retry`` style): the
refresher asks it after every failure and writes the answer into the shared
schedule, so the backoff holds across every worker and beat in the fleet.
"""

from __future__ import annotations

import random

__all__ = ["ATTEMPTS_BEFORE_EXPIRY", "BACKOFF_BASE_SECONDS", "BACKOFF_MAX_SECONDS",
           "BACKOFF_MAX_WITHOUT_TOKEN", "RETRY_SLEEP_CAP", "next_attempt_delay"]

# first across-tick backoff after a failure; doubles with each failure after that
BACKOFF_BASE_SECONDS = 2.0
# no profile waits longer than this between attempts, whatever happened
BACKOFF_MAX_SECONDS = 300.0
# with no usable token every task is failing: keep trying at least this often
BACKOFF_MAX_WITHOUT_TOKEN = 60.0
# how many attempts, at least, still fit before the current token expires
ATTEMPTS_BEFORE_EXPIRY = 4
# within one attempt: jittered backoff between retries, never longer than this
RETRY_SLEEP_CAP = 2.0


def next_attempt_delay(
    failures: int, retryable: bool, time_left: float | None, interval: float,
    retry_after: float | None = None, rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt after ``failures`` failures in a row.

    Exponential backoff with jitter for retryable errors; slow, steady retries
    for permanent ones (a revoked secret must not hammer the endpoint). Either way
    the wait is capped so that several attempts still happen before the current
    token expires, and that cap shrinks as expiry nears. ``Retry-After`` is
    honoured up to the cap.
    """
    if time_left is None or time_left <= 0:
        cap = BACKOFF_MAX_WITHOUT_TOKEN
    else:
        cap = min(BACKOFF_MAX_SECONDS, time_left / ATTEMPTS_BEFORE_EXPIRY)
    cap = max(cap, interval)
    if not retryable:
        return cap
    ceiling = min(cap, BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0))
    # jitter over the upper half of each step only: the fleet shares one schedule per
    # profile, so jitter just spreads profiles apart, and the floor keeps an outage of
    # T seconds to about log2(T) attempts (full jitter can land near zero again and again)
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
