"""Benchmark 5: what token_worker costs in memory and start-up time.

* Reader: a fresh interpreter imports ``token_worker`` and builds a ``TokenReader``
  (by hand, and with ``TokenReader.from_config()`` from a config file), then reads a
  token. Baseline: a fresh interpreter that imports ``redis``, builds a client with
  ``Redis.from_url`` and does ``json.loads(r.get(key))``. The three run interleaved,
  median of each, after one warm-up each, with bytecode cached for both sides (under
  ``PYTHONDONTWRITEBYTECODE`` an editable checkout would be compiled from source in
  every probe while redis-py loads its ``.pyc``: a cost no installed reader pays).
  Wall time (CPU time in the note), ``tracemalloc`` peak and ``ru_maxrss``; and which
  heavy modules got imported (none may be, for a reader: pydantic neither).
* Worker: ``celery -A token_worker.celery_app worker --beat -P prefork -c 2`` at idle
  with 5 and with 10,000 profiles configured (all tokens valid, so idle means idle),
  RSS and PSS summed over its processes (main, beat, pool). Baseline: a bare Celery
  worker with no tasks, same pool and beat (:data:`bench.baselines.bare`).

    .venv/bin/python -m bench.footprint [--quick] [--reader-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

from token_worker.store import TokenStore, connect_redis

from .common import (
    REPO,
    RedisServer,
    Row,
    bench_worker,
    discard,
    median,
    memory_kib,
    print_rows,
    redis_server,
    tempdir,
)
from .due_checks import populate
from .fleet import CLIENT_ID, PREFIX, SECRET, write_config
from .reader_latency import _token

NAME = "5 footprint"
HEAVY = ("requests", "urllib3", "celery", "kombu", "billiard", "pydantic", "cryptography",
         "jwt", "token_worker.client", "token_worker.config", "token_worker.refresh",
         "token_worker.tasks", "prometheus_client")

_PROBE = r"""
import json, resource, sys, time
measure_mem = sys.argv[3] == "mem"
if measure_mem:
    import tracemalloc
    tracemalloc.start()
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[4] == "token_worker":
    import token_worker
    reader = token_worker.TokenReader(sys.argv[1], sys.argv[2], cache=False)
    t1 = time.perf_counter()
    value = reader.get("payments").access_token
elif sys.argv[4] == "from_config":
    import token_worker
    reader = token_worker.TokenReader.from_config(sys.argv[5], cache=False)
    t1 = time.perf_counter()
    value = reader.get("payments").access_token
else:
    import json as j
    import redis
    client = redis.Redis.from_url(sys.argv[1], decode_responses=True)
    t1 = time.perf_counter()
    value = j.loads(client.get(sys.argv[2] + ":token:payments"))["access_token"]
t2, c2 = time.perf_counter(), time.process_time()
out = {"construct": t1 - t0, "first_read": t2 - t0, "cpu": c2 - c0,
       "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
       "heavy": [m for m in HEAVY if m in sys.modules]}
if measure_mem:
    out["peak"] = tracemalloc.get_traced_memory()[1]
