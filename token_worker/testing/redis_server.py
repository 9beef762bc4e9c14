"""A private ``redis-server`` on a free port: tests, benchmarks and the demo's fallback.

Never the shared instance: each server has its own port and data directory, saves
nothing, and dies with :meth:`RedisServer.stop` (or at the end of a ``with`` block).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from .helpers import free_port, port_in_use

__all__ = ["RedisServer"]

_PORT_ATTEMPTS = 3


class RedisServer:
    """A private redis-server on a free port; can be killed and restarted (empty).

    Args:
        port: the port (default: a free one; should another process take it before the
            first start binds it, that start moves to another free port).
        extra_args: more ``redis-server`` options (TLS, an ACL file, ...).
        workdir: its data directory (default: a new temporary one, removed on stop).
    """

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None,
                 workdir: Path | str | None = None) -> None:
        self.port = port or free_port()
        self._may_move = port is None  # until the first start: nobody knows the port yet
        self.extra_args = extra_args or []
        self._own_dir = workdir is None
        self.dir = str(workdir) if workdir is not None else tempfile.mkdtemp(prefix="tw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it and wait until it answers.

        Raises:
            RuntimeError: redis-server is not installed or did not start.
        """
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self._start()
            except RuntimeError:
                # lost the race for a port it picked itself: pick another; any other
                # failure (a bad option, no binary) is the caller's to see
                if (not self._may_move or attempt == _PORT_ATTEMPTS - 1
                        or not port_in_use(self.port)):
                    raise
                self.port = free_port()
                continue
            self._may_move = False
            break
        return self

    def _start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        os.makedirs(self.dir, exist_ok=True)  # stop() removed it; a restart needs it back
        self.proc = subprocess.Popen(  # noqa: S603 - a binary found on PATH, fixed args
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--loglevel", "warning", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_ready()
        except RuntimeError:
            self.kill()
            raise

    def ready_client(self) -> redis.Redis:
        """The client readiness is checked with (a server without a default user overrides)."""
        return self.client()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break  # it exited: a bad option or a taken port
            try:
                if self._answers_as_itself():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def _answers_as_itself(self) -> bool:
        """It answers, and it is this process: not another server that won the port
        (that one answers ``PING`` too until this one's failed bind makes it exit)."""
        with self.ready_client() as client:
            if not client.ping():
                return False
            try:
                pid = int(client.info("server")["process_id"])
            except redis.ResponseError:  # a user not allowed INFO: the ping must do
                return True
        return self.proc is None or pid == self.proc.pid

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """Terminate it (SIGKILL after 5 s) and remove its own data directory."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start() if self.proc is None else self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=True)

    def dump_all(self) -> str:
        """Every key and value in every database, as text (for leak greps)."""
        out = []
        for db in range(16):
            c = redis.Redis(port=self.port, db=db)
            for key in c.scan_iter(count=1000):
                raw = c.type(key)
                kind = raw.decode() if isinstance(raw, bytes) else str(raw)
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
