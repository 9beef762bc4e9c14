"""Soak: a minute of short-lived tokens and a flaky endpoint, with readers never missing.

Three workers, each with an embedded beat, refresh three profiles whose tokens live
five seconds, while the emulator fails a random 20% of calls with 503 and eight reader
processes read every profile fifty times a second.

The numbers are chosen so that the claim is a property of the design, not of luck:

- ``margin`` 3 s of a 5 s lifetime: a token is refreshed with 3 s left, one cycle per
  2 s (``L - M``). Readers use ``min_ttl`` 0.5 s, so a refresh has 2.5 s to succeed.
- A healthy attempt makes up to three calls (``retries`` 2): it fails with
  probability 0.2^3 = 0.8%. Then the backoff cap is a quarter of the time left, never
  less than the interval, so about four more single-call attempts fit before the
  reader would refuse: a miss needs 0.008 x 0.2^4, about 1e-5 per cycle, or 0.1% over
  the ~80 cycles of a run.
- The ideal number of tokens per profile is the window divided by the scheduled cycle,
  ``L - M`` minus the mean jitter (up to 0.2 s earlier, 0.1 s on average). Each real
  cycle is that plus
  the wait for a tick and the task round trip. ``interval`` 0.25 s with three beats
  keeps that wait near 0.05 s, so over ~26 cycles the count stays within one of the
  ideal (at 0.5 s it drifted to 1.4 below it); a duplicated refresh (three workers,
  three beats) would add one per cycle, a missed one would show as a reader miss.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from token_worker import TokenReader
from token_worker.tokens import JITTER_FRACTION

from ..support import record_publishes
from .conftest import HEAVY, Fleet, subprocess_env
from .test_reliability import SCOPES, write_config

pytestmark = [pytest.mark.integration, HEAVY, pytest.mark.xdist_group("soak")]

LIFETIME, MARGIN, INTERVAL, MIN_TTL = 5.0, 3.0, 0.25, 0.5
READERS, READ_SECONDS, WARM_UP = 8, 55.0, 2.0

READER = textwrap.dedent("""
    import json, sys, time
    from token_worker import TokenReader, TokenUnavailable
    url, seconds, min_ttl, *profiles = sys.argv[1:]
    reader = TokenReader(url, min_ttl=float(min_ttl))
    for p in profiles:
        reader.get(p, wait=30)
    out = {"reads": 0, "missing": [], "expired": [], "least_left": None}
    end = time.time() + float(seconds)
    while (now := time.time()) < end:
        for p in profiles:
            try:
                token = reader.get(p)
            except TokenUnavailable as exc:
                out["missing"].append([now, p, str(exc)])
                continue
            left = token.expires_at - time.time()  # same host: the fleet clock
            out["reads"] += 1
            if left <= 0:
                out["expired"].append([now, p, left])
            if out["least_left"] is None or left < out["least_left"]:
                out["least_left"] = left
        time.sleep(0.02)
    print(json.dumps(out))
""")


def test_a_minute_of_flaky_endpoint_and_short_tokens_never_starves_a_reader(
        fleet: Fleet) -> None:
    fleet.emulator.set_expires_in(LIFETIME)
    fleet.emulator.set_faults([{"mode": "http_error", "status": 503, "probability": 0.2}])
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=list(SCOPES),
                          margin=MARGIN, interval=INTERVAL)
    publishes: dict[str, list[float]] = {}
    recorder = record_publishes(fleet.redis_url, publishes, time.time)
    workers = [fleet.start_worker(config) for _ in range(3)]
    reader = TokenReader(fleet.redis_url, min_ttl=MIN_TTL)
    for p in SCOPES:
        reader.get(p, wait=60)
    reader.close()

    start = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", READER, fleet.redis_url,
                               str(READ_SECONDS), str(MIN_TTL), *SCOPES],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=subprocess_env()) for _ in range(READERS)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=READ_SECONDS + 60)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    end = time.time()
    for w in workers:  # first, so a refresh in flight is published before we stop counting
        assert w.terminate() == 0
    time.sleep(0.5)
    recorder.stop(5)

    stats = fleet.emulator.stats()
    reads = sum(r["reads"] for r in results)
    missing = [m for r in results for m in r["missing"] if m[0] >= start + WARM_UP]
    expired = [e for r in results for e in r["expired"]]
    least = min(r["least_left"] for r in results)
    print(f"\n{READERS} readers: {reads} reads, {len(missing)} missing, {len(expired)} "
          f"expired, least life left when read {least:.2f}s; endpoint: {stats['calls']} "
          f"calls, {stats['failed']} failed, {stats['issued']} tokens issued")
    assert not missing, missing[:5]
    assert not expired, expired[:5]
    # every token issued was published: no refresh was done twice
    assert stats["issued"] == sum(len(t) for t in publishes.values())

    window_start, window_end = start + WARM_UP, end - 1.0
    # the schedule itself pulls each refresh earlier by a uniform jitter of up to
    # JITTER_FRACTION of the lead time: the ideal cycle is L - M minus its mean
    cycle = (LIFETIME - MARGIN) * (1 - JITTER_FRACTION / 2)
    ideal = (window_end - window_start) / cycle
    for profile in SCOPES:
        n = sum(1 for t in publishes.get(profile, []) if window_start <= t < window_end)
        print(f"{profile}: {n} tokens in {window_end - window_start:.1f}s, ideal {ideal:.1f}")
        # never more than one above ideal: a duplicated refresh would double the count
        assert n <= ideal + 1, (profile, n, ideal)
        # below ideal only by tick latency on a loaded 2-core CI (25-28 seen for 27.7);
        # a refresh that starved readers fails the zero-miss assertions above instead
        assert n >= ideal - 3, (profile, n, ideal)
