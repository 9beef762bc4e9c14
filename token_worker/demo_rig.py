"""The demo's parts as the breaks act on them: its config, its two workers, its Redis.

See :class:`.demo_breaks.Rig` for what the breaks need; :mod:`.demo` builds one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

from .config import Config, parse_config, redact_url
from .demo_readers import PROFILE, PaymentTasks
from .exceptions import StoreError
from .status import ProfileStatus, read_statuses
from .store import TokenStore
from .testing import Emulator, RedisServer, Worker, celery_worker, worker_env, write_config

__all__ = ["DEMO_CLIENT_ID", "DEMO_PREFIX", "DEMO_QUEUE", "PROFILES", "DemoRig", "cleanup_keys",
           "demo_config"]

DEMO_PREFIX = "demo"  # never the production keyspace, even on the configured Redis
DEMO_QUEUE = "token_worker_demo"
DEMO_CLIENT_ID = "demo-client"
DEMO_SECRET_ENV = "TOKEN_WORKER_DEMO_SECRET"  # noqa: S105 - a variable name
PROFILES = {"payments": "client_paymentrequest", "refunds": "client_refund",
            "disbursements": "client_disbursement"}
# each profile's margin, as a share of the lifetime: out of step, so the rows rotate
# apart, and every one longer than an outage (at most half a lifetime) plus a retry
MARGINS = {"payments": 0.6, "refunds": 0.75, "disbursements": 0.7}
WORKER_STOP_SECONDS = 20.0
WORKERS = 2  # a fleet: kill one and the other carries on, as --beat on two nodes does


def demo_config(path: Path, redis_url: str, token_url: str, lifetime: float,
                broker_url: str | None = None, redis: dict[str, Any] | None = None) -> Config:
    """Write the demo's config (three profiles, margins of :data:`MARGINS`) and parse
    it. The broker is the same Redis unless one is given (a cluster cannot be one)."""
    profiles: dict[str, dict[str, Any]] = {
        name: {"scopes": [scope], "margin_seconds": round(lifetime * MARGINS[name], 1)}
        for name, scope in PROFILES.items()}
    write_config(path, redis_url=redis_url, token_url=token_url, profiles=profiles,
                 prefix=DEMO_PREFIX, broker_url=broker_url or redis_url, queue=DEMO_QUEUE,
                 redis=redis, margin=round(lifetime / 2, 1), interval=1, timeout=5,
                 client_id=DEMO_CLIENT_ID, secret_env=DEMO_SECRET_ENV)
    return parse_config(tomllib.loads(path.read_text()), path=str(path))


def cleanup_keys(store: TokenStore) -> None:
    # the queue and its bindings (kombu expires the shared pidbox bookkeeping itself)
    queue = [DEMO_QUEUE, f"_kombu.binding.{DEMO_QUEUE}", f"_kombu.binding_permanent.{DEMO_QUEUE}"]
    with contextlib.suppress(StoreError):
        store.clear(PROFILES, extra=queue)


class DemoRig:
    """The demo's parts, as the breaks (:class:`.demo_breaks.Rig`) act on them."""

    def __init__(self, *, config: Config, config_file: Path, store: TokenStore,
                 emulator: Emulator, private: RedisServer | None, redis_url: str,
                 secret: str, workdir: Path, lifetime: float) -> None:
        self.config, self.config_file, self.store = config, config_file, store
        self.emulator, self.private, self.redis_url = emulator, private, redis_url
        self.secret, self.workdir, self.lifetime = secret, workdir, lifetime
        self.scopes = dict(PROFILES)
        self.started = 0
        self.workers: list[Worker] = []
        self.tasks = PaymentTasks(config_file, emulator.base_url + "/api")

    def start_fleet(self) -> None:
        """Start the workers (one at a time into :attr:`workers`, so that whatever
        started is stopped should the next one fail to)."""
        for _ in range(WORKERS):
            self.workers.append(self.start_worker())

    def start_worker(self) -> Worker:
        self.started += 1
        n = self.started
        # the demo config already holds the Redis chosen above: worker_env drops the
        # $TOKEN_WORKER_*_URL overrides that would undo that
        env = worker_env({DEMO_SECRET_ENV: self.secret}, config=self.config_file)
        # its own session: Ctrl-C reaches only us, and we stop the workers in order
        return celery_worker(self.workdir, f"token_worker_demo-{os.getpid()}-{n}",
                             queues=DEMO_QUEUE, concurrency=1, env=env,
                             log=self.workdir / f"worker-{n}.log")

    @property
    def logs(self) -> list[Path]:
        """Every worker's log, the killed ones' too."""
        return sorted(self.workdir.glob("worker-*.log"))

    def statuses(self) -> list[ProfileStatus] | None:
        try:
            return read_statuses(self.config, self.store)
        except StoreError:
            return None

    def fingerprints(self) -> dict[str, str | None]:
        return {r.profile: r.fingerprint for r in self.statuses() or []}

    def refresh_in(self) -> float | None:
        return next((r.refresh_in for r in self.statuses() or [] if r.profile == PROFILE), None)

    def redis_unavailable(self) -> str | None:
        if self.private is not None:
            return None
        return (f"the demo uses the configured Redis {redact_url(self.redis_url)}, which it "
                "does not restart; run it with --private-redis to restart one of its own")

    def restart_redis(self) -> None:
        assert self.private is not None  # noqa: S101 - redis_unavailable() said so
        self.private.restart()

    def kill_worker(self) -> int:
        oldest = self.workers.pop(0)
        pid = oldest.proc.pid
        oldest.kill()  # SIGKILL to its whole group, as when its pod or host dies
        self.workers.append(self.start_worker())
        return pid

    def worker_ready(self) -> int | None:
        newest = self.workers[-1]
        return newest.proc.pid if newest.ready() else None

    def dead_worker(self) -> Worker | None:
        return next((w for w in self.workers if w.proc.poll() is not None), None)

    def stop_workers(self) -> list[int]:
        """Warm shutdown of every worker at once (in-flight refreshes finish), then the
        rest of their process groups; their exit statuses."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            worker.kill()  # whatever is left of its group (SIGKILL)
        return [worker.proc.returncode for worker in self.workers]
