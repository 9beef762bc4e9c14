"""token_worker.testing: the one config writer, redis-server starter and worker env."""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path

import pytest

from token_worker.config import load_config
from token_worker.testing import RedisServer, free_port, wait_until, worker_env, write_config
from token_worker.testing.configs import toml_value


def test_write_config_defaults_to_one_secret_client_and_the_broker_on_db_1(
        tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", redis_url="redis://127.0.0.1:7000/0",
                        token_url="http://127.0.0.1:1/connect/token")
    data = tomllib.loads(path.read_text())
    assert data["celery"] == {"broker_url": "redis://127.0.0.1:7000/1"}
    assert data["clients"] == {"main": {"client_id": "test-7a1c",
                                        "client_secret_env": "STITCH_CLIENT_SECRET"}}
    assert data["profiles"] == {"payments": {"scopes": ["client_paymentrequest"]}}
    assert "retries" not in data["refresh"] and "queue" not in data["celery"]
    assert path.read_text().startswith("[redis]\n")  # tests insert lines after it


def test_write_config_takes_whole_tables_and_extra_sections(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml", redis_url="redis://127.0.0.1:7000/0",
        token_url="http://127.0.0.1:1/connect/token", prefix=None, queue="q", retries=0,
        margin=90.5, interval=1, redis={"encryption_keys_env": "KEYS"},
        sections={"metrics": {"port": 9100}},
        clients={"a": {"client_id": "x", "client_secret_env": "A"},
                 "b": {"client_id": "y", "client_secret_env": "B"}},
        profiles={"p": {"scopes": ["client_refund"], "client": "b", "margin_seconds": 120}})
    config = load_config(path)
    assert config.redis.prefix == "stitch" and config.redis.encryption_keys_env == "KEYS"
    assert config.celery.queue == "q" and config.refresh.retries == 0
    assert config.metrics.port == 9100 and config.margin_for("p") == 120
    assert config.profiles["p"].client == "b"


def test_toml_values_are_escaped() -> None:
    text = 'a "quoted" \\ path'
    assert tomllib.loads("k = " + toml_value(text))["k"] == text
    assert toml_value([True, 1, 2.5]) == "[true, 1, 2.5]"
    with pytest.raises(TypeError):
        toml_value({"a": 1})


def test_a_private_redis_server_answers_and_cleans_up_its_own_directory() -> None:
    with RedisServer() as server:
        assert server.client().ping()
        directory = server.dir
        assert os.path.isdir(directory)
    assert not os.path.exists(directory) and server.proc is None


def test_a_redis_server_that_cannot_start_says_so_quickly(tmp_path: Path) -> None:
    server = RedisServer(extra_args=["--no-such-option", "1"], workdir=tmp_path)
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    assert server.proc is None  # nothing left running
    assert tmp_path.is_dir()  # a directory it was given is not its to remove


def test_a_redis_server_whose_chosen_port_was_taken_starts_on_another() -> None:
    server = RedisServer()
    chosen = server.port
    # another socket holds it between the choice and the bind (a client's connection, say)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", chosen))
        with server:
            assert server.port != chosen and server.client().ping()
            assert server.client().info("server")["process_id"] == server.proc.pid
            server.restart()  # once started, its port is known: it stays
            assert server.client().ping() and server.url.endswith(f":{server.port}/0")
            moved = server.port
        assert moved != chosen


def test_a_redis_server_on_a_port_another_one_holds_does_not_pass_for_it() -> None:
    # the other answers PING until this one's failed bind makes it exit: never "started"
    with RedisServer() as other:
        clash = RedisServer(port=other.port)  # a port it was given: it must not move
        with pytest.raises(RuntimeError, match="did not start"):
            clash.start()
        assert clash.proc is None and clash.port == other.port and other.client().ping()


def test_worker_env_drops_url_overrides_unless_given(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("PYTHONPATH", "/already")
    env = worker_env({"X": "1"}, config=tmp_path / "c.toml", pythonpath=[tmp_path])
    assert "TOKEN_WORKER_REDIS_URL" not in env
    assert env["TOKEN_WORKER_CONFIG"] == str(tmp_path / "c.toml")
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path), "/already"])
    assert env["X"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    kept = worker_env({"TOKEN_WORKER_BROKER_URL": "redis://b:6379/1"})
    assert kept["TOKEN_WORKER_BROKER_URL"] == "redis://b:6379/1"


def test_wait_until_returns_the_last_value() -> None:
    assert wait_until(lambda: 0, 0.05, 0.01) == 0
    assert wait_until(lambda: "yes", 1) == "yes"
    assert 0 < free_port() < 65536
