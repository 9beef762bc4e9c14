"""The reader: how any task in the fleet takes the current token.

It never calls the token endpoint and never holds a credential; it imports only
redis and the standard library (no requests, no celery, no token client).
A hit in the in-process cache costs a dict lookup; entries are dropped the
moment a refresh publishes (Redis pub/sub), and are not served at all while
that channel is down. Remaining lifetimes come from Redis's clock, counted down
on the monotonic clock from the moment the read was *sent* (so a late reply
makes them err early), and never run past the ``expires_at`` inside the value
(so a value replayed under a long key TTL dies at its own expiry). A host with a
wrong wall clock still never gets an expired token and never refuses a valid one.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from .auth import BearerAuth
from .clock import SYSTEM, Clock
from .diagnosis import diagnose, last_error
from .exceptions import StoreError, StoreUnavailable, TokenUnavailable
from .invalidation import Invalidator
from .reader_config import DEFAULT_MIN_TTL, gapless_min_ttl
from .store import TokenCodec, TokenStore, connect_redis
from .tokens import Token, bounded_ttl, fingerprint

__all__ = ["BearerAuth", "TokenReader", "gapless_min_ttl"]

log = logging.getLogger("token_worker.reader")

# bound on serving from the cache should the invalidation channel fail silently (a
# half-open connection): under the 100 ms promise, and still ~200x fewer Redis reads
DEFAULT_CACHE_MAX_AGE = 0.08
# two lifetime readings of one stored value this close are the same (round-trip jitter)
_SAME_DEADLINE = 0.05

# every live reader, so a forked child gets fresh locks and state (see _after_fork)
_READERS: weakref.WeakSet[TokenReader] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # a lock held by a parent thread at fork time stays held forever in the child
    for reader in list(_READERS):
        reader._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(slots=True)
class _Entry:
    token: Token
    read_at: float  # monotonic, when the read was sent
    fresh_until: float  # monotonic: cache max age


class TokenReader:
    """Reads published tokens from Redis.

    Args:
        redis_url: the token store (``redis.url`` of the worker's config).
        prefix: the key namespace (``redis.prefix``).
        min_ttl: refuse tokens with fewer seconds left than this (profiles without
            an entry in ``min_ttls``).
        min_ttls: per-profile ``min_ttl`` (``from_config`` sets it, see
            :func:`gapless_min_ttl`).
        cache: keep tokens in process memory, invalidated on publish.
        serve_stale: when Redis is unreachable, keep serving the token last read
            while it still has ``min_ttl`` left.
        profiles: the configured profile names, when known (``from_config``).
        codec: decrypts values when encryption at rest is on.
        client: a ready redis client, instead of ``redis_url``.
    """

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "stitch",
        *,
        min_ttl: float = DEFAULT_MIN_TTL,
        min_ttls: Mapping[str, float] | None = None,
        cache: bool = True,
        cache_max_age: float = DEFAULT_CACHE_MAX_AGE,
        serve_stale: bool = True,
        profiles: list[str] | None = None,
        codec: TokenCodec | None = None,
        client: redis.Redis | None = None,
        clock: Clock = SYSTEM,
        **redis_options: Any,
    ) -> None:
        self.store = TokenStore(client or connect_redis(redis_url, **redis_options), prefix,
                                codec=codec)
        self.clock = clock
        self.min_ttl = min_ttl
        self.min_ttls = dict(min_ttls or {})
        self.cache_enabled = cache
        self.cache_max_age = cache_max_age
        self.serve_stale = serve_stale
        self.profiles = set(profiles) if profiles is not None else None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # one invalidator thread, however many callers
        self._reset()
        _READERS.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        # also run after fork: threads and cached state do not carry over safely
        self._pid = os.getpid()
        self._cache: dict[str, _Entry] = {}
        self._generation: dict[str, int] = {}
        # profile -> (the token last read, monotonic when it was read), for serve_stale
        self._last: dict[str, tuple[Token, float]] = {}
        # profile -> (stored value, a token decoded from it): one tuple, so that threads
        # racing to store can never pair one token's value with another's fields
        self._decoded: dict[str, tuple[str, Token]] = {}
        self._rejected: dict[str, str] = {}
        self._invalidator: Invalidator | None = None

    @classmethod
    def from_config(cls, path: str | None = None, **options: Any) -> TokenReader:
        """A reader with the worker's Redis settings; needs no credential on this host.

        Each profile's ``min_ttl`` comes from the config (:func:`gapless_min_ttl`), so
        rotations that succeed leave no gap; an explicit ``min_ttl=`` applies to all.
        """
        from .reader_config import reader_options

        return cls(**reader_options(path, options))

    def __repr__(self) -> str:
        return f"TokenReader(redis={self.store.where!r}, prefix={self.store.prefix!r})"

    def close(self) -> None:
        """Stop the invalidation listener and close the Redis connections."""
        inv = self._invalidator
        if inv is not None:
            inv.stop()
            inv.join(timeout=2.0)  # it wakes within a second: get_message(timeout=1.0)
        self.store.close()

    # -- cache ---------------------------------------------------------------
    def _invalidate(self, profile: str) -> None:
        with self._lock:
            self._generation[profile] = self._generation.get(profile, 0) + 1
            self._cache.pop(profile, None)

    def _invalidate_all(self) -> None:
        with self._lock:
            for profile in list(self._cache) + list(self._generation):
                self._generation[profile] = self._generation.get(profile, 0) + 1
            self._cache.clear()

    def min_ttl_for(self, profile: str) -> float:
        """The ``min_ttl`` that applies to ``profile``."""
        return self.min_ttls.get(profile, self.min_ttl)

    def _listening(self) -> bool:
        inv = self._invalidator
        if inv is not None and inv.healthy:
            return True  # healthy is cleared before the thread can exit: no is_alive() here
        if inv is None or not inv.is_alive():
            # is_alive() is False until start() returns: checked again under the lock,
            # else concurrent callers each start their own thread
            with self._start_lock:
                inv = self._invalidator
                if inv is None or not inv.is_alive():
                    inv = Invalidator(self)
                    inv.start()
                    self._invalidator = inv
        return inv.healthy

    # -- reading -------------------------------------------------------------
    def get(self, profile: str, wait: float | None = None) -> Token:
        """The current token for ``profile``.

        Args:
            wait: seconds to wait for a token to be published when none is
                available now (woken by pub/sub, not by polling).

        Raises:
            TokenUnavailable: no token with at least ``min_ttl`` left; the message
                names the profile, the reason and the last refresh error.
        """
        if os.getpid() != self._pid:
            self._after_fork()  # forked without the at-fork hook having run
        if self.cache_enabled:
            entry = self._cache.get(profile)
            now = self.clock.monotonic()
            if (entry is not None and self._alive(profile, entry.token, now)
                    and now < entry.fresh_until and self._listening()):
                return entry.token
        try:
            return self._get(profile)
        except TokenUnavailable as exc:
            if not wait or exc.reason == "unknown_profile":
                raise
        return self._wait(profile, wait)

    def get_access_token(self, profile: str, wait: float | None = None) -> str:
        """The bearer string of :meth:`get`."""
        return self.get(profile, wait).access_token

    def auth(self, profile: str) -> BearerAuth:
        """A ``requests`` auth object reading the current token on every request."""
        return BearerAuth(self, profile)

    def _get(self, profile: str) -> Token:
        generation = self._generation.get(profile, 0)
        # taken before the request: a reply delayed on its way back (a slow network, a
        # descheduled process) shortens the deadline instead of stretching it
        sent_at = self.clock.monotonic()
        try:
            value, pttl, fleet_now = self.store.read_raw(profile)
        except StoreError as exc:
            last = self._last.get(profile)
            if (self.serve_stale and last is not None
                    and self._alive(profile, last[0], self.clock.monotonic())
                    and self._rejected.get(profile) != last[0].fingerprint):
                return last[0]
            if self.profiles is not None and profile not in self.profiles:
                raise self._diagnose(profile) from None  # a typo, whatever Redis is doing
            raise TokenUnavailable(profile, "redis_unreachable", _unreachable(self.store, exc)
                                   ) from None
        if value is None:
            kept = self._kept(profile, None)
            if kept is not None:
                return kept
            raise self._diagnose(profile)
        seen = self._decoded.get(profile)
        if seen is not None and seen[0] == value:
            # the value decoded last time (a token is read thousands of times per lifetime):
            # same fields, so no json.loads or decryption. The object we hold is reused
            # unless Redis now says less time is left, or clearly more (its clock stepped)
            token = seen[1]
            deadline = sent_at + bounded_ttl(pttl, token.expires_at, fleet_now)
            if not token.deadline <= deadline <= token.deadline + _SAME_DEADLINE:
                token = token.with_deadline(deadline)
                self._decoded[profile] = (value, token)
        else:
            try:
                decoded = self.store.decode(profile, value, pttl)
            except StoreError as exc:
                reason = "encrypted" if "encrypt" in str(exc) else "unreadable"
                raise TokenUnavailable(profile, reason, str(exc)) from None
            deadline = sent_at + bounded_ttl(pttl, decoded.expires_at, fleet_now)
            token = decoded.with_deadline(deadline, self.clock.monotonic)
            self._decoded[profile] = (value, token)
        last = self._last.get(profile)
        if last is not None and last[0].issued_at > token.issued_at:
            kept = self._kept(profile, token)
            if kept is not None:
                return kept
        rejected = self._rejected.get(profile)
        # hashing the token only when a rejection is on record keeps reads cheap
        if rejected is not None and rejected == token.fingerprint:
            raise TokenUnavailable(profile, "rejected",
                                   "the current token was rejected by the API; waiting for "
                                   "its replacement")
        left = token.deadline - self.clock.monotonic()
        min_ttl = self.min_ttl_for(profile)
        if left <= 0 or left < min_ttl:
            why = (f"the token expires in {left:.1f}s, less than min_ttl {min_ttl:g}s"
                   if left > 0 else "the stored token is past its expiry")
            raise TokenUnavailable(profile, "expired", why, self._last_error(profile))
        self._last[profile] = (token, sent_at)
        if self.cache_enabled:
            with self._lock:
                # a publish seen since our read means this token may be stale already
                if self._generation.get(profile, 0) == generation:
                    self._cache[profile] = _Entry(token, sent_at,
                                                  sent_at + self.cache_max_age)
        return token

    def _alive(self, profile: str, token: Token, now: float) -> bool:
        """Whether a token read earlier still has ``min_ttl`` left, by the reader's clock
        (monotonic: a stepped or patched wall clock cannot stretch it)."""
        left = token.deadline - now
        return left > 0 and left >= self.min_ttl_for(profile)

    def _kept(self, profile: str, stored: Token | None) -> Token | None:
        """The token this reader read last, when Redis lost its publish, else None.

        A failover (asynchronous replication) or a restart can lose a publish: Redis then
        holds an older token than one this reader has seen, or none while its status
        record knows nothing of the one we hold (a purge leaves the record in place).
        Tokens are ordered by issue time, so the newer one we hold stays the right one
        to serve while it has ``min_ttl`` left and the API did not reject it; the
        refresh the lost key makes due replaces it."""
        last = self._last.get(profile)
        if last is None or not self._alive(profile, last[0], self.clock.monotonic()) \
                or self._rejected.get(profile) == last[0].fingerprint:
            return None
        if stored is None:
            try:
                known = self.store.status(profile).fingerprint
            except StoreError:
                known = None
            if known == last[0].fingerprint:
                return None  # deleted on purpose (purge): readers wait for the next one
        log.warning("profile=%s: Redis %s; serving the newer token this reader holds "
                    "(fingerprint=%s) until a new one is published", profile,
                    "lost the latest publish" if stored else "has no token", last[0].fingerprint)
        return last[0]

    def _forget_last(self, profile: str) -> None:
        """A purge or forget was announced: the token we hold must not be served again."""
        self._last.pop(profile, None)
        self._invalidate(profile)

    def _last_error(self, profile: str) -> str | None:
        return last_error(self.store, profile)

    def _diagnose(self, profile: str) -> TokenUnavailable:
        return diagnose(self.store, profile, self.profiles)

    def _wait(self, profile: str, wait: float) -> Token:
        last_exc: TokenUnavailable | None = None

        def available() -> Token | None:
            nonlocal last_exc
            try:
                return self._get(profile)
            except TokenUnavailable as exc:
                last_exc = exc
                return None

        try:
            # woken by any event, re-checked at least every second (channel loss)
            token = self.store.wait_for(available, self.clock.monotonic() + wait,
                                        monotonic=self.clock.monotonic)
        except StoreError as exc:
            if last_exc is None:
                raise TokenUnavailable(profile, "redis_unreachable",
                                       _unreachable(self.store, exc)) from None
            token = None
        if token is not None:
            return token
        assert last_exc is not None
        raise last_exc

    def report_rejected(self, profile: str, token: Token | str) -> bool:
        """Tell the fleet the API answered 401 for this token.

        The first report of a given token writes its marker and tells the workers,
        which refresh at once (once, however many tasks report it); this reader stops
        serving that token, so ``get(profile, wait=...)`` returns its replacement.

        Returns:
            True when this call was the first report of that token.
        """
        access = token.access_token if isinstance(token, Token) else token
        fp = fingerprint(access)
        self._rejected[profile] = fp
        self._invalidate(profile)
        try:
            first = self.store.report_rejected(profile, fp)
        except StoreError as exc:
            raise TokenUnavailable(profile, "redis_unreachable", "cannot report the rejected "
                                   f"token: {_unreachable(self.store, exc)}") from None
        log.info("token rejected by the API reported profile=%s fingerprint=%s first=%s",
                 profile, fp, first)
        return first


def _unreachable(store: TokenStore, exc: StoreError) -> str:
    """What a reader says when Redis would not serve it (no value, no password)."""
    if isinstance(exc, StoreUnavailable):
        return f"Redis unreachable at {store.where}"
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "error"
    return f"Redis at {store.where} refused ({cause})"
