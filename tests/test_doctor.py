"""doctor.py and doctor_checks.py: each hazard against a real redis-server configured to
have it, a real broker with and without a Celery worker, the emulator and real HTTPS
servers as the endpoint, and certificates made in the test."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from token_worker.cli import cli
from token_worker.config import Config, load_config
from token_worker.doctor import (
    _short,
    broker_checks,
    certificate_checks,
    endpoint_check,
    exit_code,
    redis_checks,
    report,
    run_doctor,
)
from token_worker.doctor_checks import Check, Level, replication_check, version_check
from token_worker.refresh import Refresher
from token_worker.store import TokenStore, connect_redis
from token_worker.store_server import ServerFacts
from token_worker.testing import ManualClock, celery_worker, wait_until, worker_env
from token_worker.testing.emulator import Emulator
from token_worker.testing.topologies import RedisCluster, SentinelSet

from . import pki
from .http_servers import Canned, self_signed
from .support import REPO, SECRET, RedisServer, free_port, rabbitmq_up, write_config

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    """redis-servers a test starts with its own options; all stopped after it."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[RedisServer], *args: str) -> RedisServer:
    server = RedisServer(extra_args=list(args)).start()
    servers.append(server)
    return server


def configure(tmp_path: Path, redis_url: str, token_url: str = "http://127.0.0.1:9/connect/token",
              **kwargs: object) -> Config:
    path = write_config(tmp_path / f"tw-{uuid.uuid4().hex[:6]}.toml", redis_url=redis_url,
                        token_url=token_url, **kwargs)  # type: ignore[arg-type]
    return load_config(path)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def publish(config: Config) -> None:
    """One real refresh of every profile (the emulator's token)."""
    refresher = Refresher.from_config(config)
    try:
        for profile in config.profiles:
            assert refresher.refresh_profile(profile).fingerprint
    finally:
        refresher.close()


# -- Redis settings -----------------------------------------------------------
def test_a_well_configured_redis_passes_every_redis_check(
        tmp_path: Path, servers: list[RedisServer], emulator: Emulator, secret_env: str) -> None:
    server = start(servers, "--appendonly", "yes")
    config = configure(tmp_path, server.url, emulator.url)
    publish(config)
    checks = redis_checks(config)
    assert [c.level for c in checks] == [Level.OK] * len(checks), [c.line() for c in checks]
    found = by_name(checks)
    assert set(found) == {"redis", "redis version", "maxmemory-policy", "persistence",
                          "replication", "clock", "profile payments"}
    assert "read function loaded" in found["redis version"].message
    assert found["maxmemory-policy"].message.startswith("noeviction")
    assert found["persistence"].message == "appendonly"


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "volatile-lru"])
def test_an_eviction_policy_that_can_drop_token_keys_fails(
        tmp_path: Path, servers: list[RedisServer], policy: str) -> None:
    server = start(servers, "--maxmemory-policy", policy, "--maxmemory", "64mb")
    check = by_name(redis_checks(configure(tmp_path, server.url)))["maxmemory-policy"]
    assert check.level is Level.FAIL
    assert check.message.startswith(f"{policy} at 127.0.0.1:{server.port} (maxmemory 67108864)")
    assert "noeviction" in check.advice


def test_without_persistence_a_restart_empties_the_store_warning(
        tmp_path: Path, servers: list[RedisServer]) -> None:
    none = start(servers)  # the test servers save nothing by default
    rdb = start(servers, "--save", "900 1")
    assert by_name(redis_checks(configure(tmp_path, none.url)))["persistence"].line() == (
        f'WARN  persistence: none (appendonly no, save "") at 127.0.0.1:{none.port}: a restart '
        f"empties the store; every token is fetched again (one call per profile) and readers "
        f"without one wait for it; CONFIG SET appendonly yes (or a save schedule), and in "
        f"redis.conf")
    check = by_name(redis_checks(configure(tmp_path, rdb.url)))["persistence"]
    assert (check.level, check.message) == (Level.OK, "RDB save 900 1")


