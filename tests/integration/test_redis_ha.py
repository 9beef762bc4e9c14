"""Sentinel and Cluster, for real: a worker with beat, readers, and a primary killed -9.

Each scenario prints its figures (failover time, reads that failed, time until the first
token on the new primary, endpoint calls per profile); the README's failure table quotes
them. Reproduce with ``.venv/bin/python -m pytest tests/integration/test_redis_ha.py -s``.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from token_worker import TokenReader, TokenUnavailable
from token_worker.exceptions import StoreError
from token_worker.store import RedisTarget, TokenStore
from token_worker.testing import Worker, celery_worker, free_port, wait_until, write_config
from token_worker.testing.emulator import Emulator
from token_worker.testing.topologies import RedisCluster, SentinelSet

from ..support import rabbitmq_up
from .conftest import HEAVY, THREE, subprocess_env

pytestmark = pytest.mark.integration

LIFETIME, MARGIN, INTERVAL = 12.0, 6.0, 0.5
AMQP = "amqp://guest:guest@127.0.0.1:5672//"



@dataclass
class Reads:
    """Readers in threads, each reading every profile every 20 ms."""

    url: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    least_left: float = float("inf")
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, n: int = 2) -> Reads:
        for _ in range(n):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self) -> None:
        reader = TokenReader(self.url, min_ttl=0.5, socket_timeout=1.0)
        try:
            while not self._stop.is_set():
                for profile in THREE:
                    try:
                        token = reader.get(profile)
                    except TokenUnavailable as exc:
                        self.failed.append(f"{time.time():.2f} {exc.reason}: {exc}")
                        continue
                    self.ok += 1
                    left = token.expires_at - time.time()
                    self.least_left = min(self.least_left, left)
                self._stop.wait(0.02)
        finally:
            reader.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def _calls_per_profile(emulator: Emulator) -> dict[str, int]:
    by_scope = emulator.stats()["by_scope"]
    return {p: by_scope.get(" ".join(scopes), 0) for p, scopes in THREE.items()}


def _issued_after(client: redis.Redis, key_base: str, since: float) -> float | None:
    """When (wall clock) a token issued after ``since`` shows on this server, or None."""
    try:
        for profile in THREE:
            raw = client.get(f"{key_base}:token:{profile}")
            if raw and json.loads(raw)["issued_at"] > since:
                return time.time()
    except (redis.RedisError, OSError):
        return None
    return None


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def _worker(workdir: Path, config: Path) -> Worker:
    worker = celery_worker(workdir, f"ha-{uuid.uuid4().hex[:6]}", queues="tokens",
                           env=subprocess_env(TOKEN_WORKER_CONFIG=str(config)))
    worker.wait_ready()
    return worker


def _cli(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "token_worker", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=90, cwd=workdir,
                          env=subprocess_env())


def _report(name: str, figures: dict[str, object]) -> None:
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


# -- Sentinel ---------------------------------------------------------------------------

@HEAVY
def test_sentinel_failover_loses_no_read_and_costs_at_most_the_lost_publish(
        workdir: Path, emulator: Emulator, secret_env: str) -> None:
    emulator.set_expires_in(LIFETIME)
    with SentinelSet() as sentinels:
        # the broker is the same Sentinel-managed Redis (db 1): Celery gets sentinel://
        config = write_config(workdir / "tw.toml", redis_url=sentinels.url,
                              token_url=emulator.url, profiles=THREE, queue="tokens",
                              margin=MARGIN, interval=INTERVAL, retries=1, timeout=2)
        assert _cli(workdir, config, "config", "check").returncode == 0
        worker = _worker(workdir, config)
        try:
            probe = TokenReader(sentinels.url)
            for profile in THREE:
                probe.get(profile, wait=60)
            probe.close()
            forced = _cli(workdir, config, "refresh", "payments", "--force", "--wait", "30")
            assert forced.returncode == 0, forced.stdout + forced.stderr
            with _metrics(workdir, config) as port:
                assert wait_until(lambda: "token_worker_up 1.0" in _safe_scrape(port), 20)
            reads = Reads(sentinels.url).start()
            time.sleep(LIFETIME - MARGIN)  # one refresh cycle on the first primary
            before = _calls_per_profile(emulator)
            started = time.time()
            old = sentinels.kill_primary()
            failover = sentinels.wait_for_failover(old)
            new = redis.Redis(port=sentinels.primary_port, decode_responses=True)
            assert wait_until(lambda: _issued_after(new, "stitch", started) is not None,
                              LIFETIME + 10, interval=0.05)
            first_token = time.time() - started
            time.sleep(2 * (LIFETIME - MARGIN))  # two more cycles on the new primary
            reads.stop()
            calls = _calls_per_profile(emulator)
            status = _cli(workdir, config, "status", "--json")
            check = _cli(workdir, config, "check")
        finally:
            worker.stop()
    elapsed = time.time() - started
    cycles = elapsed / ((LIFETIME - MARGIN) * 0.95)
    after = {p: calls[p] - before[p] for p in THREE}
    _report("sentinel kill -9 primary", {
        "failover s": f"{failover:.1f}", "reads ok": reads.ok, "reads failed": len(reads.failed),
        "first token on new primary s": f"{first_token:.1f}",
        "calls per profile after the kill": after, "ideal": f"{cycles:.1f}",
        "least life left when read s": f"{reads.least_left:.1f}"})
    assert reads.failed == [], reads.failed[:5]
    assert reads.ok > 100
    assert status.returncode == 0 and len(json.loads(status.stdout)) == 3, status.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    for profile in THREE:  # one call per cycle, plus at most the one a lost publish costs
        assert after[profile] <= cycles + 2, (profile, after, cycles)


# -- Cluster ----------------------------------------------------------------------------

def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:  # noqa: S310 - loopback
        return str(reply.read().decode())


@HEAVY
@pytest.mark.skipif(not rabbitmq_up(), reason="RabbitMQ is not running on 127.0.0.1:5672")
def test_cluster_serves_every_command_and_follows_a_master_failover(
        workdir: Path, emulator: Emulator, secret_env: str) -> None:
    emulator.set_expires_in(LIFETIME)
    queue = f"tokens-{uuid.uuid4().hex[:8]}"
    with RedisCluster(replicas=1) as cluster:
        config = write_config(workdir / "tw.toml", redis_url=cluster.url, broker_url=AMQP,
                              token_url=emulator.url, profiles=THREE, queue=queue,
                              margin=MARGIN, interval=INTERVAL, retries=1, timeout=2)
        assert _cli(workdir, config, "config", "check").returncode == 0
        worker = celery_worker(workdir, f"ha-{uuid.uuid4().hex[:6]}", queues=queue,
                               env=subprocess_env(TOKEN_WORKER_CONFIG=str(config)))
        try:
            worker.wait_ready()
            reader = TokenReader(cluster.url)
            tokens = {p: reader.get(p, wait=60) for p in THREE}
            admin = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0],
                                               decode_responses=True)
            # every key of the prefix is in one slot: {stitch}
            slots = {admin.keyslot(k) for k in admin.scan_iter("{stitch}:*")}
            assert len(slots) == 1 and admin.exists("{stitch}:token:payments") == 1
            assert not list(admin.scan_iter("stitch:*"))
            # the commands, as an operator runs them
            status = _cli(workdir, config, "status", "--json")
            assert status.returncode == 0, status.stderr
            assert {row["state"] for row in json.loads(status.stdout)} == {"valid"}
            assert _cli(workdir, config, "check").returncode == 0
            forced = _cli(workdir, config, "refresh", "payments", "--force", "--wait", "30")
            assert forced.returncode == 0, forced.stdout + forced.stderr
            local = _cli(workdir, config, "refresh", "refunds", "--force", "--local")
            assert local.returncode == 0 and "refunds: refreshed" in local.stdout, local.stderr
            purged = _cli(workdir, config, "purge", "disbursements", "--yes")
            assert purged.returncode == 0, purged.stderr
            assert reader.get("disbursements", wait=30).access_token != \
                tokens["disbursements"].access_token
            with _metrics(workdir, config) as port:
                assert wait_until(lambda: "token_worker_up 1.0" in _safe_scrape(port), 20)
            # the 401 report reaches the worker's listener across the cluster's nodes
            current = reader.get("payments")
            assert reader.report_rejected("payments", current)
            assert reader.get("payments", wait=20).access_token != current.access_token
            reader.close()

            reads = Reads(cluster.url).start()
            time.sleep(2.0)
            before = _calls_per_profile(emulator)
            owner = cluster.node_for_key("{stitch}:token:payments")
            started = time.time()
            failover = cluster.fail_over(owner, kill=True)
            assert wait_until(lambda: _cluster_issued_after(cluster.url, started), LIFETIME + 10,
                              interval=0.05)
            first_token = time.time() - started
            time.sleep(2 * (LIFETIME - MARGIN))
            reads.stop()
            after = {p: n - before[p] for p, n in _calls_per_profile(emulator).items()}
            check = _cli(workdir, config, "check")
        finally:
            worker.stop()
    cycles = (time.time() - started) / ((LIFETIME - MARGIN) * 0.95)
    _report("cluster kill -9 of the {stitch} master", {
        "failover s": f"{failover:.1f}", "reads ok": reads.ok, "reads failed": len(reads.failed),
        "first token after s": f"{first_token:.1f}", "calls per profile after": after,
        "ideal": f"{cycles:.1f}", "least life left when read s": f"{reads.least_left:.1f}"})
    assert reads.failed == [], reads.failed[:5]
    assert check.returncode == 0, check.stdout + check.stderr
    for profile in THREE:
        assert after[profile] <= cycles + 2, (profile, after, cycles)


@contextlib.contextmanager
def _metrics(workdir: Path, config: Path) -> Iterator[int]:
    """``token-worker metrics`` on a free port, stopped at the end of the block."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "token_worker", "--config", str(config), "metrics",
         "--port", str(port)], cwd=workdir, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def _safe_scrape(port: int) -> str:
    try:
        return _scrape(port)
    except OSError:
        return ""


