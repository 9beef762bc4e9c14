"""Benchmark: the async reader against a raw ``await redis.asyncio`` GET, and a 401 storm.

Baselines in the same run, against the same private redis-server:

* ``raw``: ``json.loads(await r.get(key))`` on a plain ``redis.asyncio.Redis`` (a
  blocking pool of 100: the default pool refuses 1,000 concurrent reads outright).
* the 401 storm has no baseline but its targets: one endpoint call, every request
  retried once.

Modes alternate in rounds; latencies are per call (``perf_counter_ns``), measured with
1, 100 and 1,000 concurrent tasks each doing its share of the reads.

    .venv/bin/python -m bench.async_reader
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis

from token_worker.aio import AsyncTokenReader
from token_worker.store import TokenStore, connect_redis
from token_worker.tokens import Token

from .common import Row, percentile, print_rows, redis_server

PREFIX, PROFILE, NAME = "bench", "payments", "async reader"


async def _timed(call: Callable[[], Awaitable[Any]], tasks: int, per_task: int) -> list[float]:
    """Per-call latencies (µs) of ``call``, run by ``tasks`` concurrent tasks."""
    out: list[float] = []

    async def one() -> None:
        for _ in range(per_task):
            started = time.perf_counter_ns()
            await call()
            out.append((time.perf_counter_ns() - started) / 1000)

    await asyncio.gather(*[one() for _ in range(tasks)])
    return out


async def _latency(url: str, rounds: int) -> list[Row]:
    # a blocking pool: redis-py's default refuses past 100 connections, and the raw way
    # opens one per concurrent read (the reader shares one read per profile instead)
    raw_client = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(
        url, max_connections=100, decode_responses=True))
    key = f"{PREFIX}:token:{PROFILE}"
    cached = AsyncTokenReader(url, PREFIX)
    uncached = AsyncTokenReader(url, PREFIX, cache=False)
    await cached.get(PROFILE)
    while not cached._healthy:  # subscribed: the cache may serve
        await asyncio.sleep(0.01)

    async def raw() -> Any:
        return json.loads(await raw_client.get(key))

    rows: list[Row] = []
    for tasks, per_task in ((1, 2000), (100, 40), (1000, 4)):
        got: dict[str, list[float]] = {"raw": [], "uncached": [], "cached": []}
        for _ in range(rounds):
            got["raw"] += await _timed(raw, tasks, per_task)
            got["uncached"] += await _timed(lambda: uncached.get(PROFILE), tasks, per_task)
            got["cached"] += await _timed(lambda: cached.get(PROFILE), tasks, per_task)
        base50, base99 = statistics.median(got["raw"]), percentile(got["raw"], 99)
        target = tasks == 1
        for mode, limit in (("uncached", 1.1), ("cached", 0.05)):
            p50, p99 = statistics.median(got[mode]), percentile(got[mode], 99)
            rows.append(Row(NAME, f"{mode} get p50, {tasks} concurrent task(s)", p50, base50,
                            "raw await GET+json.loads p50", "us",
                            target=f"≤ {limit}x" if target else "",
                            met=(p50 / base50 <= limit) if target else None))
            rows.append(Row(NAME, f"{mode} get p99, {tasks} concurrent task(s)", p99, base99,
                            "raw p99", "us"))
    await raw_client.aclose()
    await cached.aclose()
    await uncached.aclose()
    return rows


def _storm(url: str, n: int) -> list[Row]:
    """``n`` concurrent httpx requests holding a token the API revoked."""
    import httpx

    from token_worker.config import parse_config
    from token_worker.listener import Listener
    from token_worker.refresh import Refresher
    from token_worker.testing import CLIENT_ID, Emulator

    secret = "bench-secret-for-the-emulator"  # noqa: S105 - a test credential
    emulator = Emulator(clients={CLIENT_ID: secret}).start()
    os.environ["BENCH_STITCH_SECRET"] = secret
    config = parse_config({
        "redis": {"url": url, "prefix": PREFIX}, "stitch": {"token_url": emulator.url},
        "clients": {"main": {"client_id": CLIENT_ID, "client_secret_env": "BENCH_STITCH_SECRET"}},
        "profiles": {PROFILE: {"scopes": ["client_paymentrequest"]}}})
    refresher = Refresher.from_config(config)
    refresher.refresh_profile(PROFILE, force=True)
    listener = Listener(Refresher.from_config(config))
    listener.start()
    listener.subscribed.wait(5)

    async def run() -> tuple[float, list[int], int]:
        reader = AsyncTokenReader(url, PREFIX)
        token = await reader.get(PROFILE)
        emulator.revoke(token.access_token)
        calls = emulator.calls
        async with httpx.AsyncClient(auth=reader.httpx_auth(PROFILE), timeout=30) as client:
            started = time.perf_counter()
            answers = await asyncio.gather(*[client.post(emulator.base_url + "/api")
                                             for _ in range(n)])
            took = time.perf_counter() - started
        await reader.aclose()
        return took, [len(a.history) for a in answers if a.status_code == 200], \
            emulator.calls - calls

    took, retried, calls = asyncio.run(run())
    listener.stop(5)
    refresher.close()
    emulator.stop()
    return [
        Row(NAME, f"401 storm: {n} concurrent httpx requests holding a revoked token → all "
            f"answered 200 ({len(retried)}/{n}, each retried {set(retried) or '-'} time)",
            took * 1000, 0, "", "ms", ratio=float("nan")),
        Row(NAME, "401 storm: endpoint calls for the replacement", calls, 1, "target: 1",
            "", target="1", met=calls == 1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with redis_server() as server:
        store = TokenStore(connect_redis(server.url), PREFIX)
        assert store.load_functions()  # as a worker does: the readers' read function
        now = store.time()
        store.publish(PROFILE, Token("tok-" + "x" * 40, "Bearer", ("client_paymentrequest",),
                                     now, now + 3600, now + 3000))
        rows = asyncio.run(_latency(server.url, args.rounds))
        rows += _storm(server.url, 100)
    print_rows(rows)


if __name__ == "__main__":
    main()
