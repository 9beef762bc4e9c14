"""What a reader decides, without doing any I/O: shared by the sync and async readers.

:class:`ReaderCore` holds a reader's state (cache, invalidation generations, the token
last read, tokens reported rejected) and turns what Redis answered into a token or a
:class:`~token_worker.exceptions.TokenUnavailable`. :class:`token_worker.reader.TokenReader`
and :class:`token_worker.aio.AsyncTokenReader` do the reads (blocking or awaited) and
call these methods between them, so both readers behave the same by construction.
Imports only the standard library, tokens, records and exceptions.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from .clock import Clock
from .exceptions import StoreError, StoreUnavailable, TokenUnavailable
from .records import StatusRecord
from .tokens import Token, bounded_ttl, fingerprint

__all__ = ["ReaderCore", "explain_missing", "unknown_profile", "unreachable"]

log = logging.getLogger("token_worker.reader")

# two lifetime readings of one stored value this close are the same (round-trip jitter)
_SAME_DEADLINE = 0.05


@dataclass(slots=True)
class _Entry:
    token: Token
    fresh_until: float  # monotonic: cache max age


def unknown_profile(profile: str, profiles: Set[str] | None) -> TokenUnavailable | None:
    """The error for a profile the reader's config does not have, else None."""
    if profiles is not None and profile not in profiles:
        known = ", ".join(sorted(profiles))
        return TokenUnavailable(profile, "unknown_profile",
                                f"unknown profile (configured: {known})")
    return None


def explain_missing(profile: str, profiles: Set[str] | None, record: StatusRecord,
                    listed: bool | None, now: float) -> TokenUnavailable:
    """Why there is no token: unknown profile, never fetched, or expired (ages on the
    fleet clock ``now``; ``listed``: whether the fleet's registry has the profile)."""
    unknown = unknown_profile(profile, profiles)
    if unknown is not None:
        return unknown
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


def unreachable(where: str, exc: StoreError) -> str:
    """What a reader says when Redis would not serve it (no value, no password)."""
    if isinstance(exc, StoreUnavailable):
        return f"Redis unreachable at {where}"
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "error"
    return f"Redis at {where} refused ({cause})"


