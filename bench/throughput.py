"""Benchmark 4: refresh throughput and how flat the load on the endpoint stays.

Burst: 1,000 profiles hold valid tokens whose ``refresh_at`` is the same instant; from
that instant, how long until all 1,000 are refreshed by W = 1, 2, 4 workers (beat on
the first only, the recommended topology) against the emulator answering each call
after 50 ms. Baseline, same run: the limit ``calls x latency / concurrency`` for the
concurrency used (W x the pool size).

Steady state: a cold fleet (W = 2) with 1,000 profiles and short-lived tokens runs for
several lifetimes; the most endpoint calls in any one second, against the mean rate.

    .venv/bin/python -m bench.throughput [--pool prefork|threads] [--concurrency N]
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from token_worker.constants import KNOWN_SCOPES
from token_worker.events import Event
from token_worker.plan import BATCH_THREADS, batch_size
from token_worker.store import TokenStore, connect_redis
from token_worker.subscriber import Subscriber
from token_worker.tokens import Token

from .common import (
    Reads,
    RedisServer,
    Row,
    Worker,
    bench_worker,
    cpu_seconds,
    discard,
    print_rows,
    redis_server,
    tempdir,
)
from .fleet import CLIENT_ID, PREFIX, SECRET, RecordingEmulator, write_config

NAME = "4 refresh throughput"
LATENCY = 0.05


def _profiles(n: int) -> dict[str, str]:
    return {f"p{i:04d}": KNOWN_SCOPES[i % len(KNOWN_SCOPES)] for i in range(n)}


def _set_tokens(store: TokenStore, names: list[str], issued: float, expires: float,
                refresh_at: float, now: float) -> None:
    pipe = store.redis.pipeline(transaction=False)
    for name in names:
        tok = Token(access_token=f"seed-{name}-" + "x" * 40, token_type="Bearer",
                    scopes=("client_paymentrequest",), issued_at=issued, expires_at=expires,
                    refresh_at=refresh_at)
        pipe.set(store.keys.token(name), tok.to_json(), px=int((expires - now) * 1000))
        pipe.zadd(store.keys.schedule(), {name: refresh_at})
    pipe.execute()


class _Published:
    """When each profile's token was first (re)published, heard on the events channel."""

    def __init__(self, url: str, prefix: str) -> None:
        self.store = TokenStore(connect_redis(url), prefix)
        self.times: dict[str, float] = {}
        self.subscriber = Subscriber(self.store, self._heard, name="bench-published")
        self.subscriber.start()
        if not self.subscriber.subscribed.wait(5):
            raise RuntimeError("the events channel did not subscribe")

    def _heard(self, event: Event) -> None:
        if event.kind == "published":
            self.times.setdefault(event.profile, time.monotonic())

    def wait(self, n: int, deadline: float) -> None:
        """Until ``n`` profiles were published, or the (monotonic) deadline."""
        # re-checked often: the last event may reach this wait before the recorder
        self.store.wait_for(lambda: len(self.times) >= n, deadline, every=0.1)

    def close(self) -> None:
        self.subscriber.stop(5)
        self.store.redis.close()