def test_a_user_refused_config_and_info_gets_could_not_read_never_a_crash(
        tmp_path: Path, servers: list[RedisServer]) -> None:
    server = start(servers, "--maxmemory-policy", "allkeys-lru")
    admin = server.client()
    # like ops/redis-acl.conf's observer: reads of the prefix, no INFO, no CONFIG
    admin.acl_setuser("watcher", enabled=True, passwords=["+watch-pw-Qz8"],
                      keys=["%R~stitch:*"], commands=["-@all", "+ping", "+select", "+time",
                                                      "+pttl", "+hgetall", "+zscore"])
    # and one allowed INFO but not CONFIG: the policy is still read, from INFO
    admin.acl_setuser("infoonly", enabled=True, passwords=["+info-pw-Wn3"],
                      keys=["%R~stitch:*"], commands=["-@all", "+ping", "+select", "+time",
                                                      "+pttl", "+hgetall", "+zscore", "+info"])
    url = f"redis://watcher:watch-pw-Qz8@127.0.0.1:{server.port}/0"
    found = by_name(redis_checks(configure(tmp_path, url)))
    assert found["maxmemory-policy"].level is Level.WARN
    assert found["maxmemory-policy"].message == (
        f"could not read at 127.0.0.1:{server.port}: INFO and CONFIG GET refused by the ACL "
        f"(NOPERM)")
    assert found["persistence"].level is Level.WARN
    assert found["persistence"].message.startswith("could not read")
    assert found["replication"].level is Level.WARN
    # HELLO is open to every user: the version is still known
    assert found["redis version"].message.startswith("Redis 7.")
    assert found["profile payments"].level is Level.FAIL  # nothing published: missing
    assert "watch-pw" not in json.dumps([c.to_dict() for c in found.values()])

    url = f"redis://infoonly:info-pw-Wn3@127.0.0.1:{server.port}/0"
    assert by_name(redis_checks(configure(tmp_path, url)))["maxmemory-policy"].level is Level.FAIL


def test_version_rules_name_what_each_feature_needs() -> None:
    # only Redis 7.0 is installed here: the older versions are the facts' text
    def level(version: str) -> tuple[Level, str]:
        check = version_check([ServerFacts("h:1", hello={"version": version}, functions=True)])
        return check.level, check.message

    assert level("6.0.16")[0] is Level.FAIL and "older than 6.2" in level("6.0.16")[1]
    assert level("6.2.14")[0] is Level.WARN and "ops/redis-acl.conf" in level("6.2.14")[1] \
        and "FCALL_RO" in level("6.2.14")[1]
    assert level("7.2.4") == (Level.OK, "Redis 7.2.4: ACL file and FCALL_RO supported (7.0+); "
                                        "read function loaded")
    mixed = version_check([ServerFacts("a:1", hello={"version": "7.2.4"}, functions=True),
                           ServerFacts("b:2", hello={"version": "6.2.1"}, functions=True)])
    assert mixed.level is Level.WARN and "6.2.1 (oldest, at b:2)" in mixed.message
    assert version_check([ServerFacts("h:1")]).level is Level.WARN


def test_hostile_server_replies_are_neither_a_crash_nor_control_characters() -> None:
    facts = [ServerFacts("h:1", hello={"version": "7.2.0\x1b[2J"},
                         info={"role": "master", "slave0": {"ip": "10.0.0.9", "port": 1,
                                                            "state": "online", "lag": "nan"},
                               "slave1": {"ip": "10.0.0.8", "port": 2, "state": "online",
                                          "lag": "garbage"}},
                         settings={"min-replicas-to-write": "x", "min-replicas-max-lag": "inf"},
                         functions=True)]
    assert replication_check(facts).level is Level.OK
    line = version_check(facts).line()
    assert "\x1b" not in line and line.startswith("OK    redis version: Redis 7.2.0?[2J")


def test_a_transport_quoting_the_broker_password_is_scrubbed() -> None:
    url = "redis://:p%40ss-Wq9@127.0.0.1:1/0"
    text = _short(OSError("auth p@ss-Wq9 / p%40ss-Wq9 refused"), url)
    assert "ss-Wq9" not in text and text == "OSError: auth *** / *** refused"


