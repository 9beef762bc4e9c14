"""Checks on configured values: URLs, credentials, and warnings for ``config check``.

Every message names the key and never quotes the value: a secret pasted into the
wrong key must not reach stderr, a log line or a status record. Only this module's
own constants (scheme names, known scopes, computed numbers) are ever spelled out.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .exceptions import ConfigError

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

KNOWN_SCOPES = (
    "client_paymentrequest",
    "client_bankaccountverification",
    "client_imageupload",
    "client_businesslookup",
    "client_paymentauthorizationrequest",
    "client_refund",
    "client_disbursement",
    "client_recurringpaymentconsentrequest",
    "client_consentrequest",
)
REDIS_SCHEMES = ("redis", "rediss", "unix")
# kombu's transport aliases: what Celery took before URLs were checked
BROKER_SCHEMES = (
    "amqp", "amqps", "pyamqp", "librabbitmq", "redis", "rediss", "redis+socket", "sentinel",
    "memory",
    "filesystem", "sqs", "qpid", "mongodb", "sqla", "sqlalchemy", "zookeeper", "consul",
    "etcd", "azureservicebus", "azurestoragequeues", "gcpubsub", "pyro", "kafka",
    "confluentkafka", "slmq", "pgmq",
)
# profile names end up in Redis keys and Celery arguments (fullmatch: no trailing newline)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NOT_YET = ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# query parameters that carry a credential (redis-py, kombu, sentinel, SQS, ...)
_QUERY_SECRET = re.compile(
    r"(?<=[?&;])([^=&;#]*(?:pass|secret|token|auth|key)[^=&;#]*)=([^&;]*)", re.IGNORECASE)
_USER = re.compile(r"[A-Za-z0-9._~%-]*")  # a user name we may show: nothing that ends it
_ENCODE = "percent-encode / ? # @ : in the password (/ as %2F, @ as %40)"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def redact_url(url: str) -> str:
    """The URL with everything between ``//`` and the last ``@`` hidden, safe to print.

    Credential-like query values are hidden too. Where a password holds ``@``, ``?`` or
    ``&`` the two readings overlap, so both are hidden. The user name is kept when a
    ``:`` follows it; bare user info may be a password (redis-py and kombu differ on
    ``scheme://word@host``) and is hidden. Never raises.
    """
    try:
        scheme, sep, rest = str(url).partition("://")
        if not sep or not _SCHEME.fullmatch(scheme):
            return "***"  # not a URL at all: it could be anything, a secret too
        hidden = [False] * len(rest)
        at = rest.rfind("@")
        if at != -1:
            user, colon, _ = rest[:at].partition(":")
            start = len(user) + 1 if colon and _USER.fullmatch(user) else 0
            hidden[start:at] = [True] * (at - start)
        for match in _QUERY_SECRET.finditer(rest):
            first, end = match.span(2)
            hidden[first:end] = [True] * (end - first)
        shown = []
        for i, char in enumerate(rest):
            if not hidden[i]:
                shown.append(char)
            elif i == 0 or not hidden[i - 1]:
                shown.append("***")
        return _printable(f"{scheme}://{''.join(shown)}")
    except Exception:  # noqa: BLE001 - a repr or an error message must never fail
        return "***"


def _url_problem(url: str, schemes: tuple[str, ...], *, tls_params: bool, tls_hint: str,
                 broker: bool = False) -> str | None:
    """Why ``url`` cannot be used (never quoting it), or None."""
    if not isinstance(url, str) or not url:
        return "must be a non-empty URL"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "must not contain spaces or control characters"
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return "is not a URL (expected scheme://...)"
    if scheme in _NOT_YET:
        if scheme.endswith("cluster") and broker:
            return f"{scheme}:// is refused: Celery's Redis transport has no cluster mode"
        return f"{scheme}:// is not supported yet"
    base = scheme.split("+", 1)[0] if "redis" not in scheme else scheme
    if base not in schemes:
        return f"unsupported scheme (use {', '.join(s + '://' for s in schemes)})"
    try:
        parts = urlsplit(url)
        port = parts.port
        parts.hostname  # noqa: B018 - raises on a broken IPv6 literal
    except ValueError:
        return f"cannot be parsed (a bad port or IPv6 address; {_ENCODE})"
    if "@" in parts.path + parts.query + parts.fragment:
        return f"has an @ after the host: {_ENCODE}"
    if port == 0:
        return "port must be 1-65535"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if broker:
        # kombu needs ssl_cert_reqs on a rediss:// broker URL: take the settings that only
        # make TLS stricter or say where its files are, refuse whatever could weaken it
        if any(k.lower().startswith("ssl_") and not _strict_tls_param(k.lower(), v)
               for k, v in query):
            return f"must not carry query parameters that weaken TLS; {tls_hint}"
    elif tls_params and any(k.lower().startswith("ssl_") for k, _ in query):
        return f"must not carry ssl_* query parameters (they could weaken TLS); {tls_hint}"
    return None


def _strict_tls_param(key: str, value: str) -> bool:
    if key == "ssl_cert_reqs":
        return value.lower() in ("required", "cert_required")
    if key == "ssl_check_hostname":
        return value.lower() in ("true", "1", "yes")
    return key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def redis_url_problem(url: str, *, tls_params: bool = True) -> str | None:
    """Why a ``redis.url`` cannot be used, or None. ``tls_params``: refuse ssl_* too."""
    problem = _url_problem(url, REDIS_SCHEMES, tls_params=tls_params,
                           tls_hint="set redis.tls_ca_file, tls_cert_file, tls_key_file")
    if problem:
        return problem
    from redis.connection import parse_url

    try:
        options = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return "has a query parameter redis-py cannot parse"
    path = urlsplit(url).path
    if not url.startswith("unix:") and path not in ("", "/") and "db" not in options:
        return "path must be /DB, a database number"
    if url.startswith("unix:") and not options.get("path"):
        return "unix:// needs the socket path (unix:///run/redis.sock)"
    return None


def broker_url_problem(url: str) -> str | None:
    """Why a ``celery.broker_url`` cannot be used, or None (each of ``a;b`` failover URLs)."""
    for one in (url.split(";") if isinstance(url, str) and url else [url]):
        problem = _url_problem(one, BROKER_SCHEMES, tls_params=True,
                               tls_hint="set broker_use_ssl in celeryconfig.py", broker=True)
        if problem:
            return problem
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_url_problem(url: str) -> str | None:
    """Why ``stitch.token_url`` cannot be used: it must be https:// except on loopback."""
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        return "must be an https:// URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
        host = parts.hostname or ""
    except ValueError:
        return "cannot be parsed (a bad port or IPv6 address)"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL"
    if "@" in parts.netloc:
        return "must not contain a user or password"
    if parts.scheme == "http" and not _loopback(host):
        return "must be https:// (http:// only on a loopback address: 127.0.0.0/8, ::1, localhost)"
    return None


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
