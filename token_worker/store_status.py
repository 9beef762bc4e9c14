"""The store's status records and refresh locks: the half of TokenStore that bookkeeps.

:class:`StatusOps` is a base of :class:`token_worker.store.TokenStore` (split only to
keep each module readable in one sitting); nothing uses it on its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import redis

from .keys import Keys
from .records import StatusRecord
from .store_guard import guard_public

__all__ = ["ProfileFacts", "StatusOps", "lock_seconds"]


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    """A profile as Redis has it, read in bulk (``status``, ``check``, metrics, waits)."""

    profile: str
    token_ttl: float | None  # seconds the token key has left; None when it is gone
    record: StatusRecord
    next_due: float | None  # the schedule's time (fleet clock), or None
    lock_ttl: float  # seconds the refresh lock has left; 0 unlocked, inf no expiry
    rejected: bool  # the current token (per the record) was reported rejected


def lock_seconds(pttl: int) -> float:
    if pttl == -1:
        return float("inf")  # no expiry: held (the next acquire attempt gives it one)
    return pttl / 1000.0 if pttl > 0 else 0.0



@guard_public
class StatusOps:
    """Status record and lock operations (see :class:`~token_worker.store.TokenStore`)."""

    redis: redis.Redis
    keys: Keys
    _fail: Any
    _acquire: Any
    _extend: Any
    _release: Any

    # -- status --------------------------------------------------------------
    def status(self, profile: str) -> StatusRecord:
        """The profile's status record (empty when it has none)."""
        return StatusRecord.from_hash(self.redis.hgetall(self.keys.status(profile)))  # type: ignore[arg-type]

    def facts(self, profiles: list[str], *, locks: bool = False
              ) -> tuple[float, list[ProfileFacts]]:
        """(fleet now, each profile's facts), in two round trips whatever the count.

        The second checks the rejected markers against the fingerprints the first one
        read. Needs only what the ``reader`` ACL user may do; ``locks`` (the lock TTLs,
        else 0) needs the ``observer``'s.
        """
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for name in profiles:
            pipe.pttl(k.token(name))
            pipe.hgetall(k.status(name))
            pipe.zscore(k.schedule(), name)
            if locks:
                pipe.pttl(k.lock(name))
        replies, now = self._execute_timed(pipe)
        rows = []
        n = 4 if locks else 3
        for i, name in enumerate(profiles):
            pttl, raw, score, lock = (replies[n * i: n * (i + 1)] + [0])[:4]
            rows.append((name, pttl / 1000.0 if pttl and pttl > 0 else None,
                         StatusRecord.from_hash(raw), score, lock))
        checked = [(name, rec.fingerprint) for name, ttl, rec, _, _ in rows
                   if ttl and rec.fingerprint]
        rejected: set[str] = set()
        if checked:
            pipe = self.redis.pipeline(transaction=False)
            for name, _ in checked:
                pipe.get(k.rejected(name))
            rejected = {name for (name, fp), marked in zip(checked, pipe.execute(), strict=True)
                        if marked == fp}
        return now, [
            ProfileFacts(name, ttl, rec, None if score is None else float(score),
                         lock_seconds(lock), name in rejected)
            for name, ttl, rec, score, lock in rows]

    def why_missing(self, profile: str) -> tuple[StatusRecord, bool | None, float]:
        """(status record, whether the fleet's registry lists the profile (None when there
        is no registry), fleet now): what a reader with no token explains itself with."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.status(profile))
        pipe.exists(k.profiles())
        pipe.hexists(k.profiles(), profile)
        (raw, registry, listed), now = self._execute_timed(pipe)
        return StatusRecord.from_hash(raw), bool(listed) if registry else None, now

    def _execute_timed(self, pipe: Any) -> tuple[list[Any], float]:
        """(the pipeline's replies, fleet now from the same round trip). A cluster pipeline
        cannot carry the keyless TIME: there it is a second round trip to any node."""
        if self.keys.hash_tag:
            replies = pipe.execute()
            sec, usec = self.redis.time()
        else:
            pipe.time()
            *replies, (sec, usec) = pipe.execute()
        return list(replies), sec + usec / 1_000_000

    def record_attempt(self, profile: str, now: float) -> None:
        fields: dict[Any, Any] = StatusRecord(last_attempt_at=now).to_hash()
        self.redis.hset(self.keys.status(profile), mapping=fields)

    def record_failure(
        self, profile: str, now: float, message: str, code: str, next_attempt_at: float,
        owner: str = "", started_at: float | None = None,
    ) -> tuple[int, str] | None:
        """Record a failed attempt and when to try next, unless fenced out.

        ``started_at`` (fleet clock, default ``now``): a token issued after it fences the
        record out too, so a holder paused past its lock cannot undo another's success.

        Returns:
            (consecutive failures now, the previous error code or ""), or None when the
            lock is another holder's now (their outcome stands, not ours).
        """
        k = self.keys
        fields = StatusRecord(last_attempt_at=now, last_outcome="failed", last_error=message,
                              last_error_code=code, next_attempt_at=next_attempt_at
                              ).to_hash(clear=("last_reason",))  # the script counts failures
        n, previous = self._fail(
            keys=[k.status(profile), k.schedule(), k.lock(profile)],
            args=[owner, profile, repr(next_attempt_at),
                  repr(now if started_at is None else started_at),
                  *[x for pair in fields.items() for x in pair]],
        )
        if int(n) < 0:
            return None
        return int(n), previous or ""

    def record_outcome(self, profile: str, outcome: str, reason: str = "", *,
                       pipeline: Any = None) -> None:
        """Record the last outcome and its reason (``""`` clears an older one)."""
        (pipeline or self.redis).hset(self.keys.status(profile),
                                      mapping={"last_outcome": outcome, "last_reason": reason})

    # -- lock ----------------------------------------------------------------
    def acquire_lock(self, profile: str, ttl_seconds: float) -> str | None:
        """Take the fleet-wide refresh lock; the owner token, or None when held."""
        owner = secrets.token_hex(16)
        if self._acquire(keys=[self.keys.lock(profile)],
                         args=[owner, max(1, int(ttl_seconds * 1000))]):
            return owner
        return None

    def extend_lock(self, profile: str, owner: str, ttl_seconds: float) -> bool:
        """Push the lock's expiry out while our call runs; False once it is not ours."""
        return bool(self._extend(keys=[self.keys.lock(profile)],
                                 args=[owner, max(1, int(ttl_seconds * 1000))]))

    def release_lock(self, profile: str, owner: str) -> bool:
        """Release only if still ours (it may have expired and been taken since)."""
        return bool(self._release(keys=[self.keys.lock(profile)], args=[owner]))

    def lock_ttl(self, profile: str) -> float:
        """Seconds the current lock holder has left, or 0 when unlocked."""
        return lock_seconds(self.redis.pttl(self.keys.lock(profile)))
