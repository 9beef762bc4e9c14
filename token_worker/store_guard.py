"""Redis errors out of the store as StoreErrors: the store's methods and its subscriptions.

Split from :mod:`token_worker.store`; imports redis, the exceptions and the connection
helpers only.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis
from redis.exceptions import ClusterDownError, MasterDownError, RedisClusterException

from .connection import describe_redis
from .exceptions import StoreError, StoreUnavailable

__all__ = ["REDIS_ERRORS", "Subscription", "error_at", "guard_public", "store_error"]

_T = TypeVar("_T")
_P = ParamSpec("_P")


# what a Redis call can raise: redis-py's cluster errors are no RedisError
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)


def store_error(client: redis.Redis, exc: BaseException) -> StoreError:
    """The StoreError for a redis-py error: the server and what went wrong, no values."""
    return error_at(describe_redis(client), exc)


def error_at(where: str, exc: BaseException) -> StoreError:
    """:func:`store_error` for a server already described (the async store's)."""
    text = "".join(c if c.isprintable() else "?" for c in str(exc))[:200]
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError
                  | ClusterDownError | MasterDownError):
        return StoreUnavailable(f"Redis unreachable at {where}: {type(exc).__name__}: {text}")
    return StoreError(f"Redis at {where} refused: {type(exc).__name__}: {text}")


def _guarded(method: Callable[_P, _T]) -> Callable[_P, _T]:
    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except REDIS_ERRORS as exc:
            store: Any = args[0]
            raise store_error(store.redis, exc) from exc
    return call


def guard_public(cls: type[_T]) -> type[_T]:
    """Wrap every public method: a redis-py error leaves the store as a StoreError."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _guarded(member))
    return cls


class Subscription:
    """A pub/sub connection on the events channel; its errors are StoreErrors too."""

    __slots__ = ("_client", "_pubsub")

    def __init__(self, pubsub: Any, client: redis.Redis) -> None:
        self._pubsub = pubsub
        self._client = client

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message (``type``, ``data``...), or None after ``timeout`` seconds."""
        try:
            message: dict[str, Any] | None = self._pubsub.get_message(timeout=timeout)
        except REDIS_ERRORS as exc:
            raise store_error(self._client, exc) from exc
        return message

    def close(self) -> None:
        """Close the connection; never raises."""
        with contextlib.suppress(Exception):
            self._pubsub.close()
