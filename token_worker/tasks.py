"""Celery wiring: the two tasks, their routing and beat entry, and ``token_or_retry``.

No token logic lives here: both tasks call :class:`token_worker.refresh.Refresher`,
as ``token-worker refresh --local`` does. Tasks take profile names and timestamps
and return ``None``, so no token or secret can reach a broker, a result backend
or a Celery log line. Duplicated beats are harmless: the fleet-wide lock and the
re-check under it, inside ``refresh_profile``, make one endpoint call per due
token whoever sends the message. Sending to the workers is :mod:`token_worker.dispatch`,
waiting on them :mod:`token_worker.waiting`, running one :mod:`token_worker.worker`.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown
from kombu.exceptions import OperationalError

from .batch import refresh_batch
from .broker_compat import install as _guard_broker_loss
from .config import Config, load_config
from .constants import BATCH_TASK, DUE_TASK, PROFILE_TASK
from .exceptions import ConfigError, StoreError, TokenUnavailable
from .outcomes import RefreshResult
from .plan import BATCH_THREADS, plan_sends
from .reader import TokenReader
from .refresh import Outcome, Refresher
from .settings_rules import NUMBERS
from .tokens import Token

__all__ = ["BATCH_TASK", "DUE_TASK", "PROFILE_TASK", "register", "token_or_retry"]

log = logging.getLogger("token_worker.tasks")

# a refresh that reached a worker whose config lacks its profile is handed on this often
UNKNOWN_PROFILE_HANDOFFS = 20
UNKNOWN_PROFILE_COUNTDOWN = 0.1
BEAT_ENTRY = "token_worker.refresh_due"
# a beat tick older than this share of the interval is dropped: after an outage the
# queued ticks must not run back to back (the next tick does the same work anyway)
BEAT_EXPIRES_FRACTION = 0.9
# a fanned-out refresh waits behind slow ones (prefetch 1); past this, later ticks own it
FANOUT_EXPIRES_MIN = 60.0
# a claim outlives its message's expiry by this much, so a claimed refresh is sent again
# only once its message can no longer run
CLAIM_SLACK_SECONDS = 1.0
# the most profiles a refresh_batch message may carry: refresh.max_batch's upper bound,
# whatever this worker's own setting (another beat's config may batch more)
BATCH_LIMIT = int(NUMBERS["refresh.max_batch"].le)
# refresh_due's log line names at most this many profiles
LOGGED_NAMES = 20
# bare readers learn the profile list from Redis; republish it at least this often
SYNC_EVERY_SECONDS = 300.0
# a beat entry "last run" long ago: the first tick fires when beat starts, not an
# interval later, so a fresh fleet has tokens within seconds
_NEVER = datetime(2000, 1, 1, tzinfo=UTC)


class _Runtime:
    """One Refresher per worker process for one config, built on first use."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._refresher: Refresher | None = None
        self._pid = os.getpid()
        self._synced_at: float | None = None

    def reset(self) -> None:
        # after fork: the parent's sockets are not ours to use or to close
        self._refresher = None
        self._synced_at = None
        self._pid = os.getpid()

    def refresher(self) -> Refresher:
        if self._pid != os.getpid():
            self.reset()
        if self._refresher is None:
            self._refresher = Refresher.from_config(self.config)
        return self._refresher

    def sync_if_stale(self, refresher: Refresher) -> None:
        now = time.monotonic()
        if self._synced_at is None or now - self._synced_at >= SYNC_EVERY_SECONDS:
            refresher.sync_profiles()
            self._synced_at = now


_RUNTIMES: list[_Runtime] = []


def _reset_after_fork(**_: Any) -> None:
    for runtime in _RUNTIMES:
        runtime.reset()


worker_process_init.connect(_reset_after_fork, weak=False)


def _run_refresh(runtime: _Runtime, task: Any, profile: str, force: bool,
                 requested_at: float | None, scheduled: bool = False) -> None:
    try:
        # scheduled: beat sent it, under a claim (an older beat's copy has none: the
        # release is then a no-op)
        result = runtime.refresher().refresh_profile(
            profile, bool(force),
            requested_at=None if requested_at is None else float(requested_at),
            scheduled=bool(scheduled), claimed=bool(scheduled))
    except ConfigError as exc:
        if task.request.retries < UNKNOWN_PROFILE_HANDOFFS:
            # a worker whose config lacks the profile (a rolling deploy adding it, or
            # another app on the queue): send it back for a worker that knows it, as a
            # Celery retry so that workers of any version take the message
            log.info("refresh profile=%s not in this worker's config; handing it on",
                     profile)
            raise task.retry(countdown=UNKNOWN_PROFILE_COUNTDOWN) from None
        # e.g. a message sent before the profile was removed from every config
        log.warning("refresh profile=%s skipped: %s", profile, "; ".join(exc.problems))
        return
    except StoreError as exc:
        # nothing was requested; the next beat tick tries again
        log.warning("refresh profile=%s skipped: token store unreachable: %s", profile, exc)
        return
    _log_result(profile, result, force)