# -- replication --------------------------------------------------------------
def online(primary: RedisServer) -> bool:
    """One replica attached and in sync."""
    return bool(primary.client().info("replication").get("slave0", {}).get("state") == "online")


def test_min_replicas_to_write_without_replicas_fails_and_with_one_passes(
        tmp_path: Path, servers: list[RedisServer]) -> None:
    primary = start(servers, "--min-replicas-to-write", "1")
    config = configure(tmp_path, primary.url)
    check = by_name(redis_checks(config))["replication"]
    assert check.level is Level.FAIL
    assert "min-replicas-to-write 1 but 0 replica(s) within 10 s" in check.message
    assert "NOREPLICAS" in check.message
    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):  # what the check foretells
        primary.client().set("stitch:x", "1")

    replica = start(servers, "--replicaof", "127.0.0.1", str(primary.port))
    assert wait_until(lambda: online(primary), 10)
    check = by_name(redis_checks(config))["replication"]
    assert check.level is Level.OK, check.line()
    assert check.message.startswith(f"primary, 1 replica(s) (127.0.0.1:{replica.port} lag ")
    assert check.message.endswith(", min-replicas-to-write 1")

    # redis.wait_replicas beyond the replicas there are: every publish waits out its timeout
    waiting = configure(tmp_path, primary.url, redis={"wait_replicas": 2})
    check = by_name(redis_checks(waiting))["replication"]
    assert check.level is Level.WARN and "redis.wait_replicas = 2 but 1 replica(s)" in \
        check.message

    # the URL names the replica: nothing can be written there
    check = by_name(redis_checks(configure(tmp_path, replica.url)))["replication"]
    assert check.level is Level.FAIL
    assert check.message.startswith(f"127.0.0.1:{replica.port} is a replica (read-only)")


def test_a_lagging_replica_warns(tmp_path: Path, servers: list[RedisServer]) -> None:
    primary = start(servers)
    replica = start(servers, "--replicaof", "127.0.0.1", str(primary.port))
    assert wait_until(lambda: online(primary), 10)
    store = TokenStore(connect_redis(primary.url))
    try:
        assert replication_check(store.server_facts(), lag_warn=1.0).level is Level.OK
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)  # it stops acknowledging (REPLCONF ACK)
        try:
            assert wait_until(lambda: replication_check(store.server_facts(), lag_warn=1.0)
                              .level is Level.WARN, 10)
            lagging = replication_check(store.server_facts(), lag_warn=1.0)
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
    finally:
        store.close()
    assert lagging.message.startswith(f"replica 127.0.0.1:{replica.port} lags ")
    assert "a failover now loses the refreshes since" in lagging.message


# -- the clock ----------------------------------------------------------------
@pytest.mark.parametrize(("offset", "level"), [(0.0, Level.OK), (-10.0, Level.WARN),
                                               (10.0, Level.WARN), (300.0, Level.FAIL)])
def test_host_clock_skew_against_redis_time(tmp_path: Path, servers: list[RedisServer],
                                            offset: float, level: Level) -> None:
    server = start(servers)
    sec, usec = server.client().time()
    host = ManualClock(wall=sec + usec / 1e6 + offset)  # this host, stepped by `offset`
    check = by_name(redis_checks(configure(tmp_path, server.url), wall=host.wall))["clock"]
    assert check.level is level, check.line()
    if offset:
        word = "ahead of" if offset > 0 else "behind"
        assert f"{abs(offset):.0f}." in check.message and word in check.message


