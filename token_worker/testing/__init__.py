"""Development tools: the Stitch emulator, private Redis topologies, configs, workers, a clock.

One importable place for what tests, benchmarks and ``token-worker demo`` need to run
the real thing on one machine. Imports redis and the standard library only; Celery
runs as a subprocess. Not for production code paths.
"""

from __future__ import annotations

from .clock import ManualClock
from .configs import CLIENT_ID, write_config
from .emulator import Emulator
from .helpers import free_port, wait_until
from .redis_server import RedisServer
from .topologies import RedisCluster, SentinelSet
from .workers import Worker, celery_worker, spawn_worker, worker_env

__all__ = [
    "CLIENT_ID",
    "Emulator",
    "ManualClock",
    "RedisCluster",
    "RedisServer",
    "SentinelSet",
    "Worker",
    "celery_worker",
    "free_port",
    "spawn_worker",
    "wait_until",
    "worker_env",
    "write_config",
]
