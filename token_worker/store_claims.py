"""Beat's claims on due refreshes: the half of the schedule that dispatch owns.

:class:`ClaimOps` is a base of :class:`token_worker.store.TokenStore` (split only to keep
each module readable in one sitting). Beat claims each profile due within the next tick
and sends its refresh to run at the due time; the claim keeps every later tick (and any
second beat) from sending it again until the refresh ends and releases it, or the claim
lapses because its message died with a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from . import scripts
from .keys import Keys
from .store_guard import guard_public

__all__ = ["Claim", "ClaimOps"]


@dataclass(frozen=True, slots=True)
class Claim:
    """One due refresh claimed for sending."""

    profile: str
    runs_at: float  # when it is due (fleet clock), never before the claim was made
    lapsed: bool  # an earlier claim was never released: its message was lost


@guard_public
class ClaimOps:
    """Claim operations (see :class:`~token_worker.store.TokenStore`)."""

    redis: redis.Redis
    keys: Keys
    _claim_script: Any = None

    def claim_due(self, profiles: Iterable[str], *, horizon: float, hold: float,
                  cooldown: float) -> tuple[float, list[Claim]]:
        """(fleet now, the claims made), in one round trip.

        Claims every profile of ``profiles`` due within ``horizon`` seconds that no live
        claim holds, until ``hold`` seconds after it is due. Due has the meaning of
        :meth:`~token_worker.store.TokenStore.due`; ``cooldown`` is its 401 cooldown.
        """
        names = sorted(set(profiles))
        k = self.keys
        if self._claim_script is None:
            self._claim_script = self.redis.register_script(scripts.CLAIM)
        keys = [k.schedule(), *[k.token(p) for p in names], *[k.status(p) for p in names],
                *[k.rejected(p) for p in names], k.claims()]
        now_s, flat = self._claim_script(keys=keys, args=[cooldown, horizon, hold, *names])
        claims = [Claim(_text(flat[i]), float(flat[i + 1]), bool(int(flat[i + 2])))
                  for i in range(0, len(flat), 3)]
        return float(now_s), claims

    def hold_claim(self, profile: str, until: float) -> None:
        """The claimed refresh is running: its claim (if there still is one) now lapses at
        ``until`` (fleet clock), with the refresh lock, so a worker killed mid-refresh
        delays the next one by the lock's TTL, not by the whole message's life."""
        self.redis.zadd(self.keys.claims(), {profile: until}, xx=True)

    def release_claim(self, profile: str, *, pipeline: Any = None) -> None:
        """The claimed refresh ran: the next due time may be claimed again."""
        (pipeline or self.redis).zrem(self.keys.claims(), profile)

    def claims(self) -> dict[str, float]:
        """Every live or lapsed claim: profile -> until when (fleet clock)."""
        pairs: list[tuple[Any, float]] = self.redis.zrange(  # type: ignore[assignment]
            self.keys.claims(), 0, -1, withscores=True)
        return {_text(name): float(until) for name, until in pairs}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