def burst(server: RedisServer, workers: int, n: int, pool: str, concurrency: int,
          interval: float, max_batch: int | None = None) -> dict[str, Any]:
    tmp = tempdir("tw-bench-burst-")
    admin = server.client()
    admin.flushall()
    emu = RecordingEmulator(clients={CLIENT_ID: SECRET}, expires_in=3600).start()
    emu.set_latency(LATENCY)
    names = _profiles(n)
    store = TokenStore(connect_redis(server.url), PREFIX)
    procs: list[Worker] = []
    published: _Published | None = None
    try:
        now = store.time()
        # valid tokens, not due for an hour: the workers start idle
        _set_tokens(store, list(names), now, now + 3600, now + 3000, now)
        config = write_config(tmp / "token_worker.toml", redis_url=server.url,
                              broker_url=server.url.rsplit("/", 1)[0] + "/1",
                              token_url=emu.url, profiles=names, margin=600,
                              interval=interval,
                              refresh=None if max_batch is None else {"max_batch": max_batch})
        env = {"STITCH_CLIENT_SECRET": SECRET, "TOKEN_WORKER_CONFIG": str(config)}
        for i in range(workers):
            procs.append(bench_worker("token_worker.celery_app", "tokens", env, tmp, f"tw{i}",
                                      pool=pool, concurrency=concurrency, beat=i == 0))
        for p in procs:
            p.wait_ready()
        time.sleep(2 * interval)
        assert emu.calls == 0, "workers refreshed tokens that were not due"
        published = _Published(server.url, PREFIX)
        pids = [pid for p in procs for pid in p.pids()]
        cpu0 = cpu_seconds(pids)
        # every token due at the same instant t0 (fleet clock), a moment from now
        now = store.time()
        t0_fleet = now + 0.3
        _set_tokens(store, list(names), now - 3000, now + 600, t0_fleet, now)
        t0 = time.monotonic() + (t0_fleet - store.time())
        reads = Reads(server.url, PREFIX, list(names))
        published.wait(n, time.monotonic() + 120)
        read_count, misses = reads.stop()
        if reads.why:
            print("reader misses:", *reads.why, sep="\n  ")
        done = len(published.times)
        last = max(published.times.values()) if published.times else float("nan")
        first_call = min((t for t, _ in emu.call_log), default=float("nan"))
        cpu = cpu_seconds(pids) - cpu0
        stats = emu.stats()
        time.sleep(0.5)  # the last task's "succeeded" line
        tasks = sum(len(re.findall(rb"refresh_(?:profile|batch)\[[^\]]*\] received",
                                   p.log_path.read_bytes()))
                    for p in procs)
        return {"done": done, "from_t0": last - t0, "from_first_call": last - first_call,
                "tick_wait": first_call - t0, "calls": stats["calls"],
                "concurrent_max": stats["concurrent_max"], "worker_cpu": cpu,
                "tasks": tasks, "reads": read_count, "misses": misses}
    finally:
        if published is not None:
            published.close()
        for p in procs:
            p.stop()
        emu.stop()
        store.redis.close()
        admin.close()
        discard(tmp)


def steady(server: RedisServer, workers: int, n: int, pool: str, concurrency: int,
           lifetime: float, margin: float, interval: float, lifetimes: int) -> dict[str, Any]:
    tmp = tempdir("tw-bench-steady-")
    admin = server.client()
    admin.flushall()
    emu = RecordingEmulator(clients={CLIENT_ID: SECRET}, expires_in=lifetime).start()
    emu.set_latency(LATENCY)
    names = _profiles(n)
    procs: list[Worker] = []
    try:
        config = write_config(tmp / "token_worker.toml", redis_url=server.url,
                              broker_url=server.url.rsplit("/", 1)[0] + "/1",
                              token_url=emu.url, profiles=names, margin=margin,
                              interval=interval)
        env = {"STITCH_CLIENT_SECRET": SECRET, "TOKEN_WORKER_CONFIG": str(config)}
        for i in range(workers):
            procs.append(bench_worker("token_worker.celery_app", "tokens", env, tmp, f"tw{i}",
                                      pool=pool, concurrency=concurrency, beat=i == 0))
        for p in procs:
            p.wait_ready()
        # cold start: every profile is missing, so the first tick refreshes all at once
        while not emu.call_log:
            time.sleep(0.05)
        start = emu.call_log[0][0]
        end = start + lifetimes * lifetime
        while len(emu.call_log) < n and time.monotonic() < end:  # the cold fill
            time.sleep(0.05)
        time.sleep(0.5)  # its last publishes
        reads = Reads(server.url, PREFIX, list(names))
        while time.monotonic() < end:
            time.sleep(0.2)
        read_count, misses = reads.stop()
        if reads.why:
            print("reader misses:", *reads.why, sep="\n  ")
        times = sorted(t - start for t, _ in emu.call_log if t <= end)
        failed = emu.stats()["failed"]
    finally:
        for p in procs:
            p.stop()
        emu.stop()
        admin.close()
        discard(tmp)

    def max_in_window(ts: list[float], lo: float, hi: float) -> int:
        sel = [t for t in ts if lo <= t < hi]
        best, j = 0, 0
        for i, t in enumerate(sel):  # sliding one-second window
            while sel[j] <= t - 1.0:
                j += 1
            best = max(best, i - j + 1)
        return best

    total = lifetimes * lifetime
    after_first = [t for t in times if t >= lifetime]
    # the cold fill ends with the n-th call (every profile's first token); the first
    # rotations start after it
    fill_end = times[n - 1] if len(times) >= n else total
    after_fill = [t for t in times if t > fill_end]
    return {"calls": len(times), "mean": len(times) / total,
            "mean_after": len(after_first) / (total - lifetime),
            "max_all": max_in_window(times, 0, total),
            "max_after": max_in_window(times, lifetime, total), "failed": failed,
            "fill": fill_end, "max_after_fill": max_in_window(times, fill_end + 1e-9, total),
            "mean_after_fill": len(after_fill) / max(total - fill_end, 1e-9),
            "ideal_rate": n / (lifetime - margin), "reads": read_count, "misses": misses}


