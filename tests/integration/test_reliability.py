"""Faults injected for real into running fleets: endpoint outages, bad answers, Redis
loss, paused and killed workers, skewed reader clocks and 401s from the API.

Each test starts ``celery worker --beat`` subprocesses (the ``fleet`` fixture) and
measures what the fault cost: endpoint calls and time to recovery. The numbers are
printed (``pytest -s``) and quoted in the README's "Failure behaviour" table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from celery import Celery
from freezegun import freeze_time

from tests.support import CLIENT_ID, wait_until
from token_worker import Token, TokenReader, TokenUnavailable
from token_worker.config import load_config
from token_worker.store import TokenStore, connect_redis
from token_worker.testing.configs import write_config as write_base_config
from token_worker.testing.emulator import Emulator

from .conftest import HEAVY, Fleet, subprocess_env

pytestmark = pytest.mark.integration

SCOPES = {"payments": "client_paymentrequest", "refunds": "client_refund",
          "disbursements": "client_disbursement"}


def write_config(path: Path, *, redis_url: str, token_url: str, profiles: list[str],
                 margin: float, interval: float, retries: int = 2, timeout: float = 5,
                 clients: dict[str, str] | None = None,
                 client_of: dict[str, str] | None = None) -> Path:
    """A fleet config with several clients (``name -> secret env``); the first is the
    default, ``client_of`` names another for a profile."""
    clients = clients or {"main": "STITCH_CLIENT_SECRET"}
    return write_base_config(
        path, redis_url=redis_url, token_url=token_url, prefix=None, margin=margin,
        interval=interval, retries=retries, timeout=timeout,
        clients={name: {"client_id": CLIENT_ID, "client_secret_env": env}
                 for name, env in clients.items()},
        profiles={name: {"scopes": [SCOPES[name]],
                         "client": (client_of or {}).get(name, next(iter(clients)))}
                  for name in profiles})


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


class Reads:
    """A thread reading one profile every few milliseconds, recording each outcome.

    Each entry is (clock before, clock after, Token or TokenUnavailable); ``clock``
    is the reference the test trusts (the fleet clock, unless Redis is down).
    """

    def __init__(self, reader: TokenReader, profile: str, clock: Callable[[], float],
                 pause: float = 0.02) -> None:
        self.reader, self.profile, self.clock, self.pause = reader, profile, clock, pause
        self.log: list[tuple[float, float, Token | TokenUnavailable]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            before = self.clock()
            try:
                outcome: Token | TokenUnavailable = self.reader.get(self.profile)
            except TokenUnavailable as exc:
                outcome = exc
            self.log.append((before, self.clock(), outcome))
            time.sleep(self.pause)

    def __enter__(self) -> Reads:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def tokens(self) -> list[tuple[float, float, Token]]:
        return [(b, a, o) for b, a, o in self.log if isinstance(o, Token)]

    def errors(self) -> list[tuple[float, float, TokenUnavailable]]:
        return [(b, a, o) for b, a, o in self.log if isinstance(o, TokenUnavailable)]


def fleet_clock(url: str) -> Callable[[], float]:
    store = TokenStore(connect_redis(url))
    return store.time


@pytest.fixture
def calls(emulator: Emulator) -> Iterator[CallLog]:
    with CallLog(emulator) as log:
        yield log


def status_json(fleet: Fleet, config: Path) -> dict[str, dict[str, object]]:
    result = fleet.cli(config, "status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return {row["profile"]: row for row in json.loads(result.stdout)}


# -- 1. retry and backoff ------------------------------------------------------------------

def test_failing_refreshes_back_off_across_the_fleet(fleet: Fleet, calls: CallLog) -> None:
    # two workers, two beats ticking every second, one shared schedule. payments: a due
    # token with plenty of life left; refunds: no token at all; both then get 503s for
    # every call. disbursements: its client secret was revoked (invalid_client)
    fleet.emulator.set_expires_in(120)
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=list(SCOPES),
                          margin=118, interval=1,
                          clients={"main": "STITCH_CLIENT_SECRET", "revoked": "REVOKED_SECRET"},
                          client_of={"disbursements": "revoked"})
    workers = [fleet.start_worker(config, env={"REVOKED_SECRET": "not-the-secret"})
               for _ in range(2)]
    reader = TokenReader(fleet.redis_url, cache=False)
    for p in ("payments", "refunds"):
        reader.get(p, wait=60)
    reader.close()
    time.sleep(0.1)  # the call log has seen the first calls
    fleet.emulator.set_faults([{"mode": "http_error", "status": 503}])
    TokenStore(connect_redis(fleet.redis_url)).purge("refunds")
    outage = time.monotonic()
    assert wait_until(lambda: calls.first("payments", outage) and calls.first("refunds", outage),
                      10)
    last = max(calls.first(p, outage) or 0 for p in ("payments", "refunds"))
    time.sleep(max(0.0, last + 10.2 - time.monotonic()))
    for p in ("payments", "refunds"):
        start = calls.first(p, outage)
        assert start is not None
        n = calls.calls(p, start, start + 10)
        print(f"\n{p}: {n} calls in the 10 s from the first failing one, at "
              f"{calls.offsets(p, start)}")
        # the first attempt: 3 calls (healthy, so retried within it), then backoff
        # steps of 1-2, 2-4, 4-8 s: at most 3 more attempts in 10 s
        assert n <= 6

    # invalid_client: one call for the whole fleet, one ERROR, then quiet (60 s without a
    # token, up to 300 s with one); a revoked secret must not hammer the endpoint
    row = status_json(fleet, config)["disbursements"]
    logs = "\n".join(w.log() for w in workers)
    errors = [line for line in logs.splitlines()
              if "profile=disbursements outcome=failed" in line]
    print(f"disbursements: {calls.calls('disbursements')} call in "
          f"{time.time() - workers[0].started:.0f}s; "
          f"next attempt in {row['refresh_in']:.0f}s; {row['last_error']}")
    assert calls.calls("disbursements") == 1
    assert len(errors) == 1 and "ERROR/" in errors[0] and "invalid_client" in errors[0]
    assert row["last_error_code"] == "invalid_client" and row["state"] == "missing"
    assert float(str(row["refresh_in"])) > 30


# -- 2. serve through outages -------------------------------------------------------------

# answers that must never be published; all but html and malformed_json carry a real token
MALFORMED = ["html", "malformed_json", "missing_token", "bad_expires", "wrong_token_type",
             "scope_not_granted"]


@HEAVY
# after the soak on its worker: the two timing workers then finish together
@pytest.mark.xdist_group("soak")
def test_readers_keep_the_current_token_through_an_outage_until_it_truly_expires(
        fleet: Fleet, calls: CallLog) -> None:
    lifetime, margin, min_ttl = 10, 8, 0.5
    fleet.emulator.set_expires_in(lifetime)
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=["payments"],
                          margin=margin, interval=1)
    fleet.start_worker(config)
    reader = TokenReader(fleet.redis_url, min_ttl=min_ttl)
    first = reader.get("payments", wait=60)
    issued = len(fleet.emulator.issued_tokens)
    # the outage: every malformed answer once, then 503s
    fleet.emulator.set_faults([{"mode": m, "count": 1} for m in MALFORMED]
                              + [{"mode": "http_error", "status": 503}])
    clock = fleet_clock(fleet.redis_url)
    with Reads(reader, "payments", clock) as reads:
        # 4 s before expiry: the CLI needs a second or two to start, and its answer must
        # come while the token still lives (at 2 s a loaded machine read it "expired")
        while clock() < first.expires_at - 4:
            time.sleep(0.1)
        row = status_json(fleet, config)["payments"]
        while clock() < first.expires_at + 1:
            time.sleep(0.1)
    print(f"\nduring the outage: state={row['state']} failures={row['consecutive_failures']} "
          f"last_error={row['last_error']!r}")
    assert row["state"] == "refresh_due"
    assert row["last_error"] and int(str(row["consecutive_failures"])) >= 2
    tokens, errors = reads.tokens(), reads.errors()
    # served until min_ttl before the true expiry, never after it, and only the first token
    assert {t.fingerprint for _, _, t in tokens} == {first.fingerprint}
    assert all(t.expires_at > after for _, after, t in tokens)
    last_ok = max(after for _, after, _ in tokens)
    first_error = min(before for before, _, _ in errors)
    print(f"last read served {first.expires_at - last_ok:.2f}s before expiry; first refusal "
          f"{first.expires_at - first_error:.2f}s before it (min_ttl {min_ttl:g}s); "
          f"{len(tokens)} reads served, {calls.calls('payments')} endpoint calls")
    assert first_error >= first.expires_at - min_ttl - 0.1
    assert first.expires_at - last_ok <= min_ttl + 0.3
    assert all(e.reason == "expired" and e.last_error for _, _, e in errors), errors[-1]
    # nothing an outage answered was ever published
    leaked = set(fleet.emulator.issued_tokens[issued:]) & {t.access_token for _, _, t in tokens}
    assert not leaked

    # recovery: the first success clears the failure count. Beat's own next attempt is
    # pushed out first, so the forced refresh is the only caller: a scheduled refresh
    # that lands between the end of the outage and the forced request is issued before
    # the request and rightly does not satisfy it (two calls, a race, not a defect)
    fleet.store_client().zadd("stitch:schedule", {"payments": clock() + 600})
    # and the new token lives long: a token fetched after failures takes its profile's
    # slot of the lead, which for a 2 s lead would be a rotation within the next second
    fleet.emulator.set_expires_in(300)
    fleet.emulator.set_faults([])
    before = calls.calls("payments")
    started = time.monotonic()
    result = fleet.cli(config, "refresh", "payments", "--force", "--wait", "15")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    row = status_json(fleet, config)["payments"]
    print(f"forced refresh after the outage: published in {took:.2f}s (CLI start included), "
          f"{calls.calls('payments') - before} call; failures now {row['consecutive_failures']}")
    assert row["state"] == "valid" and row["consecutive_failures"] == 0
    assert row["last_error"] is None
    assert calls.calls("payments") - before == 1
    assert reader.get("payments").fingerprint != first.fingerprint
    reader.close()


# -- 3. Redis faults -----------------------------------------------------------------------

def test_redis_lost_and_back_empty_republishes_every_profile(private_fleet: Fleet,
                                                              calls: CallLog) -> None:
    fleet, server = private_fleet, private_fleet.redis_server
    interval = 1.0
    fleet.emulator.set_expires_in(60)
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=list(SCOPES),
                          margin=30, interval=interval)
    worker = fleet.start_worker(config)
    stale = TokenReader(fleet.redis_url, socket_timeout=0.5)
    strict = TokenReader(fleet.redis_url, serve_stale=False, socket_timeout=0.5)
    held = {p: stale.get(p, wait=60) for p in SCOPES}
    for p in SCOPES:
        strict.get(p)
    worker.wait_ready()
    time.sleep(0.5)
    assert sum(calls.calls(p) for p in SCOPES) == 3

    server.kill()
    down = time.monotonic()
    time.sleep(0.2)
    for p in SCOPES:
        assert stale.get(p).fingerprint == held[p].fingerprint  # serve_stale
        with pytest.raises(TokenUnavailable) as err:
            strict.get(p)
        assert err.value.reason == "redis_unreachable"
        assert f"Redis unreachable at 127.0.0.1:{server.port}" in str(err.value)
    time.sleep(max(0.0, 3 - (time.monotonic() - down)))
    server.start()  # empty: it keeps nothing on disk
    up = time.monotonic()
    back: dict[str, float] = {}
    for p in SCOPES:
        token = strict.get(p, wait=60)
        back[p] = time.monotonic() - up
        assert token.fingerprint != held[p].fingerprint
    time.sleep(0.1)  # the call log catches up
    print(f"\nRedis down {up - down:.1f}s, back empty; re-published after "
          f"{ {p: round(t, 2) for p, t in back.items()} } (interval {interval:g}s), "
          f"{sum(calls.calls(p) for p in SCOPES) - 3} calls")
    # one interval plus one attempt, whatever Celery's own reconnect backoff is doing
    assert max(back.values()) <= interval + 1.5
    assert sum(calls.calls(p) for p in SCOPES) == 6  # one call per profile
    stale.close()
    strict.close()
    # the worker and its beat lived through it: a forced refresh goes through the broker
    started = time.monotonic()
    result = fleet.cli(config, "refresh", "payments", "--force", "--wait", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"forced refresh through the reconnected worker: {time.monotonic() - started:.2f}s")
    assert worker.proc.poll() is None
    log = worker.log()
    assert "Connected to redis://" in log.split("listener: token store unreachable")[1]


# -- 4. paused and killed workers ----------------------------------------------------------

def test_a_paused_refresher_finishing_late_never_overwrites_the_newer_token(
        fleet: Fleet, calls: CallLog) -> None:
    # a worker frozen mid-request (SIGSTOP; a VM pause or a long GC stall alike) outlives
    # its lock: another process refreshes, then the frozen one wakes up with its answer
    fleet.emulator.set_latency(1)
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=["payments"],
                          margin=600, interval=1, retries=0, timeout=1.5)
    lock_ttl = load_config(config).lock_ttl_seconds
    slow = fleet.start_worker(config)
    assert wait_until(lambda: calls.calls("payments") >= 1, 60), "no refresh started"
    os.killpg(slow.proc.pid, signal.SIGSTOP)  # main process, pool child and beat
    paused = time.monotonic()
    fleet.emulator.set_latency(0)  # the paused request was answered; it sits unread
    rds = fleet.store_client()
    assert rds.pttl("stitch:lock:payments") > 0

    result = fleet.cli(config, "refresh", "payments", "--force", "--local", "--wait",
                       str(lock_ttl + 10), timeout=lock_ttl + 30)
    took = time.monotonic() - paused
    assert result.returncode == 0, result.stdout + result.stderr
    newer = json.loads(rds.get("stitch:token:payments") or "{}")
    print(f"\nforced refresh took over {took:.1f}s after the pause (lock ttl {lock_ttl:g}s)")
    assert lock_ttl - 3 <= took <= lock_ttl + 3

    os.killpg(slow.proc.pid, signal.SIGCONT)
    # its late answer is refused: by the total deadline that ran out while it was frozen,
    # by the issue order, or by the fence; whichever, its outcome does not overwrite the
    # newer token nor the success recorded with it
    assert wait_until(lambda: "outcome=done_elsewhere" in slow.log()
                      and "superseded" in slow.log()
                      or "reason=newer token already published" in slow.log(), 20), \
        slow.log()[-3000:]
    assert rds.hget("stitch:status:payments", "last_outcome") != "failed"
    assert rds.hget("stitch:status:payments", "consecutive_failures") == "0"
    time.sleep(0.5)
    assert json.loads(rds.get("stitch:token:payments") or "{}") == newer
    assert calls.calls("payments") == 2
    # the paused worker carries on: its beat ticks again
    mark = len(slow.log())
    assert wait_until(lambda: "Sending due task" in slow.log()[mark:], 10)
    assert slow.proc.poll() is None


# -- 6. 401 from the API -------------------------------------------------------------------

REPORTER = textwrap.dedent("""
    import sys, threading
    from token_worker import TokenReader
    url, threads, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    readers = [TokenReader(url) for _ in range(threads)]
    token = readers[0].get("payments")
    print("ready", flush=True)
    sys.stdin.readline()
    firsts = []
    def report(reader):
        for _ in range(each):
            firsts.append(reader.report_rejected("payments", token))
    workers = [threading.Thread(target=report, args=(r,)) for r in readers]
    for w in workers: w.start()
    for w in workers: w.join()
    print(len(firsts), firsts.count(True), flush=True)