def _log_result(profile: str, result: RefreshResult, force: bool = False) -> None:
    if result.outcome is Outcome.FAILED and result.error_code == "lock_busy":
        log.warning("refresh profile=%s outcome=failed: %s", profile, result.error)
    elif result.outcome in (Outcome.NOT_DUE, Outcome.DONE_ELSEWHERE):
        # refreshed and failed outcomes are logged by the Refresher itself
        log.info("refresh profile=%s outcome=%s reason=%s force=%s", profile, result.outcome,
                 result.reason, force)


def _run_batch(runtime: _Runtime, app: Any, queue: str, profiles: list[str]) -> None:
    if not isinstance(profiles, list | tuple):
        log.warning("refresh_batch skipped: its argument is not a list of profiles")
        return
    try:
        refresher = runtime.refresher()
    except ConfigError as exc:
        log.error("refresh_batch skipped: %s", "; ".join(exc.problems))
        return
    items = refresh_batch(refresher, [str(p) for p in profiles[:BATCH_LIMIT]])
    for item in items:
        if item.result is not None:
            _log_result(item.profile, item.result)
        elif item.unknown is not None:
            # not in this worker's config: on as a one-profile refresh, whose handoff
            # finds a worker that knows it
            log.info("refresh profile=%s not in this worker's config; handing it on",
                     item.profile)
            app.send_task(PROFILE_TASK, args=(item.profile,), kwargs={"scheduled": True},
                          queue=queue, ignore_result=True)
        else:
            log.warning("refresh profile=%s skipped: token store unreachable: %s",
                        item.profile, item.unreachable)


def _refresh_due(runtime: _Runtime, app: Any, queue: str, expires: float) -> None:
    try:
        refresher = runtime.refresher()
        runtime.sync_if_stale(refresher)
        # every profile due before the next tick, claimed so that no later tick (and no
        # second beat) sends it again while its message waits or runs
        now, claims = refresher.claim_due(horizon=runtime.config.refresh.interval_seconds,
                                          hold=expires + CLAIM_SLACK_SECONDS)
    except ConfigError as exc:
        log.error("refresh_due skipped: %s", "; ".join(exc.problems))
        return
    except StoreError as exc:
        log.warning("refresh_due skipped: token store unreachable: %s", exc)
        return
    if not claims:
        return
    sends = plan_sends(claims, now, max_batch=runtime.config.refresh.max_batch)
    names = [c.profile for c in claims]
    lapsed = [c.profile for c in claims if c.lapsed]
    log.info("refresh_due claimed=%d tasks=%d lapsed=%d profiles=%s%s", len(claims),
             len(sends), len(lapsed), ",".join(names[:LOGGED_NAMES]),
             ",..." if len(names) > LOGGED_NAMES else "")
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for send in sends:
                # each runs at its due time; it expires with its claim
                options = {"queue": queue, "countdown": send.countdown or None,
                           "expires": send.countdown + expires, "producer": producer,
                           "ignore_result": True}
                if len(send.profiles) == 1:
                    # scheduled: a copy that waited in the queue while another attempt
                    # failed leaves the next attempt to the backoff
                    app.send_task(PROFILE_TASK, args=(send.profiles[0],),
                                  kwargs={"scheduled": True}, **options)
                else:
                    app.send_task(BATCH_TASK, args=(list(send.profiles),), **options)
                sent += 1
    except (OperationalError, OSError) as exc:
        log.warning("refresh_due: broker unreachable after %d of %d tasks: %s", sent,
                    len(sends), exc)
        _release(refresher, [p for send in sends[sent:] for p in send.profiles])


def _release(refresher: Refresher, profiles: list[str]) -> None:
    """Claims whose message was never sent: free them for the next tick."""
    try:
        with refresher.store.batch() as batch:
            for profile in profiles:
                refresher.store.release_claim(profile, pipeline=batch)
    except StoreError:
        pass  # they lapse on their own


def _after_configure(app: Any, apply: Any) -> None:
    # settings touched before the app reads its config would be replaced by it
    if app.configured:
        apply()
    else:
        app.on_after_configure.connect(lambda **_: apply(), weak=False)


