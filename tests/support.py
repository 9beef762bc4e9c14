"""Real parts for tests: a private redis-server, configs, process helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-" + "Zq9xWv" * 4  # long and distinctive, so a leak grep cannot miss it
CLIENT_ID = "test-7a1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on a free port; can be killed and restarted (empty)."""

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.dir = tempfile.mkdtemp(prefix="tw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--loglevel", "warning", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=True)

    def dump_all(self) -> str:
        """Every key and value in every database, as text (for leak greps)."""
        out = []
        for db in range(16):
            c = redis.Redis(port=self.port, db=db)
            for key in c.scan_iter(count=1000):
                kind = c.type(key).decode()
                if kind == "string":
                    val: Any = c.get(key)
                elif kind == "hash":
                    val = c.hgetall(key)
                elif kind == "list":
                    val = c.lrange(key, 0, -1)
                elif kind == "set":
                    val = c.smembers(key)
                elif kind == "zset":
                    val = c.zrange(key, 0, -1, withscores=True)
                else:
                    val = kind
                out.append(f"{db} {key!r} {val!r}")
        return "\n".join(out)


def write_config(
    path: Path,
    *,
    redis_url: str,
    token_url: str,
    profiles: dict[str, list[str]] | None = None,
    prefix: str = "stitch",
    margin: float = 600,
    interval: float = 30,
    broker_url: str | None = None,
    secret_file: Path | None = None,
    extra: str = "",
    timeout: float = 5,
) -> Path:
    """A config with one secret client (secret from $STITCH_CLIENT_SECRET or a file)."""
    profiles = profiles or {"payments": ["client_paymentrequest"]}
    secret_line = (f'client_secret_file = "{secret_file}"' if secret_file
                   else 'client_secret_env = "STITCH_CLIENT_SECRET"')
    lines = [
        "[redis]", f'url = "{redis_url}"', f'prefix = "{prefix}"', "",
        "[celery]", f'broker_url = "{broker_url or redis_url.rsplit("/", 1)[0] + "/1"}"', "",
        "[stitch]", f'token_url = "{token_url}"', f"timeout_seconds = {timeout}", "",
        "[refresh]", f"margin_seconds = {margin}", f"interval_seconds = {interval}", "",
        "[clients.main]", f'client_id = "{CLIENT_ID}"', secret_line, "",
    ]
    for name, scopes in profiles.items():
        lines += [f"[profiles.{name}]", f"scopes = {scopes!r}".replace("'", '"'), ""]
    path.write_text("\n".join(lines) + extra)
    return path


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("STITCH_CLIENT_SECRET", SECRET)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python() -> str:
    return sys.executable


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text(errors="replace").splitlines()


def record_publishes(url: str, stop: threading.Event, out: dict[str, list[float]],
                     clock: Callable[[], float] = time.monotonic) -> threading.Thread:
    """Record, per profile, when each token is published (the events channel)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("stitch:events")

    def run() -> None:
        while not stop.is_set():
            msg = pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "message":
                profile, _, what = msg["data"].partition(" ")
                if what and ":" not in what and what != "purged":  # a fingerprint
                    out.setdefault(profile, []).append(clock())
        pubsub.close()
        client.close()  # referenced here so the pubsub's pool outlives this function

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


SECRET_CLIENT = {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"}


def config_data(**changes: Any) -> dict[str, Any]:
    """A minimal valid config mapping, with top-level sections replaced by ``changes``."""
    data: dict[str, Any] = {
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "clients": {"main": dict(SECRET_CLIENT)},
        "profiles": {"payments": {"scopes": ["client_paymentrequest"]}},
    }
    data.update(changes)
    return data


def config_problems(data: dict[str, Any]) -> list[str]:
    """The problems ``parse_config`` refuses ``data`` with (it must refuse it)."""
    import pytest

    from token_worker.config import parse_config
    from token_worker.exceptions import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def make_token(store: Any, lifetime: float, *, access: str = "tok-A",
               issued_ago: float = 0.0, refresh_in: float | None = None) -> Any:
    """A token issued now (or ``issued_ago``) that lives ``lifetime`` seconds."""
    from token_worker.tokens import Token

    now = store.time()
    issued_at = now - issued_ago
    return Token(access_token=access, token_type="Bearer", scopes=("client_paymentrequest",),
                 issued_at=issued_at, expires_at=now + lifetime,
                 refresh_at=now + (refresh_in if refresh_in is not None else lifetime / 2))
