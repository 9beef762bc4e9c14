"""What ``redis.wait_replicas`` costs a publish, on a real Sentinel set and a Cluster.

    .venv/bin/python -m bench.wait_replicas [--n 300]

Each round publishes the same profile ``n`` times with ``wait_replicas = 0`` and then 1
(one replica, 127.0.0.1), interleaved over 5 rounds; the ratio is the figure to compare.
Prints a table; not part of ``python -m bench`` (it needs the topologies, ~20 s).
"""

from __future__ import annotations

import argparse
import statistics
import time

from token_worker.store import RedisTarget, TokenStore
from token_worker.testing.topologies import RedisCluster, SentinelSet
from token_worker.tokens import Token

from .common import Row, percentile, print_rows


def _publishes(store: TokenStore, n: int) -> list[float]:
    out = []
    for i in range(n):
        now = store.time()
        token = Token(f"tok-{i}-{now}", "Bearer", ("client_paymentrequest",), now, now + 600,
                      now + 300)
        started = time.perf_counter()
        assert store.publish("payments", token) == 1
        out.append((time.perf_counter() - started) * 1e6)
    return out


def measure(url: str, name: str, n: int) -> list[Row]:
    plain = TokenStore.open(RedisTarget(url))
    waiting = TokenStore.open(RedisTarget(url, wait_replicas=1, wait_timeout_ms=1000))
    off: list[float] = []
    on: list[float] = []
    for _ in range(5):
        off += _publishes(plain, n)
        on += _publishes(waiting, n)
    plain.close()
    waiting.close()
    return [
        Row(f"wait {name}", "publish p50, wait_replicas=1 (1 replica, loopback)",
            statistics.median(on), statistics.median(off), "publish p50, wait_replicas=0", "us"),
        Row(f"wait {name}", "publish p99, wait_replicas=1", percentile(on, 99),
            percentile(off, 99), "publish p99, wait_replicas=0", "us"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    rows: list[Row] = []
    with SentinelSet() as sentinels:
        rows += measure(sentinels.url, "sentinel", args.n)
    with RedisCluster(replicas=1) as cluster:
        rows += measure(cluster.url, "cluster", args.n)
    print_rows(rows)


if __name__ == "__main__":
    main()