# -- each profile's token and schedule ---------------------------------------
def test_profile_state_and_schedule_disagreeing_are_named(
        tmp_path: Path, servers: list[RedisServer], emulator: Emulator, secret_env: str) -> None:
    server = start(servers)
    config = configure(tmp_path, server.url, emulator.url,
                       profiles={"payments": ["client_paymentrequest"],
                                 "refunds": ["client_refund"]})
    rds = server.client()
    store = TokenStore(connect_redis(server.url))

    def profile(name: str) -> Check:
        return by_name(redis_checks(config))[f"profile {name}"]

    assert profile("payments").level is Level.FAIL  # nothing fetched yet
    assert profile("payments").message == "missing: readers get TokenUnavailable"
    publish(config)
    ok = profile("payments")
    assert ok.level is Level.OK and ok.message.startswith("valid, expires in 59m")
    assert "fingerprint " in ok.message
    token = store.get_token("payments")
    assert token is not None and token.access_token not in ok.message

    rds.zrem(store.keys.schedule(), "payments")  # a token nothing will refresh
    assert "but not in the schedule" in profile("payments").message
    rds.zadd(store.keys.schedule(), {"payments": store.time() - 3600})  # due an hour ago
    overdue = profile("payments")
    assert overdue.level is Level.WARN and "due 1h00m ago and not attempted" in overdue.message

    rds.zadd(store.keys.schedule(), {"payments": store.time() + 600})
    # a claim beat made that its task never released, long lapsed: the message was lost
    rds.zadd(store.keys.claims(), {"payments": store.time() - 90})
    lost = profile("payments")
    assert lost.level is Level.WARN and "a refresh beat sent never ran" in lost.message
    assert "claim lapsed 1m30s ago" in lost.message and "Lost refresh message" in lost.advice
    rds.zadd(store.keys.claims(), {"payments": store.time() + 60})  # a live claim is normal
    assert profile("payments").level is Level.OK

    rds.set(store.keys.lock("refunds"), "someone")  # a lock with no expiry
    assert "lock has no expiry" in profile("refunds").message
    rds.delete(store.keys.lock("refunds"))

    emulator.set_faults([{"mode": "http_error", "status": 503, "count": 10}])
    refresher = Refresher.from_config(config)
    try:
        refresher.refresh_profile("refunds", force=True)
    finally:
        refresher.close()
    failing = profile("refunds")
    assert failing.level is Level.WARN
    assert "1 consecutive failure(s); last error: " in failing.message
    store.close()


# -- the broker and the tokens queue -----------------------------------------
def test_an_unreachable_broker_fails_both_broker_checks(tmp_path: Path,
                                                        servers: list[RedisServer]) -> None:
    server = start(servers)
    dead = f"redis://:brk-pw-Hy6@127.0.0.1:{free_port()}/1"
    checks = broker_checks(configure(tmp_path, server.url, broker_url=dead), timeout=1)
    assert [(c.name, c.level) for c in checks] == [("broker", Level.FAIL),
                                                  ("queue tokens", Level.FAIL)]
    assert checks[0].message.startswith("unreachable at redis://:***@127.0.0.1:")
    assert "brk-pw" not in json.dumps([c.to_dict() for c in checks])


def test_the_queue_fails_with_no_worker_and_passes_with_a_real_one(
        tmp_path: Path, servers: list[RedisServer], emulator: Emulator) -> None:
    server = start(servers)
    queue = f"doctor-{uuid.uuid4().hex[:6]}"
    path = write_config(tmp_path / "tw.toml", redis_url=server.url, token_url=emulator.url,
                        queue=queue)
    config = load_config(path)
    checks = by_name(broker_checks(config, inspect_timeout=0.5))
    assert checks["broker"].line() == f"OK    broker: redis://127.0.0.1:{server.port}/1 reachable"
    assert checks[f"queue {queue}"].level is Level.FAIL
    assert f"no worker answered within 0.5 s consuming queue '{queue}'" in \
        checks[f"queue {queue}"].message

    worker = celery_worker(tmp_path, "doctor", queues=queue, beat=False, env=worker_env(
        {"STITCH_CLIENT_SECRET": SECRET}, config=path, pythonpath=[REPO]))
    try:
        worker.wait_ready()
        check = by_name(broker_checks(config))[f"queue {queue}"]
    finally:
        worker.stop()
    assert check.level is Level.OK, check.line()
    assert check.message.startswith("consumed by 1 worker(s): doctor@")



