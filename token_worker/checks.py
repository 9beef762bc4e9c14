"""Checks on configured values: cross-key rules, credentials, and ``config check`` warnings.

The URL checks live in :mod:`token_worker.urls` (re-exported here), so that building a
Redis client needs nothing of the config layer.

Every message names the key and never quotes the value: a secret pasted into the
wrong key must not reach stderr, a log line or a status record. Only this module's
own constants (scheme names, known scopes, computed numbers) are ever spelled out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .constants import KNOWN_SCOPES
from .exceptions import ConfigError
from .urls import (
    BROKER_SCHEMES,
    REDIS_SCHEMES,
    broker_url_problem,
    redact_url,
    redis_url_problem,
    token_url_problem,
)

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "BROKER_SCHEMES",
    "KNOWN_SCOPES",
    "REDIS_SCHEMES",
    "broker_url_problem",
    "config_warnings",
    "credential_problems",
    "key_text",
    "raw_problems",
    "redact_url",
    "redis_url_problem",
    "token_url_problem",
]

# profile names end up in Redis keys and Celery arguments (fullmatch: no trailing newline)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
def key_text(part: Any) -> str:
    """One part of a key path, printable on one line."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def raw_problems(data: dict[str, Any]) -> list[str]:
    """Cross-key rules, checked on the raw data so they are reported with the rest."""
    problems: list[str] = []
    redis_section = data.get("redis")
    if isinstance(redis_section, dict) and redis_section.get("encryption_keys_env") \
            and redis_section.get("encryption_keys_file"):
        problems.append("redis: set at most one of encryption_keys_env, encryption_keys_file")
    celery_section = data.get("celery")
    if (isinstance(redis_section, dict)
            and str(redis_section.get("url", "")).startswith(("redis+cluster", "rediss+cluster"))
            and not (isinstance(celery_section, dict) and celery_section.get("broker_url"))):
        problems.append("celery.broker_url: must be set when redis.url is a cluster (Celery's "
                        "Redis transport has no cluster mode; amqp:// recommended)")
    clients = data.get("clients") or {}
    profiles = data.get("profiles") or {}
    if not isinstance(clients, dict) or not isinstance(profiles, dict):
        return problems
    for name, client in clients.items():
        if not _NAME.fullmatch(str(name)):
            problems.append(f"clients.{key_text(name)}: name must match {_NAME.pattern}")
        if isinstance(client, dict):
            given = [k for k in ("client_secret_env", "client_secret_file", "certificate_file")
                     if client.get(k)]
            if len(given) != 1:
                problems.append(
                    f"clients.{name}: set exactly one of client_secret_env, client_secret_file, "
                    f"certificate_file (found {len(given) or 'none'})"
                )
    if not clients:
        problems.append("clients: at least one client is required")
    if not profiles:
        problems.append("profiles: at least one profile is required")
    for name, profile in profiles.items():
        if not _NAME.fullmatch(str(name)):
            problems.append(f"profiles.{key_text(name)}: name must match {_NAME.pattern}")
        if not isinstance(profile, dict):
            continue
        scopes = profile.get("scopes")
        if isinstance(scopes, list):
            for i, scope in enumerate(scopes):
                if not isinstance(scope, str) or not scope or not scope.isprintable() \
                        or any(c.isspace() for c in scope):
                    problems.append(f"profiles.{name}.scopes[{i}]: not a scope name (empty, "
                                    f"or contains whitespace or control characters)")
            if len(set(map(str, scopes))) != len(scopes):
                problems.append(f"profiles.{name}.scopes: lists a scope twice")
        client = profile.get("client")
        if client is None:
            if len(clients) > 1:  # none at all is reported once, under clients
                problems.append(
                    f"profiles.{name}.client: required when {len(clients)} clients are configured"
                )
        elif not isinstance(client, str) or client not in clients:
            problems.append(f"profiles.{name}.client: names no client in [clients]")
    return problems


def credential_problems(config: Config) -> list[str]:
    """Read every client's credentials and TLS file once; one line per one that fails."""
    from .credentials import certificate_problems  # cryptography only where needed

    problems: list[str] = []
    for name, client in config.clients.items():
        if client.certificate_file:
            problems.extend(certificate_problems(name, client.certificate_file)[0])
            continue
        try:
            client.read_secret()
        except ConfigError as exc:
            problems.extend(exc.problems)
    r = config.redis
    for key, path in (("tls_ca_file", r.tls_ca_file), ("tls_cert_file", r.tls_cert_file),
                      ("tls_key_file", r.tls_key_file)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                problems.append(f"redis.{key}: file cannot be read "
                                f"({exc.strerror or type(exc).__name__})")
    if r.encryption_keys_env or r.encryption_keys_file:
        from .crypto import codec_for

        try:
            codec_for(config)  # parses every key: problems name the entry, never the key
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def config_warnings(config: Config) -> list[str]:
    """Things that are allowed but probably wrong (unknown scopes, tight margins, ...)."""
    from .credentials import certificate_problems

    warnings = []
    interval, timeout = config.refresh.interval_seconds, config.stitch.timeout_seconds
    if interval != int(interval):
        warnings.append("refresh.interval_seconds: not a whole number of seconds; "
                        "django-celery-beat's DatabaseScheduler would store it rounded down "
                        "(below 1: every loop)")
    for name, profile in config.profiles.items():
        for i, scope in enumerate(profile.scopes):
            if scope not in KNOWN_SCOPES:
                warnings.append(f"profiles.{name}.scopes[{i}]: unknown scope (allowed: "
                                f"Stitch adds scopes over time)")
        margin = config.margin_for(name)
        if margin < interval:
            warnings.append(
                f"profiles.{name}: margin {margin:g}s is shorter than refresh.interval_seconds "
                f"{interval:g}s; a token may expire between checks")
        # a worker killed mid-call holds the lock until it expires; then a tick, then a call
        needed = config.lock_ttl_seconds + interval + timeout
        if margin < needed:
            warnings.append(
                f"profiles.{name}: margin {margin:g}s leaves no room for one retry after a "
                f"worker is killed mid-call: it needs lock ttl {config.lock_ttl_seconds:g}s + "
                f"interval {interval:g}s + timeout {timeout:g}s = {needed:g}s")
    r = config.redis
    if not r.url.startswith("rediss://"):
        for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            if getattr(r, key):
                warnings.append(f"redis.{key}: set, but redis.url is not rediss://, "
                                f"so it is not used")
    for name, client in config.clients.items():
        if client.certificate_file:
            warnings.extend(certificate_problems(name, client.certificate_file)[1])
    if config.metrics.port:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            warnings.append("metrics.port: prometheus-client is not installed, so the worker "
                            "will run without /metrics (pip install 'token_worker[metrics]')")
    return warnings
