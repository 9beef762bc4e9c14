"""ops/redis-acl.conf on a private redis-server: each user can do its job and nothing else."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from token_worker import TokenReader
from token_worker.cli import cli
from token_worker.config import load_config
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .acl_support import ACL_FILE, AclRedis, start_acl_redis
from .support import free_port, wait_until, write_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    srv = start_acl_redis(tmp_path_factory.mktemp("acl"))
    yield srv
    srv.stop()


@pytest.fixture
def admin(server: AclRedis) -> redis.Redis:
    client = server.as_user("admin")
    client.flushall()
    return client


def config_for(tmp_path: Path, server: AclRedis, user: str, emulator: Emulator) -> Path:
    return write_config(tmp_path / f"{user}.toml", redis_url=server.url_for(user),
                        token_url=emulator.url,
                        profiles={"payments": ["client_paymentrequest"],
                                  "refunds": ["client_refund"]})


def refresh_as_refresher(path: Path, *profiles: str) -> None:
    result = CliRunner().invoke(cli, ["--config", str(path), "refresh", "--local", *profiles])
    assert result.exit_code == 0, result.output


def denied(client: redis.Redis, *command: str) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_shipped_file_refuses_to_start_until_passwords_are_set() -> None:
    # the placeholders are not valid hashes: a forgotten edit fails closed, never open
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.run([binary, "--port", str(free_port()), "--save", "", "--aclfile",
                           str(ACL_FILE)], capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0
    assert "password hash must be exactly 64 characters" in proc.stdout + proc.stderr


def test_default_user_is_off(server: AclRedis, admin: redis.Redis) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PING\r\nGET stitch:token:payments\r\n")
        time.sleep(0.1)
        reply = sock.recv(1024)
    assert reply.startswith(b"-NOAUTH") and b"+PONG" not in reply


def test_refresher_works_with_its_user(tmp_path: Path, server: AclRedis, admin: redis.Redis,
                                       emulator: Emulator, secret_env: str) -> None:
    path = config_for(tmp_path, server, "refresher", emulator)
    refresh_as_refresher(path, "--all")
    refresh_as_refresher(path, "--all", "--force")  # forced: waits on the lock channel
    assert admin.exists("stitch:token:payments", "stitch:token:refunds") == 2
    refresher = Refresher.from_config(load_config(path))
    try:
        refresher.sync_profiles()
        assert refresher.due_profiles() == []
        assert refresher.store.purge("refunds")
        assert refresher.due_profiles() == ["refunds"]
    finally:
        refresher.close()
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_grant", "count": 1}])
    result = CliRunner().invoke(cli, ["--config", str(path), "refresh", "--local", "refunds"])
    assert result.exit_code == 1 and "invalid_grant" in result.stdout  # failure recorded
    assert admin.hget("stitch:status:refunds", "last_error_code") == "invalid_grant"


def test_reader_works_with_its_user(tmp_path: Path, server: AclRedis, admin: redis.Redis,
                                    emulator: Emulator, secret_env: str) -> None:
    refresher_path = config_for(tmp_path, server, "refresher", emulator)
    refresh_as_refresher(refresher_path, "payments")
    reader_path = config_for(tmp_path, server, "reader", emulator)
    reader = TokenReader.from_config(str(reader_path))
    try:
        token = reader.get("payments")
        assert token.access_token == emulator.issued_tokens[-1]
        # the cache is served only while its invalidation channel is subscribed
        reader.get("payments")  # a cache hit starts the listener
        assert wait_until(lambda: admin.pubsub_numsub("stitch:events")[0][1] >= 1, 5)
        cached = reader.get("payments")
        assert wait_until(lambda: reader.get("payments") is cached, 5)
        # wait: woken by the refresher's publish on the events channel
        threading.Timer(0.3, refresh_as_refresher, (refresher_path, "refunds")).start()
        assert reader.get("refunds", wait=10).access_token == emulator.issued_tokens[-1]
        # the hot path ran the refresher-loaded function, not the MULTI fallback
        assert reader.store._fcall_after == 0.0
        assert reader.report_rejected("payments", token) is True
        assert reader.report_rejected("payments", token) is False  # once per token
        # the report wrote only its marker; beat's due check sees it all the same
        assert admin.zscore("stitch:schedule", "payments") > time.time()
        refresher = Refresher.from_config(load_config(refresher_path))
        try:
            assert refresher.due_profiles() == ["payments"]
        finally:
            refresher.close()
    finally:
        reader.close()
    runner = CliRunner()
    status = runner.invoke(cli, ["--config", str(reader_path), "status", "--json"])
    assert status.exit_code == 0, status.output
    check = runner.invoke(cli, ["--config", str(reader_path), "check"])
    assert check.exit_code == 0, check.output


@pytest.mark.parametrize("command", [
    ("SET", "stitch:token:payments", "forged"),
    ("DEL", "stitch:token:payments"),
    ("HSET", "stitch:status:payments", "last_error", ""),
    ("GET", "stitch:lock:payments"),
    ("SET", "stitch:lock:payments", "mine"),
    ("GET", "other:key"),
    ("GET", "stitch:other"),
    ("ZREM", "stitch:schedule", "payments"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("CONFIG", "GET", "requirepass"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("PUBLISH", "other-channel", "x"),
    ("EVAL", "return 1", "0"),
    ("EVALSHA", "0" * 40, "1", "stitch:token:payments"),  # scripts cannot widen its keys
    ("EVALSHA_RO", "0" * 40, "1", "stitch:token:payments"),
    ("SCRIPT", "LOAD", "while true do end"),  # could block Redis for everyone
    ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() end)"),
    ("FCALL", "token_worker_read_1", "1", "stitch:token:payments"),
    # the schedule is the refresher side's alone: a SET there used to stop every refresh
    ("SET", "stitch:schedule", "x"),
    ("ZADD", "stitch:schedule", "0", "payments"),
    ("ZADD", "stitch:schedule", "1e18", "payments"),
    ("DEL", "stitch:schedule"),
    ("DEL", "stitch:lock:payments"),
    ("HSET", "stitch:profiles", "payments", "{}"),
    ("ACL", "LIST"),
])
def test_reader_is_refused(server: AclRedis, admin: redis.Redis,
                           command: tuple[str, ...]) -> None:
    admin.set("other:key", "x")
    admin.set("stitch:lock:payments", "owner")
    assert denied(server.as_user("reader"), *command)


@pytest.mark.parametrize("command", [
    ("GET", "other:key"),
    ("SET", "other:key", "x"),
    ("KEYS", "*"),
    ("CONFIG", "GET", "requirepass"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("ACL", "LIST"),
    ("SUBSCRIBE", "other-channel"),
])
def test_refresher_is_refused(server: AclRedis, admin: redis.Redis,
                              command: tuple[str, ...]) -> None:
    assert denied(server.as_user("refresher"), *command)


def test_observer_runs_status_check_and_metrics_reads_but_sees_no_token(
        tmp_path: Path, server: AclRedis, admin: redis.Redis, emulator: Emulator,
        secret_env: str) -> None:
    refresh_as_refresher(config_for(tmp_path, server, "refresher", emulator), "--all")
    path = config_for(tmp_path, server, "observer", emulator)
    runner = CliRunner()
    status = runner.invoke(cli, ["--config", str(path), "status", "--json"])
    assert status.exit_code == 0, status.output
    assert {row["state"] for row in json.loads(status.stdout)} == {"valid"}
    assert runner.invoke(cli, ["--config", str(path), "check"]).exit_code == 0
    observer = server.as_user("observer")
    assert observer.pttl("stitch:lock:payments") == -2  # the metrics sidecar reads lock TTLs
    assert observer.get("stitch:rejected:payments") is None  # status reads the 401 marker
    for command in (("GET", "stitch:token:payments"), ("SET", "stitch:token:payments", "x"),
                    ("SUBSCRIBE", "stitch:events"), ("EVALSHA_RO", "0" * 40, "0"),
                    ("GET", "other:key"), ("KEYS", "*")):
        assert denied(observer, *command), command


@pytest.mark.parametrize("user", ["refresher", "reader", "observer"])
@pytest.mark.parametrize("command", [
    ("SHUTDOWN",), ("DEBUG", "SLEEP", "0"), ("MONITOR",), ("CLIENT", "KILL", "1.2.3.4:5"),
    ("REPLICAOF", "NO", "ONE"), ("MODULE", "LIST"), ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"),
    ("SAVE",), ("BGSAVE",), ("EVAL", "return 1", "0"), ("FUNCTION", "FLUSH"),
    ("MIGRATE", "127.0.0.1", "1", "stitch:token:payments", "0", "1000"),
])
def test_neither_user_may_run_admin_commands(admin: redis.Redis, user: str,
                                             command: tuple[str, ...]) -> None:
    # ACL DRYRUN, so a missing refusal cannot take the test server down with it
    reply = admin.execute_command("ACL", "DRYRUN", user, *command)
    assert reply != "OK", f"{user} may run {' '.join(command)}"