def test_rabbitmq_queue_without_consumer_fails_and_is_never_declared(
        tmp_path: Path, servers: list[RedisServer]) -> None:
    if not rabbitmq_up():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    server = start(servers)
    queue = f"tw-doctor-{uuid.uuid4().hex[:8]}"
    config = configure(tmp_path, server.url, broker_url=AMQP_URL, queue=queue)
    checks = by_name(broker_checks(config, inspect_timeout=0.5))
    assert checks["broker"].message == "amqp://guest:***@127.0.0.1:5672// reachable"
    queue_check = checks[f"queue {queue}"]
    assert queue_check.level is Level.FAIL
    assert "the queue does not exist on the broker yet" in queue_check.message


# -- the token endpoint -------------------------------------------------------
def test_the_emulator_on_loopback_http_is_reachable_without_a_post(
        tmp_path: Path, servers: list[RedisServer], emulator: Emulator) -> None:
    server = start(servers)
    issued = len(emulator.issued_tokens)
    check = endpoint_check(configure(tmp_path, server.url, emulator.url))
    assert check.level is Level.OK
    assert check.message.startswith(f"{emulator.url} reachable, http on loopback (an emulator), "
                                    f"HTTP 405 to GET in ")
    assert emulator.stats()["calls"] == 0 and len(emulator.issued_tokens) == issued


def test_https_with_a_certificate_this_host_does_not_trust_fails(
        tmp_path: Path, servers: list[RedisServer], monkeypatch: pytest.MonkeyPatch) -> None:
    server = start(servers)
    cert, key = self_signed(tmp_path)
    with Canned(200, b"{}", tls=(cert, key)) as endpoint:
        config = configure(tmp_path, server.url, endpoint.url)
        check = endpoint_check(config)
        assert check.level is Level.FAIL
        assert check.message == (f"{endpoint.url}: TLS verification failed (certificate verify "
                                 f"failed: self-signed certificate)")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # now this host trusts it
        trusted = endpoint_check(config)
        assert trusted.level is Level.OK, trusted.line()
        assert "TLS verified, HTTP 200 to GET" in trusted.message
        # the untrusted one never got past the handshake; neither was a POST
        assert [method for method, _, _ in endpoint.received] == ["GET"]


def test_an_endpoint_that_is_down_or_erring_is_named(tmp_path: Path,
                                                     servers: list[RedisServer]) -> None:
    server = start(servers)
    down = endpoint_check(configure(tmp_path, server.url,
                                    f"http://127.0.0.1:{free_port()}/connect/token"))
    assert down.level is Level.FAIL and "unreachable (ConnectionError)" in down.message
    with Canned(503, b"busy") as endpoint:
        erring = endpoint_check(configure(tmp_path, server.url, endpoint.url))
    assert erring.level is Level.WARN and "HTTP 503 to GET" in erring.message


# -- client certificates ------------------------------------------------------
def test_certificate_expiry_fails_when_expired_and_warns_within_30_days(
        tmp_path: Path, servers: list[RedisServer]) -> None:
    server = start(servers)
    files = {}
    for name, days in (("fresh", 365), ("soon", 10.5), ("gone", -1)):
        key = pki.rsa_key()
        cert = pki.certificate(key, days=days, not_before_days=-5)
        files[name] = pki.write(tmp_path / f"{name}.pem", pki.key_pem(key), pki.cert_pem(cert))
    clients = {name: {"client_id": f"id-{name}", "certificate_file": str(path)}
               for name, path in files.items()}
    clients["absent"] = {"client_id": "id-absent", "certificate_file": str(tmp_path / "no.pem")}
    config = configure(tmp_path, server.url, clients=clients,
                       profiles={"disbursements": {"client": "gone",
                                                   "scopes": ["client_disbursement"]}})
    found = by_name(certificate_checks(config))
    assert found["certificate clients.fresh"].level is Level.OK
    assert found["certificate clients.soon"].level is Level.WARN
    assert "in 10 days" in found["certificate clients.soon"].message
    gone = found["certificate clients.gone"]
    assert gone.level is Level.FAIL and gone.message.startswith("expired on ")
    assert gone.message.endswith("Stitch answers invalid_client [disbursements]")
    assert found["certificate clients.absent"].message.startswith("not readable on this host")
    # the host's clock decides: 400 days on, the fresh one has expired too
    later = by_name(certificate_checks(config, now=time.time() + 400 * 86400))
    assert later["certificate clients.fresh"].level is Level.FAIL