def register(app: Any, config: Config | None = None) -> None:
    """Add token_worker's tasks, routing and beat entry to an existing Celery app.

    Adds ``token_worker.refresh_due`` and ``token_worker.refresh_profile`` (both
    sent to ``celery.queue``), an exact-name route for each ahead of the app's own
    ``task_routes`` (in a dict of routes, an entry the app has for these names is
    kept), and a ``beat_schedule`` entry running ``refresh_due`` every
    ``refresh.interval_seconds``. Nothing else about the app changes. Call it
    anywhere: it waits for the app to read its configuration, so a later
    ``config_from_object`` does not undo it.

    Args:
        app: the Celery app.
        config: the token_worker config; default :func:`load_config` (so
            ``$TOKEN_WORKER_CONFIG`` or ``./token_worker.toml``).

    Raises:
        ConfigError: no config given and the config file is missing or invalid.
    """
    if getattr(app, "_token_worker_registered", False):
        return
    # beat's refreshes wait in the worker until due: a lost Redis broker must not end it
    _guard_broker_loss()
    config = config or load_config()
    runtime = _Runtime(config)
    _RUNTIMES.append(runtime)
    queue = config.celery.queue
    interval = config.refresh.interval_seconds
    fanout_expires = max(FANOUT_EXPIRES_MIN, 2 * interval)
    # JSON and no result whatever the app's defaults; late acks because a refresh is
    # idempotent (lock + re-check), so a copy redelivered after a lost worker is safe
    options: dict[str, Any] = {"shared": False, "ignore_result": True, "serializer": "json",
                               "acks_late": True, "reject_on_worker_lost": True,
                               "queue": queue}

    def refresh_profile(task: Any, profile: str, force: bool = False,
                        requested_at: float | None = None, scheduled: bool = False) -> None:
        """Refresh one profile if due (always when forced); returns nothing."""
        _run_refresh(runtime, task, profile, force, requested_at, scheduled)

    def refresh_batch(profiles: list[str]) -> None:
        """Refresh several claimed profiles, each as ``refresh_profile`` would; returns
        nothing."""
        _run_batch(runtime, app, queue, profiles)

    def refresh_due() -> None:
        """Claim every profile due before the next tick and send its refresh to run when
        it is due (several per task when many are due together)."""
        _refresh_due(runtime, app, queue, fanout_expires)

    # a forced refresh may wait out another holder's lock, then make its own attempt
    one_refresh = 2 * config.lock_ttl_seconds + 30
    app.task(name=PROFILE_TASK, time_limit=one_refresh, bind=True,
             max_retries=UNKNOWN_PROFILE_HANDOFFS, **options)(refresh_profile)
    app.task(name=BATCH_TASK, time_limit=one_refresh * -(-BATCH_LIMIT // BATCH_THREADS),
             **options)(refresh_batch)
    app.task(name=DUE_TASK, **options)(refresh_due)

    def apply() -> None:
        ours = {PROFILE_TASK: {"queue": queue}, BATCH_TASK: {"queue": queue},
                DUE_TASK: {"queue": queue}}
        routes = app.conf.task_routes
        if not routes:
            app.conf.task_routes = ours
        elif isinstance(routes, dict):
            app.conf.task_routes = {**ours, **routes}
        else:
            given = list(routes) if isinstance(routes, list | tuple) else [routes]
            app.conf.task_routes = (ours, *given)
        entry = {"task": DUE_TASK, "schedule": timedelta(seconds=interval),
                 "options": {"queue": queue, "expires": interval * BEAT_EXPIRES_FRACTION},
                 "last_run_at": _NEVER}
        # a new dict: the default one may be shared by every app in the process
        app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), BEAT_ENTRY: entry}

    _after_configure(app, apply)

    def start_metrics(sender: Any = None, **_: Any) -> None:
        # worker_init runs in the main process before the pool forks, so every child
        # inherits the multiprocess setup and one endpoint sums them all
        if getattr(sender, "app", None) is app:
            from .metrics import start_worker_metrics

            start_worker_metrics(config)

    worker_init.connect(start_metrics, weak=False)

    listeners: list[Any] = []

    def start_listener(sender: Any = None, **_: Any) -> None:
        # worker_ready fires once, in the main process, after the pool has forked: the
        # listener (401 reports, store restarts) lives there only. Workers that do not
        # consume the token queue (an app's payment workers) leave it to those that do
        if (getattr(sender, "app", None) is not app or listeners
                or not _consumes(sender, queue)):
            return
        from .listener import Listener

        listener = Listener(Refresher.from_config(config))
        listener.start()
        listeners.append(listener)

    def stop_listener(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            for listener in listeners:
                listener.stop()

    worker_ready.connect(start_listener, weak=False)
    worker_shutdown.connect(stop_listener, weak=False)
    app._token_worker_registered = True


def _consumes(consumer: Any, queue: str) -> bool:
    """Whether a worker's consumer takes messages from ``queue`` (True when unknown)."""
    try:
        return queue in {q.name for q in consumer.task_consumer.queues}
    except (AttributeError, TypeError):
        return True


def token_or_retry(task: Any, reader: TokenReader, profile: str, *, countdown: float = 5.0,
                   wait: float | None = None) -> Token:
    """The current token, or retry the calling task later when there is none.

    For a bound task (``bind=True``)::

        token = token_or_retry(self, reader, "payments")

    Args:
        task: the bound task instance (``self``).
        reader: the process's :class:`TokenReader`.
        profile: the scope profile.
        countdown: seconds before the retry.
        wait: seconds to wait for a token first (see :meth:`TokenReader.get`).

    Raises:
        celery.exceptions.Retry: no token now; the task runs again after ``countdown``
            (or the :class:`TokenUnavailable` itself once ``max_retries`` is reached).
    """
    try:
        return reader.get(profile, wait)
    except TokenUnavailable as exc:
        raise task.retry(exc=exc, countdown=countdown) from None
