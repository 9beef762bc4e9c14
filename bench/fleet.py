"""Benchmark 3: endpoint calls per profile per token lifetime, fleet against baselines.

For W = 1, 2, 4 workers, in the same run and under the same task load:

* token_worker: W ``celery -A token_worker.celery_app worker --beat -Q tokens``
  (a beat on every worker, the worst case for duplicates) refresh P profiles; W
  payment workers read the tokens with :class:`TokenReader`.
* fetch per task and cache per process (:mod:`bench.baselines`): W payment workers each.

The same stream of payment tasks (R per second, round-robin over the P profiles) goes
to all three at once, each strategy with its own emulator, so the three count their
endpoint calls separately under identical load and noise. Tokens live L seconds;
token_worker refreshes them M seconds before expiry (so the ideal is L / (L - M) calls
per lifetime, the price of never letting a token run out), the per-process cache
refetches at the same M.

    .venv/bin/python -m bench.fleet [--workers 1 2 4] [--lifetimes 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from celery import Celery

from token_worker import TokenReader
from token_worker.constants import KNOWN_SCOPES
from token_worker.testing import write_config as write_base_config
from token_worker.testing.emulator import Emulator

from .common import (
    RedisServer,
    Row,
    Worker,
    bench_worker,
    discard,
    print_rows,
    redis_server,
    tempdir,
)

NAME = "3 one call per lifetime"
CLIENT_ID = "bench-client"
SECRET = "bench-secret-" + "q" * 20
PREFIX = "stitch"
STRATEGIES = {"token_worker": "bench.pay_token_worker", "fetch": "bench.pay_fetch",
              "cached": "bench.pay_cached"}


class RecordingEmulator(Emulator):
    """The emulator, also noting when each token call arrived and for which scope."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.call_log: list[tuple[float, str]] = []

    def _token(self, content_type: str, body: bytes, host: str) -> Any:
        try:
            scope = " ".join(parse_qs(body.decode())["scope"][0].split())
        except (KeyError, UnicodeDecodeError, IndexError):
            scope = ""
        self.call_log.append((time.monotonic(), scope))
        return super()._token(content_type, body, host)


def write_config(path: Path, *, redis_url: str, broker_url: str, token_url: str,
                 profiles: dict[str, str], margin: float, interval: float,
                 prefix: str = PREFIX, timeout: float = 5,
                 refresh: dict[str, Any] | None = None) -> Path:
    """The benchmark config: one secret client, one scope per profile, queue ``tokens``."""
    return write_base_config(path, redis_url=redis_url, broker_url=broker_url, queue="tokens",
                          token_url=token_url, prefix=prefix, timeout=timeout, margin=margin,
                          interval=interval, client_id=CLIENT_ID, refresh=refresh,
                          profiles={name: [scope] for name, scope in profiles.items()})


def duplicates(call_log: list[tuple[float, str]], window: float) -> tuple[int, int]:
    """(calls, refresh cycles): calls for one scope closer than ``window`` are one cycle."""
    by_scope: dict[str, list[float]] = {}
    for t, scope in call_log:
        by_scope.setdefault(scope, []).append(t)
    calls = cycles = 0
    for times in by_scope.values():
        times.sort()
        calls += len(times)
        cycles += 1 + sum(1 for a, b in zip(times, times[1:], strict=False) if b - a >= window)
    return calls, cycles


