"""Keep a worker alive when its Redis broker goes away while it holds messages.

Celery 5.7 with kombu 5.7 (Redis and Sentinel transports): on a lost broker connection
the consumer first ``collect()``s the connection, which detaches the transport from its
``Connection``, then closes it. The close asks the channel to put its unacknowledged
messages back, the channel builds a new Redis pool from the detached transport's
connection info, which is now ``None``, and the ``AttributeError`` that follows is not a
connection error: Celery calls it unrecoverable and the worker exits. Any reserved
message triggers it, and the refreshes beat sends to run at their due time are
reserved (held until their countdown) nearly all the time, so a Redis restart or a
Sentinel failover stopped every worker (``tests/integration/test_broker_loss.py``).

:func:`install` turns that case into what it is, a connection error: the close goes on,
the worker reconnects, and the unacknowledged messages stay in Redis, where kombu's
visibility timeout restores them (a refresh message has expired by then, or re-checks
under its lock and does nothing; beat re-sends a refresh whose claim lapsed). Nothing
else changes: with a transport still attached the original code runs.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["install"]

_MARK = "_token_worker_detached_guard"


def install() -> bool:
    """Guard kombu's Redis channel against a detached transport; idempotent.

    Returns:
        True when the guard is in place (now or before), False when this kombu has no
        such code to guard (another version: nothing to do).
    """
    try:
        from kombu.transport import redis as kombu_redis
    except ImportError:  # pragma: no cover - kombu always ships it; redis-py may not
        return False
    channel = getattr(kombu_redis, "Channel", None)
    original = getattr(channel, "_connparams", None)
    if channel is None or original is None:
        return False
    if getattr(original, _MARK, False):
        return True
    from redis.exceptions import ConnectionError as RedisConnectionError

    @functools.wraps(original)
    def _connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        transport = getattr(self, "connection", None)
        if transport is not None and getattr(transport, "client", None) is None:
            raise RedisConnectionError("broker connection already closed "
                                       "(unacknowledged messages stay in Redis)")
        return original(self, *args, **kwargs)

    setattr(_connparams, _MARK, True)
    channel._connparams = _connparams
    return True