""")


def test_a_thousand_reports_of_a_rejected_token_cost_one_call(fleet: Fleet,
                                                              calls: CallLog) -> None:
    # a long interval: after the first tick, only the listener can refresh promptly
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=["payments"],
                          margin=600, interval=30)
    workers = [fleet.start_worker(config), fleet.start_worker(config)]
    reader = TokenReader(fleet.redis_url)
    token = reader.get("payments", wait=60)
    for w in workers:
        w.wait_ready()
    rds = fleet.store_client()
    assert wait_until(lambda: rds.pubsub_numsub("stitch:events")[0][1] >= 2, 10), \
        "the workers' listeners did not subscribe"
    api = requests.Session()
    api.auth = reader.auth("payments")
    assert api.post(fleet.emulator.base_url + "/api", timeout=5).status_code == 200
    fleet.emulator.revoke(token.access_token)
    # a bare header: the reader's auth would report the token and retry by itself
    refused = requests.post(fleet.emulator.base_url + "/api", timeout=5,
                            headers={"Authorization": f"Bearer {token.access_token}"})
    assert refused.status_code == 401
    assert "UNAUTHENTICATED: Token is expired or malformed" in refused.text

    # every task that got the 401 reports it: 4 processes x 5 threads x 50 reports
    procs = [subprocess.Popen([sys.executable, "-c", REPORTER, fleet.redis_url, "5", "50"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=subprocess_env()) for _ in range(4)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    before = calls.calls("payments")
    go = time.monotonic()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    # the task that saw the 401 waits for the replacement (pub/sub, not polling)
    mine = reader.report_rejected("payments", token)
    replacement = reader.get("payments", wait=10)
    waited = time.monotonic() - go
    reports = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    time.sleep(1)  # room for a duplicate refresh to show up
    new_calls = calls.calls("payments") - before
    print(f"\n{sum(n for n, _ in reports) + 1} reports, {sum(f for _, f in reports)} first; "
          f"replacement in {waited * 1000:.0f} ms; {new_calls} endpoint call")
    assert sum(n for n, _ in reports) == 1000
    assert sum(f for _, f in reports) + mine == 1  # one marker, whoever came first
    assert replacement.fingerprint != token.fingerprint
    assert new_calls == 1
    assert waited < 2
    # and the API takes the replacement
    assert api.post(fleet.emulator.base_url + "/api", timeout=5).status_code == 200
    api.close()
    reader.close()


USER_APP = textwrap.dedent("""
    import os
    from celery import Celery
    import token_worker
    from token_worker import TokenReader, token_or_retry

    app = Celery("userapp", broker=os.environ["USER_BROKER"], backend=os.environ["USER_BACKEND"])
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    task_default_queue="user")
    token_worker.register(app)  # its workers here consume "user" only
    reader = TokenReader(os.environ["USER_REDIS"], min_ttl=1)

    @app.task(bind=True, name="user.pay", max_retries=30)
    def pay(self):
        token = token_or_retry(self, reader, "payments", countdown=1)
        return {"retries": self.request.retries, "fingerprint": token.fingerprint}