def _cluster_issued_after(url: str, since: float) -> bool:
    store = TokenStore.open(RedisTarget(url, socket_timeout_seconds=1.0))
    try:
        return any((t := store.get_token(p)) is not None and t.issued_at > since for p in THREE)
    except StoreError:
        return False
    finally:
        store.close()


# -- bad URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize(("redis_url", "broker_url", "expected"), [
    ("redis+memcache://h:1/", None, "redis.url: unsupported scheme"),
    ("redis+sentinel://127.0.0.1:26379/", None, "redis.url: names no service"),
    ("redis+cluster://127.0.0.1:7000/", "redis+cluster://127.0.0.1:7000/",
     "celery.broker_url: redis+cluster:// is refused"),
    ("redis+cluster://127.0.0.1:7000/", None, "celery.broker_url: must be set"),
])
def test_bad_topology_urls_are_one_line_exit_2_for_every_command(
        workdir: Path, redis_url: str, broker_url: str | None, expected: str) -> None:
    config = write_config(workdir / "bad.toml", redis_url="redis://127.0.0.1:1/0",
                          token_url="http://127.0.0.1:1/token", broker_url=broker_url or AMQP)
    text = config.read_text().replace('url = "redis://127.0.0.1:1/0"', f'url = "{redis_url}"')
    if broker_url is None and "cluster" in redis_url:
        text = text.replace(f'broker_url = "{AMQP}"\n', "")
    config.write_text(text)
    for args in (["config", "check"], ["status"], ["check"], ["refresh", "payments"],
                 ["metrics", "--port", str(free_port())]):
        result = _cli(workdir, config, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- the demo on each topology -------------------------------------------------------------

def _demo(workdir: Path, config: Path, duration: float = 7) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from token_worker.demo import run_demo; "
            "run_demo(sys.argv[1], lifetime=8, duration=float(sys.argv[2]))")
    return subprocess.run([sys.executable, "-c", code, str(config), str(duration)],
                          capture_output=True, text=True, timeout=duration + 60,
                          env=subprocess_env(), cwd=workdir)


