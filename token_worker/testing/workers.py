"""Celery worker subprocesses for tests, benchmarks and the demo.

Each worker runs in its own session (process group) with its log in a file, so a
Ctrl-C reaches only the parent, and :meth:`Worker.stop` can end pool and beat children
too. Celery is only ever started as a subprocess: importing this module loads neither
Celery nor the refresher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..constants import ENV_BROKER_URL, ENV_CONFIG, ENV_REDIS_URL

__all__ = ["Worker", "celery_worker", "child_pids", "spawn_worker", "worker_env"]

log = logging.getLogger("token_worker.testing")

_READY = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): INFO/MainProcess\] "
                    r"\S+@\S+ ready\.", re.M)


class Worker:
    """One worker process group and its log file."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path,
                 started: float) -> None:
        self.name, self.proc, self.log_path, self.started = name, proc, log, started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """Whether it has logged ``ready.`` (at once, no waiting)."""
        return _READY.search(self.log()) is not None

    def wait_ready(self, timeout: float = 120) -> float:
        """Wall-clock time the worker logged ``ready.``.

        Raises:
            RuntimeError: it exited or was not ready within ``timeout`` (with its log tail).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _READY.search(self.log())
            if m:
                return time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 30) -> int:
        """Warm shutdown (SIGTERM); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole group: main process, pool children and beat."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 20.0) -> int:
        """Warm shutdown (in-flight tasks finish) for up to ``grace`` seconds, then
        :meth:`kill` whatever is left of the group; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0fs; killing it", self.name, grace)
        self.kill()
        return self.proc.returncode

    def pids(self) -> list[int]:
        """The main process and every descendant (pool children, beat)."""
        return [self.proc.pid, *child_pids(self.proc.pid)]


def worker_env(extra: Mapping[str, str] | None = None, *, config: Path | None = None,
               pythonpath: Sequence[Path | str] = ()) -> dict[str, str]:
    """This process's environment for a worker: the config file decides.

    ``$TOKEN_WORKER_REDIS_URL`` / ``$TOKEN_WORKER_BROKER_URL`` from the caller's shell
    are dropped unless ``extra`` sets them; ``pythonpath`` goes ahead of any given.
    """
    extra = dict(extra or {})
    env = dict(os.environ)
    for key in (ENV_REDIS_URL, ENV_BROKER_URL):
        env.pop(key, None)
    if config is not None:
        env[ENV_CONFIG] = str(config)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, pythonpath), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def spawn_worker(cmd: Sequence[str], *, name: str, workdir: Path, env: Mapping[str, str],
                 log: Path | None = None) -> Worker:
    """Start ``cmd`` in its own session in ``workdir``, its output to ``log``."""
    log = log or workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=workdir, stdout=out,  # noqa: S603 - fixed argv
                                stderr=subprocess.STDOUT, env=dict(env),
                                start_new_session=True)
    return Worker(name, proc, log, time.time())


def celery_worker(workdir: Path, name: str, *, app: str = "token_worker.celery_app",
                  queues: str = "tokens", concurrency: int = 1, pool: str = "prefork",
                  beat: bool = True, heartbeat: bool = True,
                  env: Mapping[str, str] | None = None, log: Path | None = None) -> Worker:
    """``celery -A app worker`` (with embedded beat unless ``beat=False``), not waited for.

    Args:
        workdir: its working directory (and of its log and beat schedule).
        name: the node name (``name@host``) and log file stem.
        env: the whole environment (see :func:`worker_env`); default this process's.
        heartbeat: False adds ``--without-heartbeat`` (steadier CPU figures).
    """
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
           "--loglevel", "INFO", "-P", pool, "--concurrency", str(concurrency),
           "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip"]
    if not heartbeat:
        cmd.append("--without-heartbeat")
    if beat:
        cmd += ["--beat", "--schedule", str(workdir / f"{name}-beat")]
    return spawn_worker(cmd, name=name, workdir=workdir, env=env or worker_env(), log=log)


def child_pids(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out
