"""Prometheus metrics: per-profile gauges read from Redis, and the worker's own counters.

Two sources, one exposition:

* :class:`RedisStatusCollector` reads every profile's state from Redis on each
  scrape (via :func:`~token_worker.status.read_statuses`), so any process that can
  reach Redis can serve it: ``token-worker metrics`` (a sidecar that needs no
  secret) and the worker's own endpoint both do.
* The worker counts refresh outcomes and times token-endpoint calls in the
  process that makes them. :mod:`token_worker.refresh` calls
  :func:`observe_refresh` and :func:`observe_request`; both do nothing until
  :func:`start_worker_metrics` has run, so prometheus-client stays optional.

Celery's prefork pool refreshes in child processes, which the main process's
memory never sees, so the worker uses prometheus-client's multiprocess mode:
every process writes its samples to files in ``$PROMETHEUS_MULTIPROC_DIR``
(a private temporary directory unless the operator sets one) and the endpoint,
served from the main process only, sums them on each scrape. One port per
worker, whatever the pool size, and counts survive recycled children.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Config, redact_url
from .exceptions import StoreError
from .status import read_statuses
from .store import TokenStore
from .tokens import TokenState

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import Metric

__all__ = [
    "METRIC_NAMES",
    "RedisStatusCollector",
    "WorkerMetrics",
    "observe_refresh",
    "observe_request",
    "serve_sidecar",
    "start_worker_metrics",
]

log = logging.getLogger("token_worker.metrics")

MISSING_EXTRA = "prometheus-client is not installed: pip install 'token_worker[metrics]'"
ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# token endpoint latency: Stitch takes from ~100 ms to several seconds to mint a token
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

# every family either endpoint exposes (without the _total/_bucket/... sample suffixes)
GAUGES = {
    "token_worker_up": "1 when Redis answered this scrape, else 0 (all other gauges absent).",
    "token_worker_build_info": "token_worker version.",
    "token_worker_token_expires_in_seconds":
        "Seconds until the published token expires (0: no token).",
    "token_worker_token_refresh_in_seconds":
        "Seconds until the next scheduled refresh attempt (negative: overdue).",
    "token_worker_token_state": "1 for the token's current state (valid, refresh_due, ...).",
    "token_worker_refresh_consecutive_failures": "Failed refresh attempts in a row.",
    "token_worker_last_success_timestamp_seconds":
        "Unix time of the last successful refresh (0: never).",
    "token_worker_last_attempt_timestamp_seconds":
        "Unix time of the last refresh attempt that called the endpoint (0: never).",
    "token_worker_refresh_margin_seconds": "Configured refresh margin of the profile.",
    "token_worker_refresh_interval_seconds": "How often beat checks which profiles are due.",
    "token_worker_refresh_lock_seconds":
        "Seconds the refresh lock holder has left (0: unlocked; +Inf: a lock with no expiry).",
}
WORKER_FAMILIES = {
    "token_worker_refresh":
        "Refreshes run in this worker, by outcome (refreshed, failed, done_elsewhere, not_due).",
    "token_worker_token_request_duration_seconds":
        "Token endpoint call latency, by result (ok or the error code).",
}
METRIC_NAMES = frozenset(GAUGES) | frozenset(WORKER_FAMILIES)


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImportError(MISSING_EXTRA) from None


class RedisStatusCollector:
    """Per-profile gauges, read from Redis on every scrape (one pipelined round trip).

    When Redis does not answer, the scrape still succeeds with ``token_worker_up 0``,
    so an alert can say "Redis is gone" rather than "the exporter is gone".
    """

    def __init__(self, config: Config, store: TokenStore | None = None) -> None:
        self.config = config
        if store is None:
            # statuses need no decryption: no codec, so no keys on the exporter
            store = TokenStore.open(config.redis)
        self.store = store

    def describe(self) -> list[Metric]:
        # registering must not touch Redis
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        def gauge(name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, GAUGES[name],
                                     labels=["profile"] if labels is None else labels)

        info = InfoMetricFamily("token_worker_build", GAUGES["token_worker_build_info"])
        info.add_metric([], {"version": __version__})
        yield info
        up = gauge("token_worker_up", [])
        try:
            rows = read_statuses(self.config, self.store, locks=True)
        except StoreError as exc:
            log.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        expires = gauge("token_worker_token_expires_in_seconds")
        refresh_in = gauge("token_worker_token_refresh_in_seconds")
        state = gauge("token_worker_token_state", ["profile", "state"])
        failures = gauge("token_worker_refresh_consecutive_failures")
        success = gauge("token_worker_last_success_timestamp_seconds")
        attempt = gauge("token_worker_last_attempt_timestamp_seconds")
        margin = gauge("token_worker_refresh_margin_seconds")
        interval = gauge("token_worker_refresh_interval_seconds")
        lock = gauge("token_worker_refresh_lock_seconds")
        for row in rows:
            p = [row.profile]
            expires.add_metric(p, row.expires_in or 0.0)
            if row.refresh_in is not None:
                refresh_in.add_metric(p, row.refresh_in)
            for s in TokenState:
                state.add_metric([row.profile, str(s)], 1.0 if row.state is s else 0.0)
            failures.add_metric(p, row.consecutive_failures)
            success.add_metric(p, row.last_success_at or 0.0)
            attempt.add_metric(p, row.last_attempt_at or 0.0)
            margin.add_metric(p, self.config.margin_for(row.profile))
            interval.add_metric(p, self.config.refresh.interval_seconds)
            lock.add_metric(p, row.lock_ttl)
        yield from (expires, refresh_in, state, failures, success, attempt, margin, interval,
                    lock)


def status_registry(config: Config, store: TokenStore | None = None) -> CollectorRegistry:
    """A registry holding only the Redis-backed per-profile gauges."""
    _require_prometheus()
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisStatusCollector(config, store))
    return registry


def serve_sidecar(config: Config, host: str, port: int,
                  stop: threading.Event | None = None) -> None:
    """Serve the Redis-backed gauges on ``http://host:port/metrics`` until ``stop`` is set.

    Raises:
        ImportError: prometheus-client is not installed.
        OSError: the port cannot be bound.
    """
    registry = status_registry(config)
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        log.info("metrics: serving profile gauges from Redis %s on http://%s:%d/metrics",
                 redact_url(config.redis.url), host, server.server_port)
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- in the worker ------------------------------------------------------------------
class _Instruments:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        # registry=None: in multiprocess mode the collector reads the files instead
        self.refreshes: Counter = Counter(
            "token_worker_refresh", WORKER_FAMILIES["token_worker_refresh"],
            ["profile", "outcome"], registry=None)
        self.latency: Histogram = Histogram(
            "token_worker_token_request_duration_seconds",
            WORKER_FAMILIES["token_worker_token_request_duration_seconds"],
            ["profile", "result"], buckets=LATENCY_BUCKETS, registry=None)


_instruments: _Instruments | None = None


def observe_refresh(profile: str, outcome: str) -> None:
    """Count one refresh outcome (no-op unless worker metrics are on)."""
    if _instruments is not None:
        _instruments.refreshes.labels(profile, outcome).inc()


def observe_request(profile: str, result: str, seconds: float) -> None:
    """Time one token-endpoint call; ``result`` is ``ok`` or the error code."""
    if _instruments is not None:
        _instruments.latency.labels(profile, result).observe(seconds)


def _switch_value_class() -> None:
    """Make metrics created from now on follow ``$PROMETHEUS_MULTIPROC_DIR`` (set or not)."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class WorkerMetrics:
    """The worker's running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, server: Any, thread: threading.Thread, directory: str,
                 owns_directory: bool, previous_env: str | None) -> None:
        self.server = server
        self.thread = thread
        self.directory = directory
        self._owns_directory = owns_directory
        self._previous_env = previous_env

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and counting (tests; a worker just exits)."""
        global _instruments
        _instruments = None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        from prometheus_client import values

        close_files = getattr(values, "close_all_multiprocess_files", None)
        if close_files is not None:
            close_files()
        if self._previous_env is None:
            os.environ.pop(ENV_MULTIPROC_DIR, None)
        else:
            os.environ[ENV_MULTIPROC_DIR] = self._previous_env
        _switch_value_class()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_worker_metrics(config: Config, *, port: int | None = None,
                         host: str | None = None) -> WorkerMetrics | None:
    """Expose ``/metrics`` from the worker's main process; call it before the pool forks.

    Celery wiring calls this from a ``worker_init`` handler (the main process,
    before any child exists). Serves the worker's counters from every pool
    process plus the Redis-backed per-profile gauges. A metrics problem never
    stops the worker: it is logged and ``None`` returned.

    Args:
        config: ``[metrics] port`` and ``host`` say where (port 0: disabled).
        port: overrides ``config.metrics.port``.
        host: overrides ``config.metrics.host``.
    """
    global _instruments
    port = config.metrics.port if port is None else port
    host = config.metrics.host if host is None else host
    if not port:
        return None
    try:
        _require_prometheus()
    except ImportError as exc:
        log.error("metrics.port is %d but %s; running without metrics", port, exc)
        return None
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    previous = os.environ.get(ENV_MULTIPROC_DIR)
    owns = not previous
    directory = previous or tempfile.mkdtemp(prefix="token-worker-metrics-")
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):
        stale.unlink()  # a previous run's counts would be summed into ours
    # children inherit the environment; the value class must switch before metrics exist
    os.environ[ENV_MULTIPROC_DIR] = directory
    _switch_value_class()
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(RedisStatusCollector(config))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d (%s); running without metrics",
                  host, port, exc.strerror or exc)
        if owns:
            os.environ.pop(ENV_MULTIPROC_DIR, None)
            shutil.rmtree(directory, ignore_errors=True)
        _switch_value_class()
        return None
    _instruments = _Instruments()
    log.info("metrics: serving on http://%s:%d/metrics (multiprocess dir %s)",
             host, server.server_port, directory)
    return WorkerMetrics(server, thread, directory, owns, previous)
