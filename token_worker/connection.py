"""Building Redis clients: the one place a URL and TLS settings become a connection.

The store (:mod:`token_worker.store`) re-exports these; nothing else in the package
constructs a Redis client.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from .exceptions import ConfigError
from .urls import redis_url_problem

__all__ = ["connect_redis", "describe_redis"]

log = logging.getLogger("token_worker.store")


def connect_redis(
    url: str,
    *,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    socket_timeout: float = 5.0,
) -> redis.Redis:
    """A client with timeouts, so a vanished Redis is an error, never a hang.

    Our options are applied after the URL's query (``Redis.from_url`` lets the query
    win), and ``ssl_*`` query parameters are dropped: a URL cannot weaken TLS.

    Raises:
        ConfigError: the URL cannot be used (one line; the URL is never quoted).
    """
    problem = redis_url_problem(url, tls_params=False)
    if problem:
        raise ConfigError([f"redis url: {problem}"])
    options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    weakening = [key for key in options if key.startswith("ssl")]
    for key in weakening:
        del options[key]
    if weakening:
        log.warning("redis url: ssl_* query parameters ignored; TLS comes from the tls_* settings")
    options.update(socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                   health_check_interval=30, decode_responses=True)
    if url.startswith("rediss://"):
        # verify the server and its name even on redis-py 5, whose default skipped the name
        options.update(ssl_ca_certs=tls_ca_file, ssl_certfile=tls_cert_file,
                       ssl_keyfile=tls_key_file, ssl_cert_reqs="required",
                       ssl_check_hostname=True)
    client = redis.Redis(connection_pool=redis.ConnectionPool(**options))
    client.auto_close_connection_pool = True  # as from_url does: closing the client closes it
    return client


def describe_redis(client: redis.Redis) -> str:
    """``host:port`` (or socket path) of a client, for error messages; never raises."""
    try:
        kw = client.connection_pool.connection_kwargs
        where = str(kw["path"]) if "path" in kw else f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return "".join(c if c.isprintable() else "?" for c in where)[:255]
    except Exception:  # noqa: BLE001 - it only decorates another error
        return "?"
