"""Every Redis key and channel name token_worker uses, built in one place.

The first three are the public contract; the rest are token_worker's own
bookkeeping under the same prefix, so an ACL on ``{prefix}:*`` covers them.
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    """Key builder for one prefix (default ``stitch``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "stitch") -> None:
        self.prefix = prefix

    def token(self, profile: str) -> str:
        """The published token (contract): JSON, expiring with the token."""
        return f"{self.prefix}:token:{profile}"

    def status(self, profile: str) -> str:
        """The last refresh outcome (contract): a hash."""
        return f"{self.prefix}:status:{profile}"

    def lock(self, profile: str) -> str:
        """The fleet-wide refresh lock (contract)."""
        return f"{self.prefix}:lock:{profile}"

    def schedule(self) -> str:
        """Sorted set: profile -> when it is next due (fleet clock); one read per tick."""
        return f"{self.prefix}:schedule"

    def profiles(self) -> str:
        """Hash: profile -> JSON of its public settings, so bare readers know it exists."""
        return f"{self.prefix}:profiles"

    def rejected(self, profile: str) -> str:
        """The fingerprint of the profile's token last reported rejected (401): dedups the
        refresh it causes; the only key a reader writes."""
        return f"{self.prefix}:rejected:{profile}"

    def events(self) -> str:
        """Pub/sub channel: ``profile fingerprint`` on every publish or purge."""
        return f"{self.prefix}:events"
