"""The store's view of the Redis servers themselves: version, settings, replication.

:class:`ServerOps` is a base of :class:`token_worker.store.TokenStore`, for ``doctor``.
It reads; it never changes a setting. What an ACL or a managed Redis refuses (``INFO``,
``CONFIG GET``, ``FUNCTION LIST``) is recorded as refused, never raised: a doctor run
as the ``observer`` user must still say what it could see. ``HELLO`` (which every
authenticated user may send) gives the version and role when ``INFO`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from . import scripts
from .connection import describe_redis, is_cluster
from .store_guard import guard_public

__all__ = ["SETTINGS", "ServerFacts", "ServerOps"]

# what doctor asks CONFIG GET for (one name a call: Redis 6.2 takes one pattern only)
SETTINGS = ("maxmemory-policy", "maxmemory", "save", "appendonly", "min-replicas-to-write",
            "min-replicas-max-lag")


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """One server (a cluster: one primary) as doctor sees it; holds no key's value.

    ``info`` is ``INFO``'s default sections merged, empty when ``info_refused`` says why;
    ``settings`` the :data:`SETTINGS` ``CONFIG GET`` gave (empty when ``config_refused``).
    ``hello`` is ``HELLO``'s map (``version``, ``role``, ``mode``). ``functions`` whether
    the readers' function library is loaded (None: not known).
    """

    where: str
    hello: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    info_refused: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    config_refused: str | None = None
    functions: bool | None = None

    @property
    def version(self) -> str | None:
        value = self.info.get("redis_version") or self.hello.get("version")
        return None if value is None else str(value)

    @property
    def role(self) -> str | None:
        value = self.info.get("role") or self.hello.get("role")
        return None if value is None else str(value)


def _refusal(exc: redis.ResponseError) -> str | None:
    """Why a command was refused (ACL, renamed or disabled), or None for another error."""
    text = str(exc)
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return "refused by the ACL (NOPERM)"
    if "unknown command" in text.lower() or "unknown subcommand" in text.lower():
        return "not available on this server (disabled or renamed)"
    return None


def _hello(client: Any) -> dict[str, Any]:
    try:
        reply = client.execute_command("HELLO")
    except redis.ResponseError as exc:
        if _refusal(exc) is None:
            raise
        return {}  # before Redis 6: INFO has to say it
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def _facts(client: Any, where: str) -> ServerFacts:
    hello = _hello(client)
    info: dict[str, Any] = {}
    info_refused = config_refused = None
    try:
        info = dict(client.info())
    except redis.ResponseError as exc:
        if (info_refused := _refusal(exc)) is None:
            raise
    settings: dict[str, str] = {}
    for name in SETTINGS:
        try:
            settings.update({str(k): str(v) for k, v in client.config_get(name).items()})
        except redis.ResponseError as exc:
            if (config_refused := _refusal(exc)) is None:
                raise
            settings = {}
            break
    functions: bool | None = None
    try:
        libraries = client.function_list(library=scripts.FUNCTION_LIBRARY_NAME)
        functions = bool(libraries)
    except redis.ResponseError as exc:
        if _refusal(exc) is None:
            raise
    return ServerFacts(where, hello, info, info_refused, settings, config_refused, functions)


@guard_public
class ServerOps:
    """Server inspection (see :class:`~token_worker.store.TokenStore`)."""

    redis: redis.Redis

    def server_facts(self) -> list[ServerFacts]:
        """Each server the store writes to: the one server, Sentinel's current primary,
        or every primary of a cluster (replicas are seen through their primary's INFO)."""
        client: Any = self.redis
        if is_cluster(client):
            return [_facts(client.get_redis_connection(node), f"{node.host}:{node.port}")
                    for node in sorted(client.get_primaries(), key=lambda n: n.name)]
        where = describe_redis(client)
        pool = client.connection_pool
        if hasattr(pool, "get_master_address"):  # Sentinel: say which primary answered
            host, port = pool.get_master_address()
            where = f"{where} (primary {host}:{port})"
        return [_facts(client, where)]
