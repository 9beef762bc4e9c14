"""Checks on URLs (Redis, broker, token endpoint) and their redaction.

Stdlib only (redis-py's URL parser is imported where a Redis URL is checked) and
importing nothing of the package, so building a Redis client
(:mod:`token_worker.connection`) can refuse a bad URL without loading the config layer.
Messages never quote the URL: it may carry a password.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, urlsplit

from .topology import CLUSTER_SCHEMES, SENTINEL_SCHEMES, TopologyError, parse_topology

__all__ = [
    "BROKER_SCHEMES",
    "celery_broker",
    "REDIS_SCHEMES",
    "broker_url_problem",
    "redact_url",
    "redis_url_problem",
    "token_url_problem",
]

REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
# kombu's transport aliases: what Celery took before URLs were checked
BROKER_SCHEMES = (
    "amqp", "amqps", "pyamqp", "librabbitmq", "redis", "rediss", "redis+socket", "sentinel",
    "memory",
    "filesystem", "sqs", "qpid", "mongodb", "sqla", "sqlalchemy", "zookeeper", "consul",
    "etcd", "azureservicebus", "azurestoragequeues", "gcpubsub", "pyro", "kafka",
    "confluentkafka", "slmq", "pgmq",
)
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
    if scheme in CLUSTER_SCHEMES and broker:
        return f"{scheme}:// is refused: Celery's Redis transport has no cluster mode"
    if scheme in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        try:
            parse_topology(url)
        except TopologyError as exc:
            return str(exc)
        return None
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
    if problem or url.partition("://")[0] in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
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
    if isinstance(url, str) and url.partition("://")[0] in SENTINEL_SCHEMES:
        return _url_problem(url, BROKER_SCHEMES, tls_params=True, tls_hint="", broker=True)
    for one in (url.split(";") if isinstance(url, str) and url else [url]):
        problem = _url_problem(one, BROKER_SCHEMES, tls_params=True,
                               tls_hint="set broker_use_ssl in celeryconfig.py", broker=True)
        if problem:
            return problem
    return None


def celery_broker(url: str, sentinel_password: str | None = None
                  ) -> tuple[str, dict[str, object]]:
    """Celery's ``broker_url`` and the ``broker_transport_options`` it needs for ``url``.

    A ``redis+sentinel://`` URL becomes kombu's ``sentinel://host:port;sentinel://...``
    (``sentinels://`` with TLS) with ``master_name``; anything else passes as it is.
    """
    topo = parse_topology(url)
    if topo is None or topo.kind != "sentinel":
        return url, {}
    from urllib.parse import quote

    auth = ""
    if topo.password is not None or topo.username:
        auth = f"{quote(topo.username or '', safe='')}:{quote(topo.password or '', safe='')}@"
    scheme = "sentinel"
    hosts = ";".join(f"{scheme}://{auth}{f'[{h}]' if ':' in h else h}:{p}/{topo.db}"
                     for h, p in topo.hosts)
    options: dict[str, object] = {"master_name": topo.service}
    if sentinel_password is not None:
        options["sentinel_kwargs"] = {"password": sentinel_password}
    return hosts, options


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
