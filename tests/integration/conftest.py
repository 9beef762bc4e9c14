"""Real fleets for the integration scenarios: ``celery worker --beat`` subprocesses
against a private redis-server and the emulator, never eager mode.

Every worker writes its log to a file; at teardown every worker is stopped (SIGTERM,
then SIGKILL to its whole process group) and the logs, CLI output and every Redis
database (the published token keys aside) are searched for any token the emulator
ever issued and for the client secret.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import REPO, SECRET, RedisServer
from token_worker.testing import Worker, celery_worker, worker_env, write_config
from token_worker.testing.emulator import Emulator

__all__ = ["HEAVY", "THREE", "Fleet", "Worker", "fleet", "private_fleet", "subprocess_env"]

# Scenarios whose bounds a loaded machine tests hardest (the soak's refresh count,
# failovers that readers must not notice, a CLI that must answer within a token's last
# seconds): ``scripts/test`` runs them in a second phase, after the parallel one, on two
# workers (the soak on one, the rest one at a time on the other: tests/conftest.py).
HEAVY = pytest.mark.timing

THREE = {"payments": ["client_paymentrequest"], "refunds": ["client_refund"],
         "disbursements": ["client_disbursement"]}


def subprocess_env(**extra: str) -> dict[str, str]:
    """A child's environment: the config under test decides, not the caller's shell."""
    secret = os.environ.get("STITCH_CLIENT_SECRET", SECRET)
    return worker_env({"STITCH_CLIENT_SECRET": secret, **extra}, pythonpath=[REPO])


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
        """A config with one secret client; the broker is db 1 of the store's Redis."""
        kwargs.setdefault("redis_url", self.redis_url)
        kwargs.setdefault("token_url", self.emulator.url)
        kwargs.setdefault("profiles", THREE)
        for key, value in (("queue", "tokens"), ("interval", 1), ("retries", 2)):
            kwargs.setdefault(key, value)
        return write_config(self.tmp / name, **kwargs)

    def start_worker(self, config: Path, *, app: str = "token_worker.celery_app",
                     queues: str = "tokens", concurrency: int = 1, pool: str = "prefork",
                     beat: bool = True, env: dict[str, str] | None = None) -> Worker:
        worker = celery_worker(
            self.tmp, f"tw{len(self.workers)}-{uuid.uuid4().hex[:6]}", app=app, queues=queues,
            concurrency=concurrency, pool=pool, beat=beat,
            env=subprocess_env(TOKEN_WORKER_CONFIG=str(config), **(env or {})))
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


@pytest.fixture
def private_fleet(tmp_path: Path, emulator: Emulator, secret_env: str) -> Iterator[Fleet]:
    """A fleet on its own redis-server (store and broker), which the test may kill."""
    server = RedisServer().start()
    harness = Fleet(tmp_path, server, emulator)
    try:
        yield harness
    finally:
        harness.shutdown()
        try:
            harness.assert_no_leaks()
        finally:
            server.kill()
