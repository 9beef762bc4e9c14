"""Benchmark 2: one beat tick's due check and claim at 10, 1,000 and 10,000 profiles.

The keyspace is what a running fleet leaves: every profile has a published token
(about 250 bytes of JSON, expiring with the token) and a ``refresh_at`` score in the
schedule spread over the coming lifetime, a few of them already due.

Baseline, same run, same Redis: a raw ``MGET`` of every profile's token key (the
least a due check without a schedule must read; parsing the JSON would come on top).
Calls are interleaved in rounds; the ratio is the median of per-round ratios.

    .venv/bin/python -m bench.due_checks
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import redis

from token_worker.config import parse_config
from token_worker.refresh import Refresher
from token_worker.store import TokenStore, connect_redis
from token_worker.tokens import Token, schedule_refresh

from .common import RedisServer, Row, median, redis_server, run_alone

PREFIX = "bench"
NAME = "2 due check"
LIFETIME = 3600.0
MARGIN = 600.0


def config_for(n: int, redis_url: str) -> Any:
    return parse_config({
        "redis": {"url": redis_url, "prefix": PREFIX},
        "clients": {"main": {"client_id": "bench", "client_secret_env": "BENCH_SECRET"}},
        "refresh": {"margin_seconds": MARGIN, "interval_seconds": 30},
        "profiles": {f"p{i:05d}": {"scopes": ["client_paymentrequest"]} for i in range(n)},
    })


def populate(store: TokenStore, profiles: list[str], due: int, rng: random.Random) -> None:
    """Tokens issued at random points of the last lifetime; ``due`` of them past refresh_at."""
    now = store.time()
    pipe = store.redis.pipeline(transaction=False)
    for i, profile in enumerate(profiles):
        if i < due:  # issued long enough ago that its refresh time has passed
            issued = now - LIFETIME + MARGIN / 2
        else:  # issued within the last (lifetime - margin) seconds: not due yet
            issued = now - rng.uniform(0, LIFETIME - MARGIN - 60)
        expires = issued + LIFETIME
        tok = Token(access_token=f"tok-{profile}-" + "x" * 43, token_type="Bearer",
                    scopes=("client_paymentrequest",), issued_at=issued, expires_at=expires,
                    refresh_at=schedule_refresh(issued, expires, MARGIN, rng=rng))
        pipe.set(store.keys.token(profile), tok.to_json(), px=int((expires - now) * 1000))
        pipe.zadd(store.keys.schedule(), {profile: tok.refresh_at})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


class _Counting:
    """Counts what is sent to Redis: commands and round trips (a pipeline is one)."""

    def __init__(self, client: redis.Redis) -> None:
        self.commands = 0
        self.round_trips = 0
        inner = client.execute_command

        def execute_command(*args: Any, **kw: Any) -> Any:
            self.commands += 1
            self.round_trips += 1
            return inner(*args, **kw)

        client.execute_command = execute_command  # type: ignore[method-assign]


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def one_size(server: RedisServer, n: int, quick: bool) -> list[Row]:
    rng = random.Random(n)
    admin = server.client()
    admin.flushall()
    config = config_for(n, server.url)
    store = TokenStore(connect_redis(server.url), PREFIX)
    profiles = list(config.profiles)
    n_due = max(1, n // 100)
    populate(store, profiles, n_due, rng)
    refresher = Refresher(config, store, client=None)  # type: ignore[arg-type]  # no endpoint
    keys = [store.keys.token(p) for p in profiles]
    raw = redis.Redis.from_url(server.url, decode_responses=True)
    mget = raw.mget

    due = refresher.due_profiles()
    assert len(due) == n_due, (len(due), n_due)
    assert sum(v is not None for v in mget(keys)) == n
    counter = _Counting(store.redis)
    refresher.due_profiles()
    trips = counter.round_trips
    # rounds: small sizes need many calls per round for a stable median
    per_round = max(1, 2000 // n) if n < 1000 else 1
    rounds = (10 if quick else 30) if n >= 1000 else (10 if quick else 30)
    ratios: list[float] = []
    t_due: list[float] = []
    t_mget: list[float] = []
    for _ in range(2):  # warm-up
        refresher.due_profiles()
        mget(keys)
    for r in range(rounds):
        pair = [("due", refresher.due_profiles), ("mget", lambda: mget(keys))]
        if r % 2:
            pair.reverse()
        got: dict[str, float] = {}
        for name, fn in pair:
            got[name] = median(_time(fn, per_round))
        t_due.append(got["due"])
        t_mget.append(got["mget"])
        ratios.append(got["due"] / got["mget"])
    ratio = median(ratios)
    # beat's tick: claim what is due within the next interval (30 s), with the claims of the
    # previous call cleared first (untimed), so every timed call does a tick's full work
    claims_key = store.keys.claims()
    claimed = len(refresher.claim_due(horizon=30.0, hold=61.0)[1])

    def tick() -> float:
        raw.delete(claims_key)
        t = time.perf_counter()
        refresher.claim_due(horizon=30.0, hold=61.0)
        return time.perf_counter() - t

    claim_ratios: list[float] = []
    t_claim: list[float] = []
    for r in range(rounds):
        if r % 2:
            c = median([tick() for _ in range(per_round)])
            m = median(_time(lambda: mget(keys), per_round))
        else:
            m = median(_time(lambda: mget(keys), per_round))
            c = median([tick() for _ in range(per_round)])
        t_claim.append(c)
        claim_ratios.append(c / m)
    claim_ratio = median(claim_ratios)
    raw.delete(claims_key)
    raw.close()
    store.redis.close()
    admin.flushall()
    admin.close()
    return [Row(NAME, f"Refresher.due_profiles(), {n:,} profiles ({n_due} due)",
                median(t_due) * 1000, median(t_mget) * 1000, f"raw MGET of {n:,} token keys",
                "ms", ratio=ratio, target="≤ 2x", met=ratio <= 2.0,
                note=f"{trips} round trip{'s' if trips != 1 else ''}; the listener's "
                     "catch-up"),
            Row(NAME, f"beat tick: Refresher.claim_due(), {n:,} profiles ({claimed} claimed: "
                "due or due within the 30 s interval)", median(t_claim) * 1000,
                median(t_mget) * 1000, f"raw MGET of {n:,} token keys", "ms",
                ratio=claim_ratio, target="≤ 2x", met=claim_ratio <= 2.0,
                note="1 round trip per tick")]


def run(quick: bool = False) -> list[Row]:
    rows: list[Row] = []
    with redis_server() as server:
        for n in (10, 1000, 10_000):
            rows += one_size(server, n, quick)
    return rows


def main() -> None:
    run_alone(run, __doc__)


if __name__ == "__main__":
    main()
