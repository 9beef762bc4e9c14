"""Why a reader has no token for a profile: the message ``TokenUnavailable`` carries.

Split from :mod:`token_worker.reader`; imports only the store and the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Set

from .exceptions import StoreError, TokenUnavailable
from .records import StatusRecord
from .store import TokenStore

__all__ = ["diagnose", "last_error"]


def last_error(store: TokenStore, profile: str) -> str | None:
    """The last refresh error on record (never a secret: refresh writes it), or None."""
    try:
        return store.status(profile).last_error
    except StoreError:
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
    try:
        # ages on the fleet clock, as everything else here
        record, listed, now = store.why_missing(profile)
    except StoreError:
        record, listed, now = StatusRecord(), None, time.time()
    error = record.last_error
    if profiles is None and listed is False:
        return TokenUnavailable(profile, "unknown_profile",
                                "unknown profile (no worker has it configured)")
    if record.last_success_at is not None:
        age = now - record.last_success_at
        return TokenUnavailable(profile, "expired",
                                f"expired (last successful refresh {age:.0f}s ago)", error)
    return TokenUnavailable(profile, "never_fetched",
                            "never fetched (is a token_worker worker running with beat?)",
                            error)
