"""``token-worker doctor``: is the deployment around token_worker safe? One Check per hazard.

:func:`run_doctor` gathers what Redis, the broker, the token endpoint and the
certificate files say and hands it to the small check functions (those of Redis and the
profiles are in :mod:`token_worker.doctor_checks`). It needs no client secret: the
endpoint is probed with a GET (never the token POST), Redis through the store without a
codec (nothing is decrypted), and only certificate files are read, for their expiry.
No output carries a token, a secret or a password: fingerprints, settings, redacted
URLs and server addresses only.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .config import Config
from .credentials import CERT_WARN_DAYS, certificate_not_after
from .doctor_checks import (
    Check,
    Level,
    clock_check,
    maxmemory_check,
    persistence_check,
    profile_check,
    replication_check,
    version_check,
)
from .exceptions import StoreError
from .status import ProfileStatus, read_statuses
from .store import TokenStore
from .topology import parse_topology
from .urls import redact_url

__all__ = ["Check", "Level", "broker_checks", "certificate_checks", "endpoint_check",
           "exit_code", "redis_checks", "report", "run_doctor"]

INSPECT_TIMEOUT_SECONDS = 2.0
BROKER_TIMEOUT_SECONDS = 5.0


def run_doctor(config: Config, *, wall: Callable[[], float] = time.time,
               inspect_timeout: float = INSPECT_TIMEOUT_SECONDS,
               broker_timeout: float = BROKER_TIMEOUT_SECONDS) -> list[Check]:
    """Every check, in the order printed: Redis, the profiles, the broker, the endpoint,
    the certificates. ``wall`` is this host's clock (injected by tests)."""
    return [*redis_checks(config, wall=wall),
            *broker_checks(config, timeout=broker_timeout, inspect_timeout=inspect_timeout),
            endpoint_check(config),
            *certificate_checks(config, now=wall())]


def exit_code(checks: list[Check]) -> int:
    """1 when any check failed, else 0 (warnings are not hazards)."""
    return 1 if any(c.level is Level.FAIL for c in checks) else 0


def report(checks: list[Check]) -> dict[str, Any]:
    """The ``--json`` document."""
    failed = [c.name for c in checks if c.level is Level.FAIL]
    return {"ok": not failed, "failed": failed,
            "warnings": [c.name for c in checks if c.level is Level.WARN],
            "checks": [c.to_dict() for c in checks]}


# -- Redis --------------------------------------------------------------------
def redis_checks(config: Config, *, wall: Callable[[], float] = time.time) -> list[Check]:
    """Reachability, version, eviction, persistence, replication, clock, each profile."""
    shown = redact_url(config.redis.url)
    try:
        store = TokenStore.open(config.redis)  # no codec: doctor decrypts nothing
    except StoreError as exc:
        return [_redis_down(exc)]
    try:
        facts = store.server_facts()
        before = wall()
        fleet_now = store.time()
        after = wall()
        rows = _statuses(config, store)
        try:
            claims = store.claims()
        except StoreError:
            claims = {}  # a user that may not read them: the other checks still stand
    except StoreError as exc:
        return [_redis_down(exc)]
    finally:
        store.close()
    topology = parse_topology(config.redis.url)
    kind = topology.kind if topology else "server"
    checks = [
        Check("redis", Level.OK, f"{shown} answers ({kind}, {len(facts)} "
              f"primar{'ies' if len(facts) > 1 else 'y'})"),
        version_check(facts),
        maxmemory_check(facts),
        persistence_check(facts),
        replication_check(facts, wait_replicas=config.redis.wait_replicas,
                          sentinel=kind == "sentinel"),
        clock_check(fleet_now - (before + after) / 2),
    ]
    checks += [profile_check(row, interval=config.refresh.interval_seconds,
                             lock_ttl=config.lock_ttl_seconds,
                             claim_lapsed=_lapsed(claims.get(row.profile), fleet_now))
               for row in rows]
    return checks