print(json.dumps(out))
"""


def _probe(url: str, mode: str, variant: str, config: str = "",
           pycache: str = "") -> dict[str, object]:
    code = f"HEAVY = {HEAVY!r}\n" + _PROBE
    env = dict(os.environ)
    if pycache:  # every module's bytecode from here, as an installed package has its own
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    out = subprocess.run([sys.executable, "-c", code, url, PREFIX, mode, variant, config],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
                         env=env)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def reader_rows(server: RedisServer, quick: bool) -> list[Row]:
    store = TokenStore(connect_redis(server.url), PREFIX)
    store.publish("payments", _token(store.time()))
    tmp = tempdir("tw-bench-footprint-")
    config = write_config(tmp / "token_worker.toml", redis_url=server.url,
                          broker_url=server.url, token_url="http://127.0.0.1:1/connect/token",
                          profiles={"payments": "client_paymentrequest"}, margin=600,
                          interval=30)
    runs = 5 if quick else 15
    variants = ("raw", "token_worker", "from_config")
    res: dict[str, dict[str, float]] = {}
    heavy: dict[str, object] = {}
    # interleaved, so a neighbour's burst on a shared box hits every variant alike
    timed: dict[str, list[dict[str, object]]] = {v: [] for v in variants}
    pycache = str(tmp / "pycache")
    for variant in variants:  # warm-up: writes the bytecode
        _probe(server.url, "time", variant, str(config), pycache)
    for _ in range(runs):
        for variant in variants:
            timed[variant].append(_probe(server.url, "time", variant, str(config), pycache))
    for variant in variants:
        times = timed[variant]
        mem = _probe(server.url, "mem", variant, str(config), pycache)
        res[variant] = {
            "construct": median([float(t["construct"]) for t in times]) * 1000,  # type: ignore[arg-type]
            "first_read": median([float(t["first_read"]) for t in times]) * 1000,  # type: ignore[arg-type]
            "cpu": median([float(t["cpu"]) for t in times]) * 1000,  # type: ignore[arg-type]
            "maxrss": median([float(t["maxrss_kib"]) for t in times]) / 1024,  # type: ignore[arg-type]
            "peak": float(mem["peak"]) / 1024,  # type: ignore[arg-type]
        }
        heavy[variant] = mem["heavy"]
    store.redis.close()
    discard(tmp)
    raw, tw, fc = res["raw"], res["token_worker"], res["from_config"]
    # what redis-py itself loads (it imports cryptography) is not the reader's doing
    base_heavy = set(heavy["raw"])  # type: ignore[call-overload]
    tw_heavy = ", ".join(m for m in heavy["token_worker"]  # type: ignore[attr-defined]
                         if m not in base_heavy) or "none"
    fc_heavy = ", ".join(m for m in heavy["from_config"]  # type: ignore[attr-defined]
                         if m not in base_heavy) or "none"
    loaded_by_redis = ", ".join(sorted(base_heavy)) or "none"
    return [
        Row(NAME, "reader: import token_worker + TokenReader(...)", tw["construct"],
            raw["construct"], "import redis + Redis.from_url", "ms",
            target="no requests/celery/pydantic/client", met=tw_heavy == "none",
            note=f"heavy modules it adds: {tw_heavy} (redis-py itself loads "
                 f"{loaded_by_redis})"),
        Row(NAME, "reader: ... + first get()", tw["first_read"], raw["first_read"],
            "... + GET + json.loads", "ms",
            note=f"CPU {tw['cpu']:.0f} ms vs {raw['cpu']:.0f} ms "
                 f"({tw['cpu'] / raw['cpu']:.2f}x)"),
        Row(NAME, "reader: tracemalloc peak, import to first get()", tw["peak"], raw["peak"],
            "redis-py client", "KiB"),
        Row(NAME, "reader: process max RSS", tw["maxrss"], raw["maxrss"], "redis-py client",
            "MiB"),
        # CPU time, not wall: on a shared box the wall-time ratio of one run swings
        # 0.7x-1.5x with the neighbours' load, the CPU one by a few hundredths
        Row(NAME, "reader via TokenReader.from_config(): import + construct + first get(), "
            "CPU time", fc["cpu"], raw["cpu"],
            "import redis + Redis.from_url + GET + json.loads", "ms",
            target="≤ 1.10x, no requests/celery/pydantic/client",
            met=fc_heavy == "none" and fc["cpu"] <= 1.10 * raw["cpu"],
            note=f"heavy modules it adds: {fc_heavy}; TokenReader(...) by hand "
                 f"{tw['cpu'] / raw['cpu']:.2f}x; wall {fc['first_read']:.0f} ms vs "
                 f"{raw['first_read']:.0f} ms; peak {fc['peak']:.0f} KiB, max RSS "
                 f"{fc['maxrss']:.1f} MiB"),
    ]


def _worker_memory(server: RedisServer, app: str, profiles: int, settle: float
                   ) -> tuple[float, float, int]:
    """(RSS MiB, PSS MiB, processes) of an idle worker with ``profiles`` configured."""
    admin = server.client()
    admin.flushall()
    tmp = tempdir("tw-bench-rss-")
    names = {f"p{i:05d}": "client_paymentrequest" for i in range(profiles)}
    store = TokenStore(connect_redis(server.url), PREFIX)
    populate(store, list(names), 0, random.Random(profiles))  # all valid: nothing to do
    config = write_config(tmp / "token_worker.toml", redis_url=server.url,
                          broker_url=server.url.rsplit("/", 1)[0] + "/1",
                          token_url="http://127.0.0.1:1/connect/token", profiles=names,
                          margin=600, interval=1)
    env = {"STITCH_CLIENT_SECRET": SECRET, "TOKEN_WORKER_CONFIG": str(config),
           "BENCH_BROKER_URL": server.url.rsplit("/", 1)[0] + "/1", "BENCH_CLIENT_ID": CLIENT_ID}
    worker = bench_worker(app, "tokens", env, tmp, "rss", concurrency=2, beat=True)
    try:
        worker.wait_ready()
        time.sleep(settle)  # a few beat ticks and due checks
        pids = worker.pids()
        rss, pss = memory_kib(pids)
        return rss / 1024, pss / 1024, len(pids)
    finally:
        worker.stop()
        store.redis.close()
        admin.close()
        discard(tmp)


def worker_rows(server: RedisServer, quick: bool) -> list[Row]:
    settle = 3.0 if quick else 5.0
    bare = _worker_memory(server, "bench.baselines:bare", 0, settle)
    rows = []
    for n in (5, 10_000):
        rss, pss, procs = _worker_memory(server, "token_worker.celery_app", n, settle)
        rows.append(Row(NAME, f"worker --beat -c 2, idle, {n:,} profiles: PSS ({procs} "
                        "processes)", pss, bare[1], "bare Celery worker PSS", "MiB",
                        note=f"RSS sum {rss:.0f} MiB vs bare {bare[0]:.0f} MiB"))
    return rows


def run(quick: bool = False) -> list[Row]:
    with redis_server() as server:
        rows = reader_rows(server, quick)
        rows += worker_rows(server, quick)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reader-only", action="store_true",
                    help="only the reader rows (no Celery workers)")
    args = ap.parse_args()
    if not args.reader_only:
        print_rows(run(args.quick))
        return
    with redis_server() as server:
        print_rows(reader_rows(server, args.quick))


if __name__ == "__main__":
    main()
