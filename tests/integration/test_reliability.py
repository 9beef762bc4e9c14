"""Faults injected for real into running fleets: endpoint outages, bad answers, Redis
loss, paused and killed workers, skewed reader clocks and 401s from the API.

Each test starts ``celery worker --beat`` subprocesses (the ``fleet`` fixture) and
measures what the fault cost: endpoint calls and time to recovery. The numbers are
printed (``pytest -s``) and quoted in the README's "Failure behaviour" table.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import CLIENT_ID, wait_until
from token_worker.emulator import Emulator

from .conftest import Fleet

pytestmark = pytest.mark.integration

SCOPES = {"payments": "client_paymentrequest", "refunds": "client_refund",
          "disbursements": "client_disbursement"}


def write_config(path: Path, *, redis_url: str, token_url: str, profiles: list[str],
                 margin: float, interval: float, retries: int = 2, timeout: float = 5,
                 margins: dict[str, float] | None = None,
                 clients: dict[str, str] | None = None,
                 client_of: dict[str, str] | None = None) -> Path:
    """A fleet config with per-profile margins and clients (``name -> secret env``)."""
    clients = clients or {"main": "STITCH_CLIENT_SECRET"}
    lines = [
        "[redis]", f'url = "{redis_url}"', "", "[celery]",
        f'broker_url = "{redis_url.rsplit("/", 1)[0]}/1"', "",
        "[stitch]", f'token_url = "{token_url}"', f"timeout_seconds = {timeout}", "",
        "[refresh]", f"margin_seconds = {margin}", f"interval_seconds = {interval}",
        f"retries = {retries}", "",
    ]
    for name, env in clients.items():
        lines += [f"[clients.{name}]", f'client_id = "{CLIENT_ID}"',
                  f'client_secret_env = "{env}"', ""]
    for name in profiles:
        lines += [f"[profiles.{name}]", f'scopes = ["{SCOPES[name]}"]',
                  f'client = "{(client_of or {}).get(name, next(iter(clients)))}"']
        if margins and name in margins:
            lines.append(f"margin_seconds = {margins[name]}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class CallLog:
    """When each token endpoint call happened, per scope (polls the emulator's counters)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.times: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seen: dict[str, int] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for scope, n in self.emulator.stats()["by_scope"].items():
                self.times.setdefault(scope, []).extend([now] * (n - seen.get(scope, 0)))
                seen[scope] = n
            time.sleep(0.01)

    def __enter__(self) -> CallLog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def calls(self, profile: str, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for t in self.times.get(SCOPES[profile], []) if since <= t < until)

    def first(self, profile: str, since: float = 0.0) -> float | None:
        return next((t for t in self.times.get(SCOPES[profile], []) if t >= since), None)

    def offsets(self, profile: str, since: float) -> list[float]:
        return [round(t - since, 2) for t in self.times.get(SCOPES[profile], []) if t >= since]


@pytest.fixture
def calls(emulator: Emulator) -> Iterator[CallLog]:
    with CallLog(emulator) as log:
        yield log


def status_json(fleet: Fleet, config: Path) -> dict[str, dict[str, object]]:
    result = fleet.cli(config, "status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return {row["profile"]: row for row in json.loads(result.stdout)}


# -- 1. retry and backoff ------------------------------------------------------------------

def test_ten_seconds_of_503_cost_at_most_six_calls_per_profile(fleet: Fleet,
                                                               calls: CallLog) -> None:
    # payments: a due token with plenty of life left; refunds: no token at all
    fleet.emulator.set_expires_in(120)
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=["payments", "refunds"],
                          margin=118, interval=1)
    fleet.start_worker(config)
    from token_worker import TokenReader
    from token_worker.store import TokenStore, connect_redis

    reader = TokenReader(fleet.redis_url, cache=False)
    for p in ("payments", "refunds"):
        reader.get(p, wait=60)
    reader.close()
    fleet.emulator.set_faults([{"mode": "http_error", "status": 503}])
    TokenStore(connect_redis(fleet.redis_url)).purge("refunds")
    outage = time.monotonic()
    time.sleep(13)
    for p in ("payments", "refunds"):
        start = calls.first(p, outage)
        assert start is not None, f"{p}: no attempt during the outage"
        n = calls.calls(p, start, start + 10)
        print(f"\n{p}: {n} calls in the 10 s after the first failing one: "
              f"{calls.offsets(p, start)}")
        assert n <= 6
        print("\n".join(l for l in fleet.workers[0].log().splitlines() if "refunds" in l or "payments" in l))