def _demo_shows_every_profile(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "(prefix 'demo')" in result.stdout and "private redis-server" not in result.stdout
    final = result.stdout.rsplit("token_worker demo", 1)[1]
    for profile in ("payments", "refunds", "disbursements"):
        # a live token each (the demo's margins keep a row refresh_due for up to a tick)
        assert re.search(rf"^{profile}\s+(valid|refresh_due)\s", final, re.M), final


@HEAVY
def test_the_demo_runs_on_sentinel(workdir: Path, emulator: Emulator, secret_env: str) -> None:
    with SentinelSet() as sentinels:
        config = write_config(workdir / "tw.toml", redis_url=sentinels.url,
                              token_url=emulator.url)
        _demo_shows_every_profile(_demo(workdir, config))


@HEAVY
@pytest.mark.skipif(not rabbitmq_up(), reason="RabbitMQ is not running on 127.0.0.1:5672")
def test_the_demo_runs_on_a_cluster_with_the_configured_broker(
        workdir: Path, emulator: Emulator, secret_env: str) -> None:
    with RedisCluster() as cluster:
        config = write_config(workdir / "tw.toml", redis_url=cluster.url, broker_url=AMQP,
                              token_url=emulator.url)
        _demo_shows_every_profile(_demo(workdir, config))
