"""``token-worker demo``: the whole thing on this machine, in one process tree.

An emulated Stitch endpoint (a thread of this process), Redis (the configured one
under the ``demo`` prefix, else a private ``redis-server``), a Celery worker with
embedded beat (a child process) refreshing three short-lived profiles, and a live
status view. Ctrl-C or SIGTERM shuts everything down: the worker warm, then
anything left of its process group, then the private Redis.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from types import FrameType
from typing import Any

from .cli_support import render_table
from .config import Config, load_config, parse_config, redact_url
from .constants import DEFAULT_PATH, ENV_REDIS_URL
from .exceptions import StoreError, TokenWorkerError
from .status import read_statuses
from .store import RedisTarget, TokenStore
from .testing import Emulator, RedisServer, Worker, celery_worker, worker_env, write_config

__all__ = ["DEMO_PREFIX", "DEMO_QUEUE", "run_demo"]

log = logging.getLogger("token_worker.demo")

DEMO_PREFIX = "demo"  # never the production keyspace, even on the configured Redis
DEMO_QUEUE = "token_worker_demo"
DEMO_CLIENT_ID = "demo-client"
DEMO_SECRET_ENV = "TOKEN_WORKER_DEMO_SECRET"  # noqa: S105 - a variable name
PROFILES = {"payments": "client_paymentrequest", "refunds": "client_refund",
            "disbursements": "client_disbursement"}
# a terminal redraws every second; a log (CI, no TTY) gets a frame every few seconds
FRAME_SECONDS_TTY, FRAME_SECONDS_LOG = 1.0, 5.0
WORKER_STOP_SECONDS = 20.0


def _answers(url: str, keys: dict[str, Any] | None = None) -> bool:
    keys = dict(keys or {})
    password_env = keys.pop("sentinel_password_env", None)
    try:
        store = TokenStore.open(RedisTarget(
            url, socket_timeout_seconds=1.0, **keys,
            sentinel_password=os.environ.get(password_env) if password_env else None))
    except StoreError:  # a cluster client connects as it is built
        return False
    try:
        store.time()
        return True
    except StoreError:
        return False
    finally:
        store.close()


def _configured_redis(config_path: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """(the Redis the user's config names (env override included), else the default;
    its broker when it set one; the ``[redis]`` keys a Sentinel or TLS Redis needs)."""
    path = Path(config_path or DEFAULT_PATH)
    if config_path or path.exists():
        config = load_config(path)
        r = config.redis
        keys = {k: v for k, v in (("sentinel_password_env", r.sentinel_password_env),
                                  ("tls_ca_file", r.tls_ca_file),
                                  ("tls_cert_file", r.tls_cert_file),
                                  ("tls_key_file", r.tls_key_file)) if v}
        return r.url, config.celery.broker_url, keys
    return os.environ.get(ENV_REDIS_URL) or "redis://127.0.0.1:6379/0", None, {}


def _private_redis(workdir: Path) -> RedisServer:
    try:
        return RedisServer(workdir=workdir).start()
    except RuntimeError as exc:
        raise TokenWorkerError(f"no Redis answers, and {exc} (or set redis.url)") from None


def _demo_config(path: Path, redis_url: str, token_url: str, lifetime: float,
                 broker_url: str | None = None, redis: dict[str, Any] | None = None) -> Config:
    """Write the demo's config (three profiles, short margins) and parse it. The broker
    is the same Redis unless one is given (a cluster cannot be one)."""
    profiles: dict[str, dict[str, Any]] = {name: {"scopes": [scope]}
                                           for name, scope in PROFILES.items()}
    # a per-profile margin, so the rows rotate out of step
    profiles["refunds"]["margin_seconds"] = round(lifetime / 2, 1)
    write_config(path, redis_url=redis_url, token_url=token_url, profiles=profiles,
                 prefix=DEMO_PREFIX, broker_url=broker_url or redis_url, queue=DEMO_QUEUE,
                 redis=redis,
                 margin=round(lifetime / 3, 1), interval=1, timeout=5,
                 client_id=DEMO_CLIENT_ID, secret_env=DEMO_SECRET_ENV)
    return parse_config(tomllib.loads(path.read_text()), path=str(path))


def _start_worker(config_path: Path, secret: str, workdir: Path) -> Worker:
    # the demo config already holds the Redis chosen above: worker_env drops the
    # $TOKEN_WORKER_*_URL overrides that would undo that
    env = worker_env({DEMO_SECRET_ENV: secret}, config=config_path)
    # its own session: Ctrl-C reaches only us, and we stop the worker in order
    return celery_worker(workdir, f"token_worker_demo-{os.getpid()}", queues=DEMO_QUEUE,
                         concurrency=2, env=env, log=workdir / "worker.log")


def _log_tail(path: Path, lines: int = 6) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in text if "refresh profile=" in line][-lines:]


def _frame(config: Config, store: TokenStore, emulator: Emulator, redis_note: str,
           logpath: Path) -> str:
    rows = read_statuses(config, store)
    out = [f"token_worker demo  {time.strftime('%H:%M:%S')}  (Ctrl-C to stop)",
           f"emulator {emulator.url}  endpoint calls {emulator.calls}  {redis_note}", "",
           render_table(rows), "", "recent refreshes (worker log):"]
    out += [f"  {line}" for line in _log_tail(logpath)] or ["  (none yet)"]
    return "\n".join(out)


def _cleanup_keys(store: TokenStore) -> None:
    # the queue and its bindings (kombu expires the shared pidbox bookkeeping itself)
    queue = [DEMO_QUEUE, f"_kombu.binding.{DEMO_QUEUE}", f"_kombu.binding_permanent.{DEMO_QUEUE}"]
    with contextlib.suppress(StoreError):
        store.clear(PROFILES, extra=queue)


def run_demo(config_path: str | None, port: int = 0, lifetime: float = 30,
             duration: float | None = None) -> None:
    """Run emulator, Redis, a worker with beat and a live status view until stopped.

    Args:
        config_path: the user's config; only its Redis URL is used (under the
            ``demo`` prefix). None: ``./token_worker.toml`` if present, else the
            default URL. A private ``redis-server`` is started when none answers.
        port: emulator port (0: a free one).
        lifetime: seconds each emulated token lives.
        duration: stop by itself after this many seconds (for CI and scripts).

    Raises:
        TokenWorkerError: no Redis could be found or started, or the worker died.
        ConfigError: the given config file is invalid.
    """
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    redis_url, broker_url, redis_keys = _configured_redis(config_path)
    workdir = Path(tempfile.mkdtemp(prefix="token_worker-demo-"))
    private: RedisServer | None = None
    worker: Worker | None = None
    secret = secrets.token_urlsafe(24)
    emu_log = logging.getLogger("token_worker.emulator")
    emu_level = emu_log.level
    emu_log.setLevel(logging.WARNING)  # one line per token call would scroll the view away
    emulator = Emulator(port=port, clients={DEMO_CLIENT_ID: secret}, expires_in=lifetime)
    store: TokenStore | None = None
    try:
        if in_main:
            signal.signal(signal.SIGTERM, on_term)
        if _answers(redis_url, redis_keys):
            redis_note = f"redis {redact_url(redis_url)} (prefix {DEMO_PREFIX!r})"
        else:
            private = _private_redis(workdir)
            redis_note = f"private redis-server {private.url} (none answered at " \
                         f"{redact_url(redis_url)})"
            redis_url, broker_url, redis_keys = private.url, None, {}
        emulator.start()
        config_file = workdir / "token_worker.toml"
        config = _demo_config(config_file, redis_url, emulator.url, lifetime, broker_url,
                              redis_keys)
        store = TokenStore.open(config.redis)
        logpath = workdir / "worker.log"
        worker = _start_worker(config_file, secret, workdir)
        print(f"demo: worker pid {worker.proc.pid}, log {logpath}, config {config_file}",
              flush=True)
        tty = sys.stdout.isatty()
        every = FRAME_SECONDS_TTY if tty else FRAME_SECONDS_LOG
        started = time.monotonic()
        next_frame = started
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if worker.proc.poll() is not None:
                tail = "\n".join(logpath.read_text(errors="replace").splitlines()[-15:])
                raise TokenWorkerError(f"the worker exited with status {worker.proc.returncode}; "
                                       f"last lines of {logpath}:\n{tail}")
            if now >= next_frame:
                frame = _frame(config, store, emulator, redis_note, logpath)
                print(("\033[H\033[2J" if tty else "\n") + frame, flush=True)
                next_frame = now + every
            stop.wait(0.2)
        print(_frame(config, store, emulator, redis_note, logpath), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        # warm shutdown (in-flight refreshes finish), then the rest of its process group
        code = worker.stop(WORKER_STOP_SECONDS) if worker is not None else None
        if store is not None and private is None:
            _cleanup_keys(store)  # the shared Redis keeps nothing of the demo
        emulator.stop()
        if private is not None:
            private.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        emu_log.setLevel(emu_level)
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if code is not None:
            print(f"demo stopped: worker exited with status {code}; "
                  f"{'private redis-server stopped; ' if private else ''}emulator stopped",
                  flush=True)