class ReaderCore:
    """A reader's state and decisions (see the module docstring)."""

    def __init__(self, *, min_ttl: float, min_ttls: Mapping[str, float] | None, cache: bool,
                 cache_max_age: float, serve_stale: bool, profiles: list[str] | None,
                 clock: Clock, decode: Callable[[str, str, float], Token]) -> None:
        self.min_ttl = min_ttl
        self.min_ttls = dict(min_ttls or {})
        self.cache_enabled = cache
        self.cache_max_age = cache_max_age
        self.serve_stale = serve_stale
        self.profiles = set(profiles) if profiles is not None else None
        self.clock = clock
        self._decode = decode
        self.reset()

    def reset(self) -> None:
        """Empty state and fresh locks (also after fork: a held lock stays held)."""
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.cache: dict[str, _Entry] = {}
        self.generation: dict[str, int] = {}
        # profile -> the token last read, for serve_stale and lost publishes
        self.last: dict[str, Token] = {}
        # profile -> (stored value, a token decoded from it): one tuple, so that threads
        # racing to store can never pair one token's value with another's fields
        self.decoded: dict[str, tuple[str, Token]] = {}
        self.rejected: dict[str, str] = {}

    def min_ttl_for(self, profile: str) -> float:
        return self.min_ttls.get(profile, self.min_ttl)

    def alive(self, profile: str, token: Token, now: float) -> bool:
        """Whether ``token`` still has ``min_ttl`` left on the reader's monotonic clock."""
        left = token.deadline - now
        return left > 0 and left >= self.min_ttl_for(profile)

    # -- cache ---------------------------------------------------------------
    def cached(self, profile: str) -> Token | None:
        """The cached token while it is fresh and alive (the caller checks the channel)."""
        entry = self.cache.get(profile)
        if entry is None:
            return None
        now = self.clock.monotonic()
        if now < entry.fresh_until and self.alive(profile, entry.token, now):
            return entry.token
        return None

    def invalidate(self, profile: str) -> None:
        with self.lock:
            self.generation[profile] = self.generation.get(profile, 0) + 1
            self.cache.pop(profile, None)

    def invalidate_all(self) -> None:
        with self.lock:
            for profile in list(self.cache) + list(self.generation):
                self.generation[profile] = self.generation.get(profile, 0) + 1
            self.cache.clear()

    def forget_last(self, profile: str) -> None:
        """A purge or forget was announced: the token we hold must not be served again."""
        self.last.pop(profile, None)
        self.invalidate(profile)

    # -- decisions around one read -----------------------------------------------
    def stale(self, profile: str) -> Token | None:
        """Redis did not answer: the token last read, while alive and not rejected."""
        last = self.last.get(profile)
        if (self.serve_stale and last is not None
                and self.alive(profile, last, self.clock.monotonic())
                and self.rejected.get(profile) != last.fingerprint):
            return last
        return None

    def held(self, profile: str) -> Token | None:
        """The token last read, if it may be served in place of what Redis has (with
        ``serve_stale``, alive, not rejected): see :meth:`kept`."""
        last = self.last.get(profile) if self.serve_stale else None
        if last is None or not self.alive(profile, last, self.clock.monotonic()) \
                or self.rejected.get(profile) == last.fingerprint:
            return None
        return last

    def kept(self, profile: str, held: Token, stored: Token | None,
             known_fingerprint: str | None, known_issued_at: float | None = None
             ) -> Token | None:
        """``held`` when Redis lost its publish, else None.

        A failover (asynchronous replication) or a restart can lose a publish: Redis
        then holds an older token than one this reader has seen, or none while its
        status record (``known_fingerprint``) does not name the one we hold (a purge
        leaves the record in place). Tokens are ordered by issue time, so the newer one
        we hold stays the right one to serve; the refresh the lost key makes due
        replaces it."""
        if stored is None and (known_fingerprint == held.fingerprint or (
                known_issued_at is not None and known_issued_at >= held.issued_at)):
            # deleted on purpose (purge) the token we hold or a newer one that replaced
            # it (named by the record, ``known_issued_at``): readers wait for the next one
            return None
        if stored is not None and stored.issued_at >= held.issued_at:
            return None
        log.warning("profile=%s: Redis %s; serving the newer token this reader holds "
                    "(fingerprint=%s) until a new one is published", profile,
                    "lost the latest publish" if stored else "has no token", held.fingerprint)
        return held

    def token_from(self, profile: str, value: str, pttl: float, fleet_now: float,
                   sent_at: float) -> Token:
        """The token a stored value holds, its deadline on our clock from ``sent_at``.

        Raises:
            TokenUnavailable: the value is encrypted for keys we lack, or unreadable.
        """
        seen = self.decoded.get(profile)
        if seen is not None and seen[0] == value:
            # the value decoded last time (a token is read thousands of times per lifetime):
            # same fields, so no json.loads or decryption. The object we hold is reused
            # unless Redis now says less time is left, or clearly more (its clock stepped)
            token = seen[1]
            deadline = sent_at + bounded_ttl(pttl, token.expires_at, fleet_now)
            if not token.deadline <= deadline <= token.deadline + _SAME_DEADLINE:
                token = token.with_deadline(deadline)
                self.decoded[profile] = (value, token)
            return token
        try:
            decoded = self._decode(profile, value, pttl)
        except StoreError as exc:
            reason = "encrypted" if "encrypt" in str(exc) else "unreadable"
            raise TokenUnavailable(profile, reason, str(exc)) from None
        deadline = sent_at + bounded_ttl(pttl, decoded.expires_at, fleet_now)
        token = decoded.with_deadline(deadline, self.clock.monotonic)
        self.decoded[profile] = (value, token)
        return token

    def refusal(self, profile: str, token: Token) -> tuple[str, str] | None:
        """(reason, why) when ``token`` must not be handed out, else None."""
        rejected = self.rejected.get(profile)
        # hashing the token only when a rejection is on record keeps reads cheap
        if rejected is not None and rejected == token.fingerprint:
            return ("rejected", "the current token was rejected by the API; waiting for its "
                    "replacement")
        left = token.deadline - self.clock.monotonic()
        min_ttl = self.min_ttl_for(profile)
        if left <= 0 or left < min_ttl:
            return ("expired", f"the token expires in {left:.1f}s, less than min_ttl "
                    f"{min_ttl:g}s" if left > 0 else "the stored token is past its expiry")
        return None

    def remember(self, profile: str, token: Token, sent_at: float, generation: int) -> None:
        """A token handed out: kept for serve_stale, cached unless a publish came since."""
        self.last[profile] = token
        if self.cache_enabled:
            with self.lock:
                if self.generation.get(profile, 0) == generation:
                    self.cache[profile] = _Entry(token, sent_at + self.cache_max_age)

    def mark_rejected(self, profile: str, token: Token | str) -> str:
        """Stop serving ``token``; its fingerprint (for the report)."""
        access = token.access_token if isinstance(token, Token) else token
        fp = fingerprint(access)
        self.rejected[profile] = fp
        self.invalidate(profile)
        return fp
