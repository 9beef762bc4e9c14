"""The read path both stores share (:mod:`token_worker.store` and
:mod:`token_worker.store_async`): the read function's reply, its fallback, decoding."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from .codec import TokenCodec
from .exceptions import StoreError
from .tokens import Token

__all__ = ["FUNCTION_RETRY_SECONDS", "decode_token", "function_unavailable", "split_read"]

# how long a reader falls back to plain commands before trying the read function again
# (the refresher side loads it; a Redis that restarted empty has lost it until then)
FUNCTION_RETRY_SECONDS = 30.0


def split_read(reply: Any) -> tuple[str | None, float, float]:
    """(value or None, seconds left per PTTL, fleet now) from the read function."""
    if reply is None:
        return None, 0.0, 0.0
    pttl = int(reply[:13])
    now = int(reply[13:23]) + int(reply[23:29]) / 1_000_000
    return reply[29:], (pttl / 1000.0 if pttl > 0 else 0.0), now



def function_unavailable(exc: redis.ResponseError) -> float | None:
    """Until when (monotonic) to read with plain commands after the read function
    failed so, or None when the error is another one (the caller raises it)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return float("inf")  # an ACL without +fcall_ro
    text = str(exc).lower()
    if "unknown command" in text:
        return float("inf")  # Redis < 7
    if "function not found" in text:
        # restarted empty, or no refresher has run yet: it loads the function
        return time.monotonic() + FUNCTION_RETRY_SECONDS
    return None


def decode_token(codec: TokenCodec, profile: str, value: str, ttl: float) -> Token:
    """Decode a stored value; raises StoreError when it cannot be read."""
    try:
        data = json.loads(codec.decode(profile, value))
        return Token.from_dict(data, ttl=ttl)
    except StoreError:
        raise
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise StoreError(f"token for profile {profile!r} is unreadable "
                         f"({type(exc).__name__})") from None