def run(quick: bool = False, pool: str = "prefork", concurrency: int = 4,
        max_batch: int | None = None) -> list[Row]:
    n = 300 if quick else 1000
    interval = 0.5
    rows: list[Row] = []
    with redis_server() as server:
        for w in ((1, 2) if quick else (1, 2, 4)):
            res = burst(server, w, n, pool, concurrency, interval, max_batch)
            limit = n * LATENCY / (w * concurrency)
            ratio = res["from_first_call"] / limit
            rows.append(Row(
                NAME, f"{n:,} due at once, W={w} × -P {pool} -c {concurrency}: first call → "
                "all published", res["from_first_call"], limit,
                f"limit {n}×{LATENCY * 1000:.0f} ms/{w * concurrency}", "s", ratio=ratio,
                target="≤ 1.25x, tasks ≤ 1.05x refreshes",
                met=ratio <= 1.25 and res["done"] == n and res["tasks"] <= 1.05 * n,
                note=f"{res['done']}/{n} done, {res['calls']} calls, {res['tasks']} "
                     f"refresh tasks ({res['tasks'] / max(res['done'], 1):.2f} per refresh; "
                     f"batches of up to {min(batch_size(n), max_batch or batch_size(n))}, "
                     f"{BATCH_THREADS} at once), peak "
                     f"{res['concurrent_max']} calls in flight; "
                     f"workers used {res['worker_cpu']:.1f} CPU-s "
                     f"({res['worker_cpu'] / max(res['done'], 1) * 1000:.1f} ms per refresh); "
                     f"+ {res['tick_wait']:.2f} s before that to the beat tick (interval "
                     f"{interval:g} s); reader misses {res['misses']} of {res['reads']} reads"))
        # fewer profiles than the burst: the mean rate must sit well below the fleet's
        # capacity, or the backlog itself spreads the calls and hides what jitter does
        lifetime, margin, lifetimes = (10.0, 2.5, 3) if quick else (12.0, 3.0, 4)
        n = 300
        st = steady(server, 2, n, pool, concurrency, lifetime, margin, interval, lifetimes)
        rows.append(Row(
            NAME, f"steady state, {n:,} profiles, {lifetime:g} s tokens, {lifetimes} lifetimes, "
            "W=2: max calls in any 1 s", st["max_all"], st["mean"], "mean calls/s",
            "calls", note=f"cold start: all {n} fetched in the first tick; {st['calls']} calls, "
                          f"{st['failed']} failed"))
        rows.append(Row(
            NAME, "steady state from the first rotations on (after the cold fill): max "
            "calls in any 1 s", st["max_after_fill"], st["mean_after_fill"], "mean calls/s",
            "calls", target="≤ 1.5x", met=st["max_after_fill"] <= 1.5 * st["mean_after_fill"],
            note=f"the cold fill (every first token) took {st['fill']:.1f} s; reader misses "
                 f"after it: {st['misses']} of {st['reads']} reads"))
        rows.append(Row(
            NAME, "steady state after the first lifetime: max calls in any 1 s",
            st["max_after"], st["mean_after"], "mean calls/s", "calls", target="≤ 1.5x",
            met=st["max_after"] <= 1.5 * st["mean_after"],
            note=f"ideal flat rate {st['ideal_rate']:.0f}/s = {n}/(L−M)"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pool", default="prefork", choices=["threads", "prefork"])
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=None,
                    help="refresh.max_batch for the burst (1: no batches, as in 0.1)")
    args = ap.parse_args()
    print_rows(run(args.quick, args.pool, args.concurrency, args.max_batch))


if __name__ == "__main__":
    main()