# -- topologies ---------------------------------------------------------------
def test_sentinel_and_cluster_urls_are_inspected_node_by_node(tmp_path: Path) -> None:
    with SentinelSet() as sentinels:
        found = by_name(redis_checks(configure(tmp_path, sentinels.url)))
        assert found["redis"].message.endswith("answers (sentinel, 1 primary)")
        assert found["replication"].level is Level.OK, found["replication"].line()
        assert found["replication"].message.startswith("primary, 1 replica(s)")
    with RedisCluster() as cluster:
        url = cluster.url
        config = configure(tmp_path, url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
        found = by_name(redis_checks(config))
        assert found["redis"].message.endswith("answers (cluster, 3 primaries)")
        assert found["maxmemory-policy"].level is Level.OK
        client = connect_redis(url)
        try:
            client.config_set("maxmemory-policy", "allkeys-lru",
                              target_nodes=redis.RedisCluster.PRIMARIES)
        finally:
            client.close()
        check = by_name(redis_checks(config))["maxmemory-policy"]
        assert check.level is Level.FAIL and check.message.count("127.0.0.1:") == 3


# -- the command --------------------------------------------------------------
def test_doctor_command_exit_codes_lines_and_json(
        tmp_path: Path, servers: list[RedisServer], emulator: Emulator,
        monkeypatch: pytest.MonkeyPatch, no_env_overrides: None) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET", raising=False)  # doctor needs no secret
    server = start(servers, "--maxmemory-policy", "allkeys-lru")
    path = write_config(tmp_path / "tw.toml", redis_url=server.url, token_url=emulator.url,
                        broker_url=f"redis://127.0.0.1:{free_port()}/0")
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(path), "doctor"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert all(line[:6] in ("OK    ", "WARN  ", "FAIL  ") for line in lines), lines
    assert any(line.startswith("FAIL  maxmemory-policy: allkeys-lru") for line in lines)
    assert any(line.startswith("FAIL  broker: unreachable at") for line in lines)

    result = runner.invoke(cli, ["--config", str(path), "doctor", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert set(data) == {"ok", "failed", "warnings", "checks"} and data["ok"] is False
    assert {"maxmemory-policy", "broker", "queue tokens", "profile payments"} <= \
        set(data["failed"])
    assert all(set(c) == {"name", "level", "message", "advice"} for c in data["checks"])
    assert {c["level"] for c in data["checks"]} <= {"OK", "WARN", "FAIL"}

    path.write_text(path.read_text() + "\n[bogus]\nx = 1\n")
    result = runner.invoke(cli, ["--config", str(path), "doctor"])
    assert result.exit_code == 2 and "bogus: unknown key" in result.output


def test_a_healthy_deployment_exits_0(tmp_path: Path, servers: list[RedisServer],
                                      emulator: Emulator, no_env_overrides: None) -> None:
    server = start(servers, "--appendonly", "yes")
    queue = f"doctor-{uuid.uuid4().hex[:6]}"
    path = write_config(tmp_path / "tw.toml", redis_url=server.url, token_url=emulator.url,
                        queue=queue, interval=1)
    worker = celery_worker(tmp_path, "healthy", queues=queue, env=worker_env(
        {"STITCH_CLIENT_SECRET": SECRET}, config=path, pythonpath=[REPO]))
    try:
        worker.wait_ready()
        store = TokenStore(connect_redis(server.url))
        try:
            assert wait_until(lambda: store.get_token("payments") is not None, 60)
        finally:
            store.close()
        checks = run_doctor(load_config(path))
    finally:
        worker.stop()
    assert exit_code(checks) == 0, [c.line() for c in checks]
    assert report(checks)["ok"] is True
    assert all(c.level is Level.OK for c in checks), [c.line() for c in checks]
