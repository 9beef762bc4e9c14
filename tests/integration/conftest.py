"""Real fleets for the integration scenarios: ``celery worker --beat`` subprocesses
against a private redis-server and the emulator, never eager mode.

Every worker writes its log to a file; at teardown every worker is stopped (SIGTERM,
then SIGKILL to its whole process group) and the logs, CLI output and every Redis
database (the published token keys aside) are searched for any token the emulator
ever issued and for the client secret.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import CLIENT_ID, REPO, SECRET, RedisServer, env_with
from token_worker.emulator import Emulator

THREE = {"payments": ["client_paymentrequest"], "refunds": ["client_refund"],
         "disbursements": ["client_disbursement"]}
_READY = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): INFO/MainProcess\] "
                    r"\S+@\S+ ready\.", re.M)


def fleet_config(path: Path, *, redis_url: str, token_url: str,
                 profiles: dict[str, list[str]] | None = None, prefix: str = "stitch",
                 margin: float = 600, interval: float = 1, broker_url: str | None = None,
                 queue: str = "tokens", timeout: float = 5, retries: int = 2) -> Path:
    """A config with one secret client; the broker is db 1 of the store's Redis."""
    broker = broker_url or redis_url.rsplit("/", 1)[0] + "/1"
    lines = [
        "[redis]", f'url = "{redis_url}"', f'prefix = "{prefix}"', "",
        "[celery]", f'broker_url = "{broker}"', f'queue = "{queue}"', "",
        "[stitch]", f'token_url = "{token_url}"', f"timeout_seconds = {timeout}", "",
        "[refresh]", f"margin_seconds = {margin}", f"interval_seconds = {interval}",
        f"retries = {retries}", "",
        "[clients.main]", f'client_id = "{CLIENT_ID}"',
        'client_secret_env = "STITCH_CLIENT_SECRET"', "",
    ]
    for name, scopes in (profiles or THREE).items():
        lines += [f"[profiles.{name}]", f"scopes = {json.dumps(scopes)}", ""]
    path.write_text("\n".join(lines))
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    env = env_with(**extra)
    # the config under test decides; an override from the caller's shell must not
    for key in ("TOKEN_WORKER_REDIS_URL", "TOKEN_WORKER_BROKER_URL"):
        if key not in extra:
            env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


class Worker:
    """One ``celery worker`` process group and its log file."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path,
                 started: float) -> None:
        self.name, self.proc, self.log_path, self.started = name, proc, log, started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> float:
        """Wall-clock time the worker logged ``ready.``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _READY.search(self.log())
            if m:
                return time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 30) -> int:
        """Warm shutdown (SIGTERM); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole group: main process, pool children and beat."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


class Fleet:
    """Workers, CLI runs and leak checks for one test."""

    def __init__(self, tmp_path: Path, redis_server: RedisServer, emulator: Emulator) -> None:
        self.tmp = tmp_path
        self.redis_server = redis_server
        self.emulator = emulator
        self.workers: list[Worker] = []
        self.outputs: list[str] = []

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    def config(self, name: str = "token_worker.toml", **kwargs: Any) -> Path:
        kwargs.setdefault("redis_url", self.redis_url)
        kwargs.setdefault("token_url", self.emulator.url)
        return fleet_config(self.tmp / name, **kwargs)

    def start_worker(self, config: Path, *, app: str = "token_worker.celery_app",
                     queues: str = "tokens", concurrency: int = 1, pool: str = "prefork",
                     beat: bool = True, env: dict[str, str] | None = None) -> Worker:
        name = f"tw{len(self.workers)}-{uuid.uuid4().hex[:6]}"
        log = self.tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
               "--loglevel", "INFO", "-P", pool, "--concurrency", str(concurrency),
               "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip"]
        if beat:
            cmd += ["--beat", "--schedule", str(self.tmp / f"{name}-beat")]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT,
                env=subprocess_env(TOKEN_WORKER_CONFIG=str(config), **(env or {})),
                start_new_session=True)
        worker = Worker(name, proc, log, time.time())
        self.workers.append(worker)
        return worker

    def cli(self, config: Path, *args: str, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "token_worker", "--config", str(config), *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.tmp,
            env=subprocess_env(**(env or {})))
        self.outputs.append(result.stdout + result.stderr)
        return result

    def store_client(self) -> redis.Redis:
        return self.redis_server.client()

    def shutdown(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            worker.kill()  # pool and beat children too, whatever happened

    def redis_text(self) -> str:
        """Every Redis database as text, except the published tokens (db 0, by design)."""
        lines = self.redis_server.dump_all().splitlines()
        return "\n".join(line for line in lines
                         if not (line.startswith("0 ") and ":token:" in line.split(" ", 2)[1]))

    def assert_no_leaks(self, extra: str = "") -> None:
        corpus = "\n".join([*(w.log() for w in self.workers), *self.outputs,
                            self.redis_text(), extra])
        assert SECRET not in corpus, "the client secret leaked"
        leaked = [t[:12] for t in self.emulator.issued_tokens if t in corpus]
        assert not leaked, f"tokens leaked into logs or Redis: {leaked}"


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer, redis_url: str, emulator: Emulator,
          secret_env: str) -> Iterator[Fleet]:
    """A fleet harness; its workers always die at teardown, then leaks are checked."""
    harness = Fleet(tmp_path, redis_server, emulator)
    try:
        yield harness
    finally:
        harness.shutdown()
    harness.assert_no_leaks()
