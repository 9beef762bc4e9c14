"""The payment tasks of the fleet benchmark, written the way users write them.

Three ways a payment task gets its bearer token before calling the API:

* ``bench.pay_fetch``: fetch per task. POST to the token endpoint, then call the API.
  The first thing everyone writes.
* ``bench.pay_cached``: cache per process. A module-level dict of token and expiry,
  refetched when less than ``BENCH_MARGIN`` seconds are left. The usual second step:
  every worker process keeps its own copy.
* ``bench.pay_token_worker``: read the fleet's token with :class:`TokenReader`.

Each task then "calls the API": a POST to the emulator's ``/api`` with the bearer,
which answers 401 to an expired or unknown token. Outcomes are counted in Redis
(``INCR``), so the benchmark sees what every process did.

Run as ``celery -A bench.baselines worker -Q <queue>`` with the environment set by
:mod:`bench.fleet` (``BENCH_*``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
import requests
from celery import Celery

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "memory://")
TOKEN_URL = os.environ.get("BENCH_TOKEN_URL", "http://127.0.0.1:1/connect/token")
API_URL = TOKEN_URL.rsplit("/connect/token", 1)[0] + "/api"
CLIENT_ID = os.environ.get("BENCH_CLIENT_ID", "test-7a1c")
CLIENT_SECRET = os.environ.get("STITCH_CLIENT_SECRET", "")
MARGIN = float(os.environ.get("BENCH_MARGIN", "60"))
STORE_URL = os.environ.get("BENCH_STORE_URL", "redis://127.0.0.1:1/0")
PREFIX = os.environ.get("BENCH_PREFIX", "stitch")
COUNTERS = os.environ.get("BENCH_COUNTERS", "bench:counters")
QUEUE = os.environ.get("BENCH_QUEUE", "payments")

app = Celery("bench_payments", broker=BROKER_URL)
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True,
    task_default_queue=QUEUE, broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# per process, created on first use (after the pool forks)
_session: dict[int, requests.Session] = {}
_counters: dict[int, redis.Redis] = {}


def session() -> requests.Session:
    pid = os.getpid()
    if pid not in _session:
        _session[pid] = requests.Session()
    return _session[pid]


def count(outcome: str) -> None:
    pid = os.getpid()
    if pid not in _counters:
        _counters[pid] = redis.Redis.from_url(STORE_URL)
    _counters[pid].hincrby(COUNTERS, outcome, 1)


def call_api(token: str) -> None:
    r = session().post(API_URL, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    count("api_ok" if r.status_code == 200 else f"api_{r.status_code}")


# -- fetch per task ----------------------------------------------------------------
def fetch_token(scope: str) -> dict[str, Any]:
    r = session().post(TOKEN_URL, data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "scope": scope, "audience": TOKEN_URL,
    }, timeout=10)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


@app.task(name="bench.pay_fetch")
def pay_fetch(profile: str, scope: str) -> None:
    try:
        token = fetch_token(scope)["access_token"]
    except requests.RequestException:
        count("token_error")
        return
    call_api(token)


# -- cache per process -------------------------------------------------------------
_cache: dict[str, tuple[str, float]] = {}


def cached_token(scope: str) -> str:
    hit = _cache.get(scope)
    if hit is not None and time.time() < hit[1] - MARGIN:
        return hit[0]
    body = fetch_token(scope)
    _cache[scope] = (body["access_token"], time.time() + float(body["expires_in"]))
    return str(body["access_token"])


@app.task(name="bench.pay_cached")
def pay_cached(profile: str, scope: str) -> None:
    try:
        token = cached_token(scope)
    except requests.RequestException:
        count("token_error")
        return
    call_api(token)


# -- token_worker ------------------------------------------------------------------
_reader: dict[int, Any] = {}


def reader() -> Any:
    pid = os.getpid()
    if pid not in _reader:
        from token_worker import TokenReader

        # tokens live seconds here, not an hour: scale the safety floor with them
        _reader[pid] = TokenReader(STORE_URL, PREFIX, min_ttl=float(
            os.environ.get("BENCH_MIN_TTL", "0.5")))
    return _reader[pid]


@app.task(name="bench.pay_token_worker")
def pay_token_worker(profile: str, scope: str) -> None:
    from token_worker import TokenUnavailable

    try:
        token = reader().get_access_token(profile, wait=2.0)
    except TokenUnavailable:
        count("token_unavailable")
        return
    call_api(token)


# a Celery worker with no tasks of its own: the footprint baseline
bare = Celery("bench_bare", broker=BROKER_URL)
bare.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
