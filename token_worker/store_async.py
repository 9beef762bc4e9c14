"""The reader's half of the store on ``redis.asyncio``: the async readers' door to Redis.

What :class:`~token_worker.aio.AsyncTokenReader` needs and nothing more: read a token
(the read function, else plain commands), its status, why it is missing, report it
rejected, and subscribe to the events channel. Keys come from :mod:`token_worker.keys`,
the client from :func:`token_worker.connection.async_client_for`, the read path's
parsing from :mod:`token_worker.store_read`, events from :mod:`token_worker.events`.
Every Redis error surfaces as :class:`~token_worker.exceptions.StoreError`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis

from . import scripts
from .codec import PlainCodec, TokenCodec
from .connection import RedisSettingsLike, async_client_for
from .events import Event
from .keys import Keys
from .records import StatusRecord
from .store_guard import REDIS_ERRORS, error_at
from .store_read import decode_token, function_unavailable, split_read
from .tokens import Token

__all__ = ["AsyncSubscription", "AsyncTokenStore"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
def _guarded(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    @functools.wraps(method)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except REDIS_ERRORS as exc:
            store: Any = args[0]
            raise error_at(store.where, exc) from exc
    return call


def _is_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


class AsyncTokenStore:
    """Token reads, status reads, 401 reports and events for one prefix, awaited."""

    def __init__(self, client: Any, prefix: str = "stitch", codec: TokenCodec | None = None,
                 where: str = "?") -> None:
        self.redis = client
        self.keys = Keys(prefix, hash_tag=_is_cluster(client))
        self.codec: TokenCodec = codec or PlainCodec()
        self.where = where
        self._fcall_after = 0.0

    @classmethod
    def open(cls, settings: RedisSettingsLike, codec: TokenCodec | None = None
             ) -> AsyncTokenStore:
        from .topology import parse_topology

        topology = parse_topology(settings.url)
        where = topology.where if topology is not None else _where(settings.url)
        return cls(async_client_for(settings), settings.prefix, codec, where)

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    def __repr__(self) -> str:
        return f"AsyncTokenStore(redis={self.where!r}, prefix={self.prefix!r})"

    async def close(self) -> None:
        """Close the connections; never raises."""
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    @_guarded
    async def read_raw(self, profile: str) -> tuple[str | None, float, float]:
        """As :meth:`TokenStore.read_raw`: value, seconds left per Redis, fleet now."""
        key = self.keys.token(profile)
        if self._fcall_after <= time.monotonic():
            try:
                if self.keys.hash_tag:  # name the slot's node: no COMMAND GETKEYS first
                    await self.redis.initialize()  # the slot map (a no-op once learned)
                    reply = await self.redis.execute_command(
                        "FCALL_RO", scripts.READ_FUNCTION, 1, key,
                        target_nodes=self.redis.get_node_from_key(key))
                else:
                    reply = await self.redis.execute_command(
                        "FCALL_RO", scripts.READ_FUNCTION, 1, key)
            except redis.ResponseError as exc:
                after = function_unavailable(exc)
                if after is None:
                    raise
                self._fcall_after = after
            else:
                return split_read(reply)
        pipe = self.redis.pipeline(transaction=not self.keys.hash_tag)
        pipe.get(key)
        pipe.pttl(key)
        (value, pttl), now = await self._execute_timed(pipe)
        return value, (pttl / 1000.0 if pttl > 0 else 0.0), now

    def decode(self, profile: str, value: str, ttl: float) -> Token:
        return decode_token(self.codec, profile, value, ttl)

    @_guarded
    async def status(self, profile: str) -> StatusRecord:
        return StatusRecord.from_hash(await self.redis.hgetall(self.keys.status(profile)))

    @_guarded
    async def why_missing(self, profile: str) -> tuple[StatusRecord, bool | None, float]:
        """As :meth:`TokenStore.why_missing`."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.status(profile))
        pipe.exists(k.profiles())
        pipe.hexists(k.profiles(), profile)
        (raw, registry, listed), now = await self._execute_timed(pipe)
        return StatusRecord.from_hash(raw), bool(listed) if registry else None, now

    async def _execute_timed(self, pipe: Any) -> tuple[list[Any], float]:
        if self.keys.hash_tag:  # a cluster pipeline cannot carry the keyless TIME
            replies = await pipe.execute()
            sec, usec = await self.redis.time()
        else:
            pipe.time()
            *replies, (sec, usec) = await pipe.execute()
        return list(replies), sec + usec / 1_000_000

    @_guarded
    async def report_rejected(self, profile: str, token_fingerprint: str,
                              ttl: int = 300) -> bool:
        """As :meth:`TokenStore.report_rejected`: the marker, then the event, once."""
        previous = await self.redis.set(self.keys.rejected(profile), token_fingerprint,
                                        ex=ttl, get=True)
        if previous == token_fingerprint:
            return False
        await self.redis.publish(self.keys.events(),
                                 Event.rejected(profile, token_fingerprint).encode())
        return True

    @_guarded
    async def subscribe(self) -> AsyncSubscription:
        """A subscription (its own connection) to the events channel."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
        try:
            await pubsub.subscribe(self.keys.events())
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        return AsyncSubscription(pubsub, self.where)


class AsyncSubscription:
    """A pub/sub connection on the events channel; its errors are StoreErrors too."""

    def __init__(self, pubsub: Any, where: str) -> None:
        self._pubsub = pubsub
        self._where = where

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        try:
            message: dict[str, Any] | None = await self._pubsub.get_message(timeout=timeout)
        except REDIS_ERRORS as exc:
            raise error_at(self._where, exc) from exc
        return message

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()


def _where(url: str) -> str:
    """``host:port`` or the socket path of a one-server URL, for messages."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return "?"
    return "".join(c if c.isprintable() else "?" for c in where)[:255]

