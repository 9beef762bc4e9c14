"""Beat's dispatch in a real fleet: each due refresh sent once, run at its due time."""

from __future__ import annotations

import math
import re
import time

import pytest

from token_worker.plan import batch_size
from token_worker.store import TokenStore, connect_redis
from token_worker.tokens import Token

from ..support import wait_until
from .conftest import Fleet

pytestmark = pytest.mark.integration

TASKS = re.compile(r"token_worker\.refresh_(profile|batch)\[[^\]]*\] received")


def received(fleet: Fleet) -> dict[str, int]:
    counts = {"profile": 0, "batch": 0}
    for worker in fleet.workers:
        for kind in TASKS.findall(worker.log()):
            counts[kind] += 1
    return counts


def test_a_backlog_is_sent_once_in_batches_however_many_ticks_pass(fleet: Fleet) -> None:
    # 130 profiles all missing, a slow endpoint and a tick every 0.2 s: the backlog takes
    # many ticks to drain, and not one profile is sent twice meanwhile
    names = {f"m{i:03d}": ["client_paymentrequest"] for i in range(130)}
    fleet.emulator.set_latency(0.1)
    config = fleet.config(profiles=names, interval=0.2)
    fleet.start_worker(config, concurrency=2)
    store = TokenStore(connect_redis(fleet.redis_url), "stitch")
    try:
        assert wait_until(lambda: all(store.get_token(n) for n in names), 90)
        time.sleep(1.0)  # ticks after the last publish send nothing more
        counts = received(fleet)
        planned = math.ceil(len(names) / batch_size(len(names)))
        print(f"\n130 first tokens: {counts['batch']} batch tasks, {counts['profile']} "
              f"one-profile tasks (planned {planned}), {fleet.emulator.calls} calls")
        assert fleet.emulator.calls == len(names)
        assert counts["batch"] >= 1
        assert counts["batch"] + counts["profile"] <= planned + 2
        assert store.claims() == {}  # every claim released by its task
    finally:
        store.close()


def test_refreshes_run_at_their_due_time_not_at_the_next_tick(fleet: Fleet) -> None:
    # a tick every 6 s; five tokens come due 10-14.8 s from now, between ticks: each
    # refresh runs within moments of its due time, not up to a whole interval later
    names = {f"d{i}": ["client_paymentrequest"] for i in range(5)}
    config = fleet.config(profiles=names, interval=6)
    store = TokenStore(connect_redis(fleet.redis_url), "stitch")
    try:
        now = store.time()
        due = {n: now + 10 + 1.2 * i for i, n in enumerate(names)}
        for n, at in due.items():  # valid tokens, due at their own moment
            store.publish(n, Token(f"old-{n}", "Bearer", ("client_paymentrequest",), now,
                                   now + 600, at))
        fleet.start_worker(config)
        assert wait_until(lambda: all(
            (t := store.get_token(n)) is not None and t.issued_at > now for n in names), 60)
        lateness = {}
        for n in names:
            tok = store.get_token(n)
            assert tok is not None
            lateness[n] = tok.issued_at - due[n]
        print(f"\nissued after due (tick every 6 s): "
              f"{', '.join(f'{v:.2f}s' for v in lateness.values())}")
        # never before due; late by a fraction of a second, not by up to the 6 s interval
        assert all(-0.05 <= v <= 1.0 for v in lateness.values()), lateness
    finally:
        store.close()
