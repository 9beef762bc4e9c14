"""What a token is, and the one place that decides whether it is due.

Light on purpose: the reader imports this module, so it pulls in nothing but
the standard library.

Time here is the *fleet clock*: Redis's ``TIME``, read through
:meth:`token_worker.store.TokenStore.time`. Every host compares against the same
clock, so a worker or reader whose wall clock is off cannot publish a token
late or serve one past its expiry.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .clock import SYSTEM, Clock

__all__ = [
    "JITTER_CAP_SECONDS",
    "JITTER_FRACTION",
    "PHASE_FLOOR",
    "Token",
    "TokenState",
    "bounded_ttl",
    "fingerprint",
    "schedule_refresh",
    "token_state",
]

# refresh_at is pulled earlier by up to this share of the lead time (capped), so
# profiles issued in the same second drift apart. Small on purpose: a rotation keeps the
# phase its slot gave it (see ``slot``), and a large random pull on every rotation would
# randomise the fleet's phases again (bunching calls into busy seconds). At real
# lifetimes the cap decides: 30 s of a 50 min lead is 1%.
JITTER_FRACTION = 0.02
JITTER_CAP_SECONDS = 30.0
# a token placed in its slot is kept at least this share of its lead time: a slot never
# turns one fetch into two back to back
PHASE_FLOOR = 0.1


class TokenState(StrEnum):
    """The states `status --json` reports (contract)."""

    VALID = "valid"
    REFRESH_DUE = "refresh_due"
    EXPIRED = "expired"
    MISSING = "missing"


def fingerprint(access_token: str) -> str:
    """A short, stable, non-reversible name for a token: safe to log and show."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:12]


def bounded_ttl(pttl: float, expires_at: float, fleet_now: float) -> float:
    """Seconds a stored token may still be served: the key's PTTL, but never past the
    ``expires_at`` written inside the (authenticated, when encrypted) value.

    A value replayed under a longer PX (an old ciphertext ``SET`` again by someone with
    write access) therefore dies at its own expiry, whatever Redis's key TTL says. Both
    figures are on the fleet clock, so this host's wall clock plays no part.
    """
    left = min(pttl, expires_at - fleet_now)
    return left if left > 0 else 0.0


def schedule_refresh(
    issued_at: float, expires_at: float, margin: float, *, rng: random.Random | None = None,
    slot: float | None = None,
) -> float:
    """When a token should be refreshed.

    Due once ``margin`` seconds of life are left; when the margin is not less than
    the whole lifetime, at half the lifetime instead. A random jitter moves the
    moment earlier (never later), by at most ``JITTER_FRACTION`` of the lead time and
    ``JITTER_CAP_SECONDS``.

    ``slot`` (in [0, 1)) places the refresh at that share of the lead time past its first
    ``PHASE_FLOOR`` instead: a token fetched off its rotation (the first of a cold fleet,
    one after an outage or a forced refresh) takes its profile's slot, so profiles
    fetched together come due spread over the lead, and every later rotation keeps the
    phase that gave it.
    """
    lifetime = expires_at - issued_at
    base = expires_at - margin if margin < lifetime else issued_at + lifetime / 2
    lead = base - issued_at
    if slot is not None and 0.0 <= slot < 1.0 and lead > 0:
        return issued_at + lead * (PHASE_FLOOR + (1.0 - PHASE_FLOOR) * slot)
    spread = min(lead * JITTER_FRACTION, JITTER_CAP_SECONDS)
    return base - (rng or random).uniform(0.0, max(spread, 0.0))


def token_state(
    expires_at: float | None, refresh_at: float | None, now: float, *, rejected: bool = False
) -> TokenState:
    """The single decision of whether a token is fresh, due or expired.

    Args:
        expires_at: the token's expiry on the fleet clock, or None when there is none.
        refresh_at: when it becomes due (see :func:`schedule_refresh`).
        now: the fleet clock now.
        rejected: the API refused this token (a 401 was reported): due at once.
    """
    if expires_at is None:
        return TokenState.MISSING
    if now >= expires_at:
        return TokenState.EXPIRED
    if rejected or (refresh_at is not None and now >= refresh_at):
        return TokenState.REFRESH_DUE
    return TokenState.VALID


@dataclass(frozen=True, slots=True)
class Token:
    """A client token as published in Redis.

    ``expires_in`` is the seconds left as measured from Redis's clock when the
    token was read, counted down on this host's monotonic clock (which wall-clock
    changes do not move).
    """

    access_token: str = field(repr=False)
    token_type: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    refresh_at: float
    # monotonic deadline on this host; not part of the published value
    deadline: float = field(default=0.0, repr=False, compare=False)
    # the clock the deadline is on (a reader's injected one; the real one by default,
    # bound here so that a patched time.monotonic cannot move it)
    monotonic: Callable[[], float] = field(default=SYSTEM.monotonic, repr=False,
                                           compare=False)

    @property
    def expires_in(self) -> float:
        """Seconds of life left (float, never negative)."""
        return max(0.0, self.deadline - self.monotonic())

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.access_token)

    @property
    def scope(self) -> str:
        """Granted scopes, space-separated, as the endpoint sent them."""
        return " ".join(self.scopes)

    def __repr__(self) -> str:
        return (
            f"Token(fingerprint={self.fingerprint!r}, token_type={self.token_type!r}, "
            f"scopes={self.scopes!r}, expires_at={self.expires_at!r})"
        )

    def with_deadline(self, deadline: float,
                      monotonic: Callable[[], float] | None = None) -> Token:
        """The same token with another monotonic deadline, on ``monotonic`` (default: the
        same clock) (positional, as in :meth:`from_dict`: this runs on uncached reads)."""
        return Token(self.access_token, self.token_type, self.scopes, self.issued_at,
                     self.expires_at, self.refresh_at, deadline, monotonic or self.monotonic)

    def to_dict(self) -> dict[str, Any]:
        """The published JSON object (contract fields plus ``refresh_at``)."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "scope": self.scope,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "refresh_at": self.refresh_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, ttl: float | None = None,
                  clock: Clock = SYSTEM) -> Token:
        """Build from the published object; ``ttl`` is the seconds left per Redis (else
        ``expires_at`` on ``clock``'s wall time); the deadline is on ``clock``."""
        expires_at = float(data["expires_at"])
        left = ttl if ttl is not None else expires_at - clock.wall()
        # positional: every uncached read builds one, and keywords cost a third more
        return cls(
            str(data["access_token"]),  # access_token
            str(data["token_type"]),  # token_type
            tuple(str(data.get("scope", "")).split()),  # scopes
            float(data["issued_at"]),  # issued_at
            expires_at,
            float(data.get("refresh_at", expires_at)),  # refresh_at
            clock.monotonic() + left,  # deadline
            clock.monotonic,
        )