def _lapsed(until: float | None, now: float) -> float | None:
    """Seconds since beat's claim on the profile lapsed unreleased, or None."""
    return None if until is None or until > now else now - until


def _redis_down(exc: StoreError) -> Check:
    return Check("redis", Level.FAIL, str(exc),
                 "see ops/RUNBOOK.md Redis loss; readers cannot get tokens either")


def _statuses(config: Config, store: TokenStore) -> list[ProfileStatus]:
    try:
        return read_statuses(config, store, locks=True)
    except StoreError:  # the reader user may not PTTL a lock: go on without lock ages
        return read_statuses(config, store)


# -- the broker and the tokens queue ------------------------------------------
def broker_checks(config: Config, *, timeout: float = BROKER_TIMEOUT_SECONDS,
                  inspect_timeout: float = INSPECT_TIMEOUT_SECONDS) -> list[Check]:
    """The broker reachable, and at least one worker consuming ``celery.queue``."""
    from kombu.exceptions import OperationalError

    from .dispatch import producer_app

    shown, queue = redact_url(config.broker_url), config.celery.queue
    name = f"queue {queue}"
    app = producer_app(config)
    try:
        conn = app.connection_for_write()
        conn.connect_timeout = timeout
        try:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        except (OperationalError, OSError) as exc:
            why = _short(exc, config.broker_url)
            return [Check("broker", Level.FAIL, f"unreachable at {shown}: {why}",
                          "start the broker or fix celery.broker_url; no refresh can be "
                          "scheduled or sent"),
                    Check(name, Level.FAIL, "not checked: the broker is unreachable",
                          "fix the broker first")]
        checks = [Check("broker", Level.OK, f"{shown} reachable")]
        checks.append(_queue_check(app, conn, name, queue, inspect_timeout, config.broker_url))
        conn.release()
        return checks
    finally:
        app.close()


def _queue_check(app: Any, conn: Any, name: str, queue: str, timeout: float,
                 url: str) -> Check:
    try:
        replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - kombu and its transports raise many kinds
        return Check(name, Level.WARN, f"could not ask the workers: {_short(exc, url)}",
                     "celery -A token_worker.celery_app inspect active_queues")
    consumers = sorted(w for w, queues in replies.items()
                       if any(q.get("name") == queue for q in queues or []))
    waiting = _amqp_counts(conn, queue)
    if consumers:
        return Check(name, Level.OK, f"consumed by {len(consumers)} worker(s): "
                     f"{', '.join(consumers)[:200]}{waiting}")
    others = f" ({len(replies)} worker(s) answered, on other queues)" if replies else ""
    return Check(name, Level.FAIL, f"no worker answered within {timeout:g} s consuming queue "
                 f"{queue!r}{others}{waiting}: beat's and the CLI's refreshes sit unconsumed",
                 "start a worker with -Q " + queue + " (token-worker worker); see the "
                 "runbook's TokenWorkerRefreshNotAttempted")


def _amqp_counts(conn: Any, queue: str) -> str:
    """RabbitMQ's own count of messages and consumers (passive: never declares)."""
    if conn.transport_cls not in ("amqp", "pyamqp", "librabbitmq"):
        return ""
    try:
        channel = conn.channel()
        try:
            _, messages, consumers = channel.queue_declare(queue, passive=True)
        finally:
            channel.close()
    except Exception:  # noqa: BLE001 - NOT_FOUND closes the channel; the count is extra
        return "; the queue does not exist on the broker yet"
    return f"; RabbitMQ: {messages} message(s) waiting, {consumers} consumer(s)"


