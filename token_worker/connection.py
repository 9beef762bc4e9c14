"""Building Redis clients: the one place Redis settings become a connection.

:func:`client_for` is the only function in the package that constructs a Redis client;
it takes the ``[redis]`` settings (``config.RedisSettings``, or a :class:`RedisTarget`
where pydantic is not wanted). The store (:mod:`token_worker.store`) opens itself
through it; nothing else connects. Every topology of the contract is built here: one
server (``redis://``, ``rediss://``, ``unix://``), a Sentinel-managed primary
(``redis+sentinel://``: followed across failovers by redis-py's Sentinel pool) and a
Cluster (``redis+cluster://``). The cluster client is a ``RedisCluster``: it speaks the
same commands, so it is typed as a ``redis.Redis`` here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel, SentinelConnectionPool

from .exceptions import ConfigError, StoreUnavailable
from .topology import Topology, TopologyError, parse_topology
from .urls import redact_url, redis_url_problem

__all__ = ["RedisSettingsLike", "RedisTarget", "async_client_for", "client_for", "connect_redis",
           "describe_redis", "is_cluster"]

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
    @property
    def sentinel_password(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Redis settings without the config: the reader's ``redis_url=``, the demo."""

    url: str
    prefix: str = "stitch"
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    socket_timeout_seconds: float = 5.0
    sentinel_password: str | None = field(default=None, repr=False)
    wait_replicas: int = 0
    wait_timeout_ms: int = 100

    def __repr__(self) -> str:
        # the URL may carry a password: never show it (a repr reaches logs and tracebacks)
        return (f"RedisTarget(url={redact_url(self.url)!r}, prefix={self.prefix!r}, "
                f"wait_replicas={self.wait_replicas!r})")


def client_for(settings: RedisSettingsLike) -> redis.Redis:
    """A client for these settings, with timeouts, so a vanished Redis is an error,
    never a hang.

    Our TLS options are applied after the URL's query (``Redis.from_url`` lets the query
    win), and ``ssl_*`` query parameters are dropped: a URL cannot weaken TLS.

    Raises:
        ConfigError: the URL cannot be used (one line; the URL is never quoted).
    """
    topology, options = _parsed(settings, redis.connection.parse_url)
    if topology is not None:
        return _topology_client(topology, settings)
    client = redis.Redis(connection_pool=redis.ConnectionPool(**options))
    client.auto_close_connection_pool = True  # as from_url does: closing the client closes it
    return client


def async_client_for(settings: RedisSettingsLike) -> Any:
    """:func:`client_for` for ``redis.asyncio``: the same URL rules, TLS and timeouts.

    Nothing connects until the first command (a cluster learns its slot map then).
    """
    import redis.asyncio as aredis
    from redis.asyncio.connection import parse_url as async_parse_url

    topology, options = _parsed(settings, async_parse_url)
    if topology is None:
        client = aredis.Redis(connection_pool=aredis.ConnectionPool(**options))
        client.auto_close_connection_pool = True
        return client
    common = _common(topology, settings)
    if topology.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        timeout = settings.socket_timeout_seconds
        sentinels = AsyncSentinel(  # type: ignore[no-untyped-call]
            list(topology.hosts), db=topology.db,
            sentinel_kwargs={"password": settings.sentinel_password, "socket_timeout": timeout,
                             "socket_connect_timeout": timeout},
            **common)
        return sentinels.master_for(str(topology.service))
    from redis.asyncio.cluster import ClusterNode as AsyncNode
    from redis.asyncio.cluster import RedisCluster as AsyncCluster

    common.pop("health_check_interval", None)  # not an async cluster option
    return AsyncCluster(startup_nodes=[AsyncNode(h, p) for h, p in topology.hosts], **common)


def _parsed(settings: RedisSettingsLike, parse_url: Any) -> tuple[Topology | None, dict[str, Any]]:
    """(the Sentinel or Cluster topology, or None and the one server's pool options).

    Our TLS options are applied after the URL's query (``Redis.from_url`` lets the query
    win), and ``ssl_*`` query parameters are dropped: a URL cannot weaken TLS.
    """
    url = settings.url
    problem = redis_url_problem(url, tls_params=False)
    if problem:
        raise ConfigError([f"redis url: {problem}"])
    try:
        topology = parse_topology(url)
    except TopologyError as exc:  # redis_url_problem said so already; never reached
        raise ConfigError([f"redis url: {exc}"]) from None
    if topology is not None:
        return topology, {}
    options: dict[str, Any] = parse_url(url)
    weakening = [key for key in options if key.startswith("ssl")]
    for key in weakening:
        del options[key]
    if weakening:
        log.warning("redis url: ssl_* query parameters ignored; TLS comes from the tls_* settings")
    timeout = settings.socket_timeout_seconds
    options.update(socket_timeout=timeout, socket_connect_timeout=timeout,
                   health_check_interval=30, decode_responses=True)
    if url.startswith("rediss://"):
        tls = _tls(settings)
        del tls["ssl"]  # the connection class (from the scheme) is the TLS one already
        options.update(tls)
    return None, options


def _tls(settings: RedisSettingsLike) -> dict[str, Any]:
    # verify the server and its name even on redis-py 5, whose default skipped the name
    return {"ssl": True, "ssl_ca_certs": settings.tls_ca_file,
            "ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file,
            "ssl_cert_reqs": "required", "ssl_check_hostname": True}


def _common(topology: Topology, settings: RedisSettingsLike) -> dict[str, Any]:
    timeout = settings.socket_timeout_seconds
    return {
        "socket_timeout": timeout, "socket_connect_timeout": timeout,
        "health_check_interval": 30, "decode_responses": True,
        "username": topology.username, "password": topology.password,
        **(_tls(settings) if topology.tls else {}),
    }


def _topology_client(topology: Topology, settings: RedisSettingsLike) -> redis.Redis:
    timeout = settings.socket_timeout_seconds
    common = _common(topology, settings)
    if topology.kind == "sentinel":
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            list(topology.hosts), db=topology.db,
            sentinel_kwargs={"password": settings.sentinel_password, "socket_timeout": timeout,
                             "socket_connect_timeout": timeout},
            **common)
        client: redis.Redis = sentinels.master_for(topology.service)  # type: ignore[no-untyped-call]
        client.auto_close_connection_pool = True
        return client
    try:
        # RedisCluster learns the slot map while it is built: a cluster that is down now
        # is a StoreUnavailable here, as it would be from the store's first command
        nodes = [ClusterNode(h, p) for h, p in topology.hosts]  # type: ignore[no-untyped-call]
        cluster = RedisCluster(startup_nodes=nodes, **common)
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"Redis unreachable at {topology.where}: "
                               f"{type(exc).__name__}") from exc
    return cast(redis.Redis, cluster)


def is_cluster(client: Any) -> bool:
    """Whether a client (from :func:`client_for`) talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


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
        if isinstance(client, RedisCluster):
            nodes = client.nodes_manager.startup_nodes.values()
            return _printable("cluster " + ",".join(f"{n.host}:{n.port}" for n in nodes))
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            hosts = ",".join(f"{s.connection_pool.connection_kwargs.get('host')}:"
                             f"{s.connection_pool.connection_kwargs.get('port')}"
                             for s in pool.sentinel_manager.sentinels)
            return _printable(f"sentinel {hosts}/{pool.service_name}")
        kw = client.connection_pool.connection_kwargs
        where = str(kw["path"]) if "path" in kw else f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return _printable(where)
    except Exception:  # noqa: BLE001 - it only decorates another error
        return "?"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:255]
