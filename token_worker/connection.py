"""Building Redis clients: the one place Redis settings become a connection.

:func:`client_for` is the only function in the package that constructs a Redis client;
it takes the ``[redis]`` settings (``config.RedisSettings``, or a :class:`RedisTarget`
where pydantic is not wanted). The store (:mod:`token_worker.store`) opens itself
through it; nothing else connects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from .exceptions import ConfigError
from .urls import redis_url_problem

__all__ = ["RedisSettingsLike", "RedisTarget", "client_for", "connect_redis", "describe_redis"]

log = logging.getLogger("token_worker.store")


class RedisSettingsLike(Protocol):
    """What :func:`client_for` reads: ``config.RedisSettings`` has these, and more."""

    @property
    def url(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def tls_ca_file(self) -> str | None: ...
    @property
    def tls_cert_file(self) -> str | None: ...
    @property
    def tls_key_file(self) -> str | None: ...
    @property
    def socket_timeout_seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Redis settings without the config: the reader's ``redis_url=``, the demo."""

    url: str
    prefix: str = "stitch"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    socket_timeout_seconds: float = 5.0


def client_for(settings: RedisSettingsLike) -> redis.Redis:
    """A client for these settings, with timeouts, so a vanished Redis is an error,
    never a hang.

    Our TLS options are applied after the URL's query (``Redis.from_url`` lets the query
    win), and ``ssl_*`` query parameters are dropped: a URL cannot weaken TLS.

    Raises:
        ConfigError: the URL cannot be used (one line; the URL is never quoted).
    """
    url = settings.url
    problem = redis_url_problem(url, tls_params=False)
    if problem:
        raise ConfigError([f"redis url: {problem}"])
    options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    weakening = [key for key in options if key.startswith("ssl")]
    for key in weakening:
        del options[key]
    if weakening:
        log.warning("redis url: ssl_* query parameters ignored; TLS comes from the tls_* settings")
    timeout = settings.socket_timeout_seconds
    options.update(socket_timeout=timeout, socket_connect_timeout=timeout,
                   health_check_interval=30, decode_responses=True)
    if url.startswith("rediss://"):
        # verify the server and its name even on redis-py 5, whose default skipped the name
        options.update(ssl_ca_certs=settings.tls_ca_file, ssl_certfile=settings.tls_cert_file,
                       ssl_keyfile=settings.tls_key_file, ssl_cert_reqs="required",
                       ssl_check_hostname=True)
    client = redis.Redis(connection_pool=redis.ConnectionPool(**options))
    client.auto_close_connection_pool = True  # as from_url does: closing the client closes it
    return client


def connect_redis(
    url: str,
    *,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    socket_timeout: float = 5.0,
) -> redis.Redis:
    """:func:`client_for` with the settings spelled out (tests and scripts)."""
    return client_for(RedisTarget(url, tls_ca_file=tls_ca_file, tls_cert_file=tls_cert_file,
                                  tls_key_file=tls_key_file, socket_timeout_seconds=socket_timeout))


def describe_redis(client: redis.Redis) -> str:
    """``host:port`` (or socket path) of a client, for error messages; never raises."""
    try:
        kw = client.connection_pool.connection_kwargs
        where = str(kw["path"]) if "path" in kw else f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return "".join(c if c.isprintable() else "?" for c in where)[:255]
    except Exception:  # noqa: BLE001 - it only decorates another error
        return "?"