# -- the token endpoint -------------------------------------------------------
def endpoint_check(config: Config, session: Any = None) -> Check:
    """The token URL answers a GET with valid TLS (loopback http: the emulator). The
    token POST is never made, so no secret is needed and no token is issued."""
    import requests

    from .client import USER_AGENT

    url, name = config.stitch.token_url, "token endpoint"
    shown, timeout = redact_url(url), config.stitch.timeout_seconds
    http = session or requests.Session()
    started = time.monotonic()
    try:
        with http.get(url, allow_redirects=False, timeout=timeout, stream=True,
                      headers={"User-Agent": USER_AGENT}) as answer:
            status = answer.status_code
    except requests.exceptions.SSLError as exc:
        return Check(name, Level.FAIL, f"{shown}: TLS verification failed ({_tls_reason(exc)})",
                     "the endpoint's certificate is not trusted here: check egress proxies "
                     "and the CA bundle (REQUESTS_CA_BUNDLE)")
    except requests.Timeout:
        return Check(name, Level.FAIL, f"{shown}: no answer within {timeout:g} s "
                     f"(stitch.timeout_seconds)", "check egress (firewall, proxy, DNS)")
    except requests.RequestException as exc:
        return Check(name, Level.FAIL, f"{shown}: unreachable ({type(exc).__name__})",
                     "check egress (firewall, proxy, DNS) and stitch.token_url")
    finally:
        if session is None:
            http.close()
    took = time.monotonic() - started
    tls = "TLS verified" if url.startswith("https://") else "http on loopback (an emulator)"
    text = f"{shown} reachable, {tls}, HTTP {status} to GET in {took:.2f} s (no token requested)"
    if status >= 500 and status != 501:  # 501: GET not implemented, which says nothing bad
        return Check(name, Level.WARN, text + ": a server error",
                     "the token POST may fail too; see the runbook's Endpoint outage")
    return Check(name, Level.OK, text)


def _tls_reason(exc: BaseException) -> str:
    match = re.search(r"certificate verify failed: ([^()]+?)\s*\(_ssl", str(exc))
    if match:
        return f"certificate verify failed: {match[1]}"
    return "handshake failed" if "handshake" in str(exc).lower() else type(exc).__name__


def _short(exc: BaseException, url: str = "") -> str:
    """The error's type and text, printable, without the URL's password should a
    transport quote it."""
    text = str(exc)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(str(secret), "***")
    text = "".join(c if c.isprintable() else "?" for c in text)[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- client certificates ------------------------------------------------------
def certificate_checks(config: Config, *, now: float | None = None) -> list[Check]:
    """Each private_key_jwt client's certificate: expired fails, under 30 days warns."""
    now = time.time() if now is None else now
    checks = []
    for client, settings in sorted(config.clients.items()):
        path = settings.certificate_file
        if not path:
            continue
        name = f"certificate clients.{client}"
        users = sorted(p for p in config.profiles
                       if (config.profiles[p].client or next(iter(config.clients))) == client)
        for_ = f" [{', '.join(users)}]" if users else ""
        if not os.access(path, os.R_OK):
            checks.append(Check(name, Level.WARN, f"not readable on this host; expiry "
                                f"unknown{for_}", "run doctor where the worker runs"))
            continue
        when = certificate_not_after(path)
        if when is None:
            checks.append(Check(name, Level.WARN, f"the file has no certificate matching its "
                                f"key; expiry unknown{for_}",
                                "put the Stitch-issued certificate in the PEM beside the key"))
            continue
        stamp = f"{when:%Y-%m-%d %H:%M} UTC"
        left = when.timestamp() - now
        days = math.floor(left / 86400)
        if left <= 0:
            checks.append(Check(name, Level.FAIL, f"expired on {stamp}: Stitch answers "
                                f"invalid_client{for_}", "see the runbook's Certificate "
                                "expiring"))
        elif days < CERT_WARN_DAYS:
            checks.append(Check(name, Level.WARN, f"expires {stamp}, in {days} days{for_}",
                                "renew it and register it with Stitch; see the runbook's "
                                "Certificate expiring"))
        else:
            checks.append(Check(name, Level.OK, f"expires {stamp}, in {days} days{for_}"))
    return checks
