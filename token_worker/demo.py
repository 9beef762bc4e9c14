"""``token-worker demo``: the whole thing on this machine, in one process tree.

An emulated Stitch endpoint (a thread of this process), Redis (a private
``redis-server``, or the configured one under the ``demo`` prefix), a fleet of two
Celery workers with embedded beat (child processes) refreshing three short-lived
profiles, payment tasks reading the payments token (threads of this process, see
:mod:`.demo_readers`), and a live view (:mod:`.demo_view`) with keys that break things
(:mod:`.demo_breaks`). Ctrl-C, ``q``, SIGTERM or SIGHUP (the terminal closed) shuts
everything down: the payment
tasks, the workers warm, then anything left of their process groups, then the
private Redis.
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
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from .config import load_config, redact_url
from .constants import DEFAULT_PATH, ENV_BROKER_URL, ENV_REDIS_URL
from .demo_breaks import KEYS, Breaker
from .demo_rig import DEMO_CLIENT_ID, DEMO_PREFIX, DEMO_QUEUE, DemoRig, cleanup_keys, demo_config
from .demo_view import Keys, Snapshot, event_line, frame, log_line, redraw, summary
from .exceptions import StoreError, TokenWorkerError
from .store import RedisTarget, TokenStore
from .testing import Emulator, RedisServer

__all__ = ["DEMO_PREFIX", "DEMO_QUEUE", "run_demo"]

log = logging.getLogger("token_worker.demo")

TICK_SECONDS = 0.2  # keys, breaks and the worker are looked at this often
FRAME_SECONDS = 1.0  # a terminal redraws (a log prints a line) this often
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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


def _configured_redis(config_path: str | None) -> tuple[str | None, str | None, dict[str, Any]]:
    """(the Redis the user's config names (env override included), or ``$TOKEN_WORKER_
    REDIS_URL``, else None; its broker when it set one; the ``[redis]`` keys a Sentinel or
    TLS Redis needs)."""
    path = Path(config_path or DEFAULT_PATH)
    if config_path or path.exists():
        config = load_config(path)
        r = config.redis
        keys = {k: v for k, v in (("sentinel_password_env", r.sentinel_password_env),
                                  ("tls_ca_file", r.tls_ca_file),
                                  ("tls_cert_file", r.tls_cert_file),
                                  ("tls_key_file", r.tls_key_file)) if v}
        return r.url, config.celery.broker_url, keys
    return os.environ.get(ENV_REDIS_URL) or None, None, {}


def redis_choice(config_path: str | None, private_redis: bool = False
                 ) -> tuple[str | None, str | None, dict[str, Any], str]:
    """Which Redis the demo uses: (URL, broker URL, ``[redis]`` keys, why), the URL None
    for a private ``redis-server``.

    Its own private one unless a config (or ``$TOKEN_WORKER_REDIS_URL``) names a Redis
    that answers, so the Redis restart break has a server it may restart; with none
    installed, the default URL when it answers.
    """
    url, broker_url, keys = _configured_redis(config_path)
    if private_redis:
        return None, None, {}, "--private-redis"
    if url is not None:
        if _answers(url, keys):
            return url, broker_url, keys, f"prefix {DEMO_PREFIX!r}"
        return None, None, {}, f"none answered at {redact_url(url)}"
    if shutil.which("redis-server") is None and _answers(DEFAULT_REDIS_URL):
        return DEFAULT_REDIS_URL, None, {}, f"prefix {DEMO_PREFIX!r}; no redis-server to start"
    return None, None, {}, "no Redis configured"


@contextlib.contextmanager
def _without_url_overrides() -> Iterator[None]:
    """The demo's own config decides where its readers and store go: the
    ``$TOKEN_WORKER_*_URL`` overrides were taken into account when it was written."""
    saved = {k: os.environ.pop(k) for k in (ENV_REDIS_URL, ENV_BROKER_URL) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _private_redis(workdir: Path) -> RedisServer:
    try:
        return RedisServer(workdir=workdir).start()
    except RuntimeError as exc:
        raise TokenWorkerError(f"no Redis answers, and {exc} (or set redis.url)") from None


def _say(text: str, end: str = "\n") -> None:
    """Print, unless the terminal has gone away (SIGHUP follows: the demo stops)."""
    with contextlib.suppress(OSError):
        print(text, end=end, flush=True)


def _snapshot(rig: DemoRig, breaker: Breaker) -> Snapshot:
    token = rig.tasks.current() if rig.tasks.ready.is_set() else None
    return Snapshot(rows=rig.statuses(), tally=rig.tasks.tally(),
                    rate=rig.tasks.reads_per_second(), calls=rig.emulator.calls,
                    served=token.fingerprint if token is not None else None,
                    active=breaker.active.name if breaker.active is not None else None)


def run_demo(config_path: str | None, port: int = 0, lifetime: float = 30,
             duration: float | None = None, *, breaks: list[str] | None = None,
             log_mode: bool | None = None, private_redis: bool = False) -> None:
    """Run emulator, Redis, two workers with beat, payment tasks and the view until stopped.

    Args:
        config_path: the user's config; only its Redis settings are used (under the
            ``demo`` prefix). None: ``./token_worker.toml`` if present. Without one, or
            when its Redis does not answer, a private ``redis-server`` (see
            :func:`redis_choice`).
        port: emulator port (0: a free one).
        lifetime: seconds each emulated token lives.
        duration: stop by itself after this many seconds (for CI and scripts).
        breaks: break names (:data:`.demo_breaks.BREAKS`) to run one after the other;
            without ``duration`` the demo stops once the last one has recovered.
        log_mode: plain lines instead of the live view (default: when stdout is not
            a terminal).
        private_redis: start a private ``redis-server`` whatever answers (the Redis
            restart break needs one).

    Raises:
        TokenWorkerError: no Redis could be found or started, a worker died, a
            payment task found no token, or a break did not recover.
        ConfigError: the given config file is invalid.
    """
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    # SIGHUP: the terminal closed (a tmux window, an ssh session); stop as for SIGTERM,
    # else the workers (each in its own session) would outlive the demo
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if in_main else {}

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    redis_url, broker_url, redis_keys, why = redis_choice(config_path, private_redis)
    tty = sys.stdout.isatty() if log_mode is None else not log_mode
    secret = secrets.token_urlsafe(24)
    emulator = Emulator(port=port, clients={DEMO_CLIENT_ID: secret}, expires_in=lifetime)
    workdir = Path(tempfile.mkdtemp(prefix="token_worker-demo-"))
    private: RedisServer | None = None
    rig: DemoRig | None = None
    breaker: Breaker | None = None
    quiet = {name: logging.getLogger(name) for name in (
        "token_worker.emulator", *(["token_worker"] if tty else []))}
    levels = {name: logger.level for name, logger in quiet.items()}
    # one line per token call would scroll the view away; on a terminal, any log line
    # would tear it (the event log says what happened)
    for name, logger in quiet.items():
        logger.setLevel(logging.ERROR if name == "token_worker" else logging.WARNING)
    store: TokenStore | None = None
    started = time.monotonic()
    codes: list[int] = []
    try:
        with _without_url_overrides(), Keys() as keys:
            for sig in previous:
                signal.signal(sig, on_term)
            if redis_url is not None:
                where = f"redis {redact_url(redis_url)} ({why})"
            else:
                private = _private_redis(workdir)
                where = f"private redis-server {private.url} ({why})"
                redis_url = private.url
            emulator.start()
            where = f"emulator {emulator.url}  {where}"
            config_file = workdir / "token_worker.toml"
            config = demo_config(config_file, redis_url, emulator.url, lifetime, broker_url,
                                 redis_keys)
            store = TokenStore.open(config.redis)
            rig = DemoRig(config=config, config_file=config_file, store=store,
                          emulator=emulator, private=private, redis_url=redis_url,
                          secret=secret, workdir=workdir, lifetime=lifetime)
            rig.start_fleet()
            pids = " and ".join(f"pid {w.proc.pid}" for w in rig.workers)
            _say(f"demo: workers {pids}, logs {workdir}/worker-*.log, config {config_file}")
            rig.tasks.start()
            breaker = Breaker(rig, breaks)
            _loop(rig, breaker, keys, stop, tty=tty, where=where, duration=duration)
            last = frame(_snapshot(rig, breaker), where=where, events=breaker.events,
                         logs=rig.logs, threads=rig.tasks.threads, keys=False)
            _say(redraw(last) + "\n" if tty else "\n" + last)
    except KeyboardInterrupt:
        pass
    finally:
        if breaker is not None:
            breaker.cancel()
        if rig is not None:
            rig.tasks.stop()
            codes = rig.stop_workers()
        if store is not None and private is None:
            cleanup_keys(store)  # the shared Redis keeps nothing of the demo
        emulator.stop()
        if private is not None:
            private.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for name, logger in quiet.items():
            logger.setLevel(levels[name])
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if rig is not None and breaker is not None:
            _say(summary(rig.tasks.tally(), time.monotonic() - started, rig.tasks.threads,
                         _results(breaker)))
        if codes:
            statuses = ", ".join(map(str, codes))
            _say(f"demo stopped: workers exited with status {statuses}; "
                 f"{'private redis-server stopped; ' if private else ''}emulator stopped")
    _verdict(rig, breaker)


def _loop(rig: DemoRig, breaker: Breaker, keys: Keys, stop: threading.Event, *, tty: bool,
          where: str, duration: float | None) -> None:
    """Keys, breaks and the view, until stopped, ``duration`` or the script's end."""
    started = time.monotonic()
    next_frame = started
    script_over: float | None = None
    pressed = ""
    while not stop.is_set():
        now = time.monotonic()
        if duration is not None and now - started >= duration:
            return
        if duration is None and breaker.script_done:
            script_over = script_over or now
            if now - script_over >= FRAME_SECONDS:  # the calm after it, then stop
                return
        dead = rig.dead_worker()
        if dead is not None:
            path = dead.log_path
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            raise TokenWorkerError(f"a worker exited with status {dead.proc.returncode}; "
                                   f"last lines of {path}:\n{tail}")
        for key in pressed:
            if key in ("q", "Q"):
                return
            if key in KEYS:
                breaker.press(KEYS[key])
        breaker.tick()
        events = breaker.drain()
        if not tty:
            for text in events:
                _say(event_line(text))
        if now >= next_frame or (tty and events):
            snap = _snapshot(rig, breaker)
            if tty:
                _say(redraw(frame(snap, where=where, events=breaker.events, logs=rig.logs,
                                  threads=rig.tasks.threads, keys=keys.enabled)), end="")
            else:
                _say(log_line(snap))
            if now >= next_frame:
                next_frame = now + FRAME_SECONDS
        pressed = keys.read(TICK_SECONDS) if keys.enabled else ""
        if not keys.enabled:
            stop.wait(TICK_SECONDS)


def _results(breaker: Breaker) -> list[str]:
    done = [f"{name} failed" for name in breaker.failed]
    if breaker.scripted:
        done += [f"{b} not run" for b in breaker.script]
        if breaker.active is not None:
            done.append(f"{breaker.active.name} cut short")
    return done


def _verdict(rig: DemoRig | None, breaker: Breaker | None) -> None:
    """Exit 1 (TokenWorkerError) when the promise did not hold: a payment found no
    token, or a break did not recover (or, scripted, did not run)."""
    if rig is None or breaker is None:
        return
    misses = rig.tasks.tally().misses
    bad = _results(breaker)
    if misses or bad:
        raise TokenWorkerError(f"the demo saw {misses} misses" +
                               (f"; breaks: {', '.join(bad)}" if bad else ""))
