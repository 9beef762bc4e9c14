"""Every Redis key and channel name token_worker uses, built in one place.

The first three are the public contract; the rest are token_worker's own
bookkeeping under the same prefix, so an ACL on ``{prefix}:*`` covers them.

On a Redis Cluster the prefix is wrapped in braces (``{stitch}:token:payments``): the
braces make it the hash tag, so every key of one prefix lives in one slot and every
script's keys are on one node.
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    """Key builder for one prefix (default ``stitch``); ``hash_tag`` on a cluster."""

    __slots__ = ("base", "hash_tag", "prefix")

    def __init__(self, prefix: str = "stitch", *, hash_tag: bool = False) -> None:
        self.prefix = prefix
        self.hash_tag = hash_tag
        self.base = f"{{{prefix}}}" if hash_tag else prefix

    def token(self, profile: str) -> str:
        """The published token (contract): JSON, expiring with the token."""
        return f"{self.base}:token:{profile}"

    def status(self, profile: str) -> str:
        """The last refresh outcome (contract): a hash."""
        return f"{self.base}:status:{profile}"

    def lock(self, profile: str) -> str:
        """The fleet-wide refresh lock (contract)."""
        return f"{self.base}:lock:{profile}"

    def schedule(self) -> str:
        """Sorted set: profile -> when it is next due (fleet clock); one read per tick."""
        return f"{self.base}:schedule"

    def claims(self) -> str:
        """Sorted set: profile -> until when beat's claim on its next refresh holds (fleet
        clock): a claimed profile is not sent again until its task ends or the claim lapses."""
        return f"{self.base}:claims"

    def profiles(self) -> str:
        """Hash: profile -> JSON of its public settings, so bare readers know it exists."""
        return f"{self.base}:profiles"

    def rejected(self, profile: str) -> str:
        """The fingerprint of the profile's token last reported rejected (401): dedups the
        refresh it causes; the only key a reader writes."""
        return f"{self.base}:rejected:{profile}"

    def events(self) -> str:
        """Pub/sub channel: ``profile fingerprint`` on every publish or purge."""
        return f"{self.base}:events"