def run_fleet(server: RedisServer, workers: int, *, profiles: int, lifetime: float,
              margin: float, interval: float, lifetimes: int, rate: float) -> dict[str, Any]:
    tmp = tempdir("tw-bench-fleet-")
    emus = {s: RecordingEmulator(clients={CLIENT_ID: SECRET}, expires_in=lifetime).start()
            for s in STRATEGIES}
    names = {f"p{i}": KNOWN_SCOPES[i % len(KNOWN_SCOPES)] for i in range(profiles)}
    store_url = server.url
    base = store_url.rsplit("/", 1)[0]
    admin = server.client()
    admin.flushall()
    procs: list[Worker] = []
    producer = Celery("bench_sender", broker=f"{base}/2", set_as_current=False)
    producer.conf.update(task_serializer="json", accept_content=["json"],
                         task_ignore_result=True)
    try:
        config = write_config(tmp / "token_worker.toml", redis_url=store_url,
                              broker_url=f"{base}/1", token_url=emus["token_worker"].url,
                              profiles=names, margin=margin, interval=interval)
        common = {"STITCH_CLIENT_SECRET": SECRET, "TOKEN_WORKER_CONFIG": str(config)}
        for i in range(workers):
            procs.append(bench_worker("token_worker.celery_app", "tokens", common, tmp,
                                      f"tw{i}", concurrency=1, beat=True))
        for strategy in STRATEGIES:
            env = {**common, "BENCH_BROKER_URL": f"{base}/2", "BENCH_QUEUE": f"pay_{strategy}",
                   "BENCH_TOKEN_URL": emus[strategy].url, "BENCH_CLIENT_ID": CLIENT_ID,
                   "BENCH_MARGIN": str(margin), "BENCH_STORE_URL": store_url,
                   "BENCH_PREFIX": PREFIX, "BENCH_COUNTERS": f"bench:counters:{strategy}"}
            for i in range(workers):
                procs.append(bench_worker("bench.baselines", f"pay_{strategy}", env, tmp,
                                          f"{strategy}{i}", concurrency=2))
        for p in procs:
            p.wait_ready()
        reader = TokenReader(store_url, PREFIX, min_ttl=0)
        for name in names:  # the fleet has fetched every token: steady state from here
            reader.get(name, wait=60)
        reader.close()
        time.sleep(interval)
        for emu in emus.values():
            emu.reset()
            emu.call_log.clear()
        duration = lifetimes * lifetime
        sent = 0
        t0 = time.monotonic()
        with producer.producer_or_acquire() as prod:
            order = list(names.items())
            while True:
                due_at = t0 + sent / rate
                now = time.monotonic()
                if due_at - t0 >= duration:
                    break
                if due_at > now:
                    time.sleep(due_at - now)
                name, scope = order[sent % len(order)]
                for strategy, task in STRATEGIES.items():
                    producer.send_task(task, args=(name, scope), queue=f"pay_{strategy}",
                                       producer=prod)
                sent += 1
        elapsed = time.monotonic() - t0
        tw_log = [c for c in emus["token_worker"].call_log if c[0] - t0 <= elapsed]
        # let the queues drain (the baselines only call while they work)
        deadline = time.monotonic() + 30
        done: dict[str, int] = {}
        while time.monotonic() < deadline:
            done = {s: sum(int(v) for v in admin.hgetall(f"bench:counters:{s}").values())
                    for s in STRATEGIES}
            if all(v >= sent for v in done.values()):
                break
            time.sleep(0.2)
        counters = {s: {k: int(v) for k, v in admin.hgetall(f"bench:counters:{s}").items()}
                    for s in STRATEGIES}
        calls = {s: emus[s].calls for s in STRATEGIES}
        calls["token_worker"] = len(tw_log)
        tw_calls, tw_cycles = duplicates(tw_log, window=(lifetime - margin) / 2)
        return {"workers": workers, "sent": sent, "elapsed": elapsed, "calls": calls,
                "counters": counters, "tw_cycles": tw_cycles, "done": done,
                "lifetimes": elapsed / lifetime}
    finally:
        for p in procs:
            p.stop()
        for emu in emus.values():
            emu.stop()
        producer.close()
        admin.close()
        discard(tmp)


def run(quick: bool = False, workers: tuple[int, ...] = (1, 2, 4),
        lifetimes: int = 4) -> list[Row]:
    lifetime, margin, interval, profiles, rate = 6.0, 1.5, 0.5, 5, 20.0
    if quick:
        workers, lifetimes = tuple(w for w in workers if w <= 2), min(lifetimes, 2)
    rows: list[Row] = []
    ideal = lifetime / (lifetime - margin)
    with redis_server() as server:
        for w in workers:
            res = run_fleet(server, w, profiles=profiles, lifetime=lifetime, margin=margin,
                            interval=interval, lifetimes=lifetimes, rate=rate)
            per = {s: c / profiles / res["lifetimes"] for s, c in res["calls"].items()}
            c = res["counters"]
            bad = {s: sum(v for k, v in c[s].items() if k != "api_ok") for s in STRATEGIES}
            dup = res["calls"]["token_worker"] / max(res["tw_cycles"], 1)
            note = (f"{w} worker{'s' if w > 1 else ''} with beat; {res['sent']} tasks; "
                    f"calls per refresh cycle {dup:.2f}; ideal L/(L-M) = {ideal:.2f}; "
                    f"tasks failing (401, no token): tw {bad['token_worker']}, "
                    f"fetch {bad['fetch']}, cached {bad['cached']}")
            rows.append(Row(NAME, f"W={w}: token_worker calls/profile/lifetime vs fetch per "
                            "task", per["token_worker"], per["fetch"], "fetch per task",
                            target="1 call per cycle", met=dup <= 1.0001 and bad[
                                "token_worker"] == 0, note=note))
            rows.append(Row(NAME, f"W={w}: token_worker calls/profile/lifetime vs cache per "
                            "process", per["token_worker"], per["cached"],
                            f"cache per process ({2 * w} processes)"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--lifetimes", type=int, default=4)
    args = ap.parse_args()
    print_rows(run(args.quick, tuple(args.workers), args.lifetimes))


if __name__ == "__main__":
    main()
