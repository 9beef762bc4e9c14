"""What travels on the events channel (``{prefix}:events``), encoded and parsed here only.

One line per event, ``"<profile> <payload>"``:

- ``"<profile> <fingerprint>"``: a token was published (sent by the ``PUBLISH`` Lua
  script in :mod:`token_worker.scripts`, which builds the same string inside Redis:
  ``ARGV[4] .. ' ' .. ARGV[6]``; ``tests/test_events.py`` holds the two together);
- ``"<profile> purged"``: its token was deleted (``store.purge``, ``store.forget``);
- ``"<profile> rejected:<fingerprint>"``: a reader reported the token refused by the
  API (``store.report_rejected``).

The format is the fleet's wire format: workers and readers of different versions share
the channel, so it never changes. Anyone may publish on the channel (it is not
authenticated), so :meth:`Event.parse` takes any payload and never raises. Standard
library only: the reader imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PURGED", "REJECTED_PREFIX", "Event", "EventKind"]

EventKind = Literal["published", "purged", "rejected"]

PURGED = "purged"
REJECTED_PREFIX = "rejected:"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: what happened to which profile's token.

    ``fingerprint`` names the token published or rejected; None for ``purged``.
    """

    kind: EventKind
    profile: str
    fingerprint: str | None = None

    @classmethod
    def published(cls, profile: str, fingerprint: str) -> Event:
        return cls("published", profile, fingerprint)

    @classmethod
    def purged(cls, profile: str) -> Event:
        return cls("purged", profile)

    @classmethod
    def rejected(cls, profile: str, fingerprint: str) -> Event:
        return cls("rejected", profile, fingerprint)

    def encode(self) -> str:
        """The line published on the channel."""
        if self.kind == "purged":
            return f"{self.profile} {PURGED}"
        if self.kind == "rejected":
            return f"{self.profile} {REJECTED_PREFIX}{self.fingerprint}"
        return f"{self.profile} {self.fingerprint}"

    @classmethod
    def parse(cls, data: object) -> Event | None:
        """The event in a channel message's data (str or bytes), or None for anything else."""
        if isinstance(data, bytes | bytearray):
            try:
                data = bytes(data).decode()
            except UnicodeDecodeError:
                return None
        if not isinstance(data, str):
            return None
        profile, _, payload = data.partition(" ")
        if not profile or not payload or any(c.isspace() for c in payload):
            return None
        if payload == PURGED:
            return cls.purged(profile)
        if payload.startswith(REJECTED_PREFIX):
            fp = payload[len(REJECTED_PREFIX):]
            return cls.rejected(profile, fp) if fp and ":" not in fp else None
        if ":" in payload:  # a kind this version does not know
            return None
        return cls.published(profile, payload)