""")


def test_token_or_retry_retries_a_task_until_the_token_exists(fleet: Fleet) -> None:
    (fleet.tmp / "userapp.py").write_text(USER_APP)
    base = fleet.redis_url.rsplit("/", 1)[0]
    env = {"USER_BROKER": f"{base}/1", "USER_BACKEND": f"{base}/2",
           "USER_REDIS": fleet.redis_url}
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=["payments"],
                          margin=600, interval=1)
    fleet.start_worker(config, app="userapp", queues="user", beat=False, env=env)
    client = Celery("client", broker=env["USER_BROKER"], backend=env["USER_BACKEND"],
                    set_as_current=False)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        result = client.send_task("user.pay", queue="user")
        # no refresher yet: the task finds no token and is retried, again and again
        assert wait_until(lambda: result.state == "RETRY", 30), result.state
        # a worker that does not consume the token queue runs no listener
        assert fleet.store_client().pubsub_numsub("stitch:events")[0][1] == 0
        time.sleep(1.5)
        fleet.start_worker(config)
        reader = TokenReader(fleet.redis_url)
        token = reader.get("payments", wait=60)
        published = time.monotonic()
        outcome = result.get(timeout=30)
        done = time.monotonic() - published
        reader.close()
    finally:
        client.close()
    print(f"\nuser task retried {outcome['retries']} times; succeeded {done:.2f}s after the "
          f"token was published (countdown 1s)")
    assert outcome["retries"] >= 2
    assert outcome["fingerprint"] == token.fingerprint
    assert done < 3


# -- 5. clock skew -------------------------------------------------------------------------

def test_a_reader_with_a_skewed_clock_never_serves_expired_nor_refuses_valid(
        fleet: Fleet) -> None:
    lifetime, margin, min_ttl = 6, 3, 0.5
    fleet.emulator.set_expires_in(lifetime)
    config = write_config(fleet.tmp / "tw.toml", redis_url=fleet.redis_url,
                          token_url=fleet.emulator.url, profiles=["payments"],
                          margin=margin, interval=0.5)
    fleet.start_worker(config)
    truth = fleet_clock(fleet.redis_url)  # Redis TIME: freezegun cannot touch it
    reader = TokenReader(fleet.redis_url, min_ttl=min_ttl)
    reader.get("payments", wait=60)
    log: list[tuple[str, float, float, Token | TokenUnavailable]] = []

    def read_until(end: float, phase: str) -> None:
        while (before := truth()) < end:
            try:
                outcome: Token | TokenUnavailable = reader.get("payments")
            except TokenUnavailable as exc:
                outcome = exc
            log.append((phase, before, truth(), outcome))
            time.sleep(0.01)

    def skewed(shift: float) -> object:
        # tick: the reader's clocks run, 5 minutes off; freezegun moves time.monotonic
        # along with the wall clock, so every switch makes the monotonic clock jump too
        return freeze_time(datetime.now(UTC) + timedelta(seconds=shift), tick=True)

    # rotation every ~3 s while the reader's clock switches between skews
    for shift in (300, -300, 0, 300, 0, -300, 0):
        with skewed(shift):
            read_until(truth() + 1.5, f"rotation {shift:+d}s")
    # an outage: the current token must be served to within min_ttl of its true expiry
    fleet.emulator.set_faults([{"mode": "http_error", "status": 503}])
    time.sleep(0.5)  # a refresh in flight publishes or fails
    store = TokenStore(connect_redis(fleet.redis_url))
    last = store.get_token("payments")
    assert last is not None
    with skewed(-300):
        read_until(truth() + 1, "outage -300s")
    read_until(last.expires_at - 1.5, "outage real clock")
    with skewed(300):
        read_until(last.expires_at - 0.8, "outage +300s")
    read_until(last.expires_at + 1, "outage real clock, expired")

    served = [(p, b, a, t) for p, b, a, t in log if isinstance(t, Token)]
    refused = [(p, b, a, e) for p, b, a, e in log if isinstance(e, TokenUnavailable)]
    print(f"\n{len(served)} reads served, {len(refused)} refused, across "
          f"{len({p for p, *_ in log})} clock phases")
    expired = [(p, round(a - t.expires_at, 2)) for p, _, a, t in served if t.expires_at <= a]
    assert not expired, f"expired tokens served: {expired[:5]}"
    short = [(p, round(t.expires_at - b, 2)) for p, b, _, t in served
             if t.expires_at - b < min_ttl - 0.05]
    assert not short, f"tokens served with less than min_ttl left: {short[:5]}"
    early = [(p, round(last.expires_at - b, 2), str(e)) for p, b, _, e in refused
             if not p.startswith("outage") or b < last.expires_at - min_ttl - 0.1]
    assert not early, f"valid tokens refused: {early[:5]}"
    assert refused, "the token never expired"
    last_ok = max(a for p, _, a, t in served if t.fingerprint == last.fingerprint)
    assert last.expires_at - last_ok <= min_ttl + 0.3
    reader.close()
