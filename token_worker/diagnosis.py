"""Why a reader has no token for a profile: the message ``TokenUnavailable`` carries.

Split from :mod:`token_worker.reader`; imports only redis and the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Set

import redis

from .exceptions import TokenUnavailable
from .store import TokenStore

__all__ = ["diagnose", "last_error"]


def last_error(store: TokenStore, profile: str) -> str | None:
    """The last refresh error on record (never a secret: refresh writes it), or None."""
    try:
        return store.status(profile).get("last_error") or None
    except (redis.RedisError, OSError):
        return None


def diagnose(store: TokenStore, profile: str, profiles: Set[str] | None) -> TokenUnavailable:
    """Why there is no token: unknown profile, never fetched, or expired.

    Args:
        profiles: the configured profile names, when the reader knows them.
    """
    if profiles is not None and profile not in profiles:
        known = ", ".join(sorted(profiles))
        return TokenUnavailable(profile, "unknown_profile",
                                f"unknown profile (configured: {known})")
    keys = store.keys
    try:
        pipe = store.redis.pipeline(transaction=False)
        pipe.hgetall(keys.status(profile))
        pipe.exists(keys.profiles())
        pipe.hexists(keys.profiles(), profile)
        pipe.time()  # ages on the fleet clock, as everything else here
        status, registry, listed, (sec, usec) = pipe.execute()
        now = sec + usec / 1_000_000
    except (redis.RedisError, OSError):
        status, registry, listed, now = {}, 0, False, time.time()
    error = status.get("last_error") or None
    if profiles is None and registry and not listed:
        return TokenUnavailable(profile, "unknown_profile",
                                "unknown profile (no worker has it configured)")
    if status.get("last_success_at"):
        age = now - float(status["last_success_at"])
        return TokenUnavailable(profile, "expired",
                                f"expired (last successful refresh {age:.0f}s ago)", error)
    return TokenUnavailable(profile, "never_fetched",
                            "never fetched (is a token_worker worker running with beat?)",
                            error)
