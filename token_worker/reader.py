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
from typing import TYPE_CHECKING, Any

import redis

from .auth import REPLACEMENT_WAIT, BearerAuth
from .clock import SYSTEM, Clock
from .exceptions import StoreError, TokenUnavailable
from .invalidation import Invalidator
from .reader_config import DEFAULT_CACHE_MAX_AGE, DEFAULT_MIN_TTL, gapless_min_ttl
from .reader_core import ReaderCore, explain_missing, unknown_profile, unreachable
from .records import StatusRecord
from .store import TokenCodec, TokenStore, connect_redis
from .tokens import Token

if TYPE_CHECKING:
    from .aiohttp_auth import BearerMiddleware
    from .httpx_auth import HttpxBearerAuth

__all__ = ["DEFAULT_CACHE_MAX_AGE", "BearerAuth", "TokenReader", "gapless_min_ttl"]

log = logging.getLogger("token_worker.reader")

# every live reader, so a forked child gets fresh locks and state (see _after_fork)
_READERS: weakref.WeakSet[TokenReader] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # a lock held by a parent thread at fork time stays held forever in the child
    for reader in list(_READERS):
        reader._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _setting(name: str) -> Any:
    """An attribute of the reader that reads and writes its core's."""
    return property(lambda self: getattr(self.core, name),
                    lambda self, value: setattr(self.core, name, value))


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
        self.core = ReaderCore(min_ttl=min_ttl, min_ttls=min_ttls, cache=cache,
                               cache_max_age=cache_max_age, serve_stale=serve_stale,
                               profiles=profiles, clock=clock, decode=self.store.decode)
        self._start_lock = threading.Lock()  # one invalidator thread, however many callers
        self._invalidator: Invalidator | None = None
        _READERS.add(self)

    def _after_fork(self) -> None:
        # threads and cached state do not carry over safely
        self._start_lock = threading.Lock()
        self.core.reset()
        self._invalidator = None

    # the settings, as plain attributes (the core holds them)
    min_ttl = _setting("min_ttl")
    min_ttls = _setting("min_ttls")
    cache_enabled = _setting("cache_enabled")
    cache_max_age = _setting("cache_max_age")
    serve_stale = _setting("serve_stale")
    profiles = _setting("profiles")
    _lock = property(lambda self: self.core.lock)
    _last = property(lambda self: self.core.last)

    @classmethod
    def from_config(cls, path: str | None = None, **options: Any) -> TokenReader:
        """A reader with the worker's Redis settings; needs no credential on this host.

        Each profile's ``min_ttl`` comes from the config (:func:`gapless_min_ttl`), so
        rotations that succeed leave no gap; an explicit ``min_ttl=`` applies to all. The
        file is read without pydantic, by the rules ``config check`` applies to the keys
        a reader uses (:mod:`token_worker.reader_config`).

        Raises:
            ConfigError: the file is missing or invalid, naming the key.
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
        self.core.invalidate(profile)

    def _invalidate_all(self) -> None:
        self.core.invalidate_all()

    def _forget_last(self, profile: str) -> None:
        self.core.forget_last(profile)

    def min_ttl_for(self, profile: str) -> float:
        """The ``min_ttl`` that applies to ``profile``."""
        return self.core.min_ttl_for(profile)

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
        core = self.core
        if os.getpid() != core.pid:
            self._after_fork()  # forked without the at-fork hook having run
        if core.cache_enabled:
            token = core.cached(profile)
            if token is not None and self._listening():
                return token
        try:
            return self._get(profile)
        except TokenUnavailable as exc:
            if not wait or exc.reason == "unknown_profile":
                raise
        return self._wait(profile, wait)

    def get_access_token(self, profile: str, wait: float | None = None) -> str:
        """The bearer string of :meth:`get`."""
        return self.get(profile, wait).access_token

    def auth(self, profile: str, *, wait: float = REPLACEMENT_WAIT) -> BearerAuth:
        """A ``requests`` auth: the current token on every request; on a 401, report,
        wait up to ``wait`` seconds for the replacement and send once more."""
        return BearerAuth(self, profile, wait=wait)

    def httpx_auth(self, profile: str, *, wait: float = REPLACEMENT_WAIT) -> HttpxBearerAuth:
        """An ``httpx.Auth`` for ``httpx.Client`` and ``httpx.AsyncClient``, with the same
        401 retry (needs ``token_worker[httpx]``)."""
        from .httpx_auth import HttpxBearerAuth

        return HttpxBearerAuth(self, profile, wait=wait)

    def aiohttp_middleware(self, profile: str, *, wait: float = REPLACEMENT_WAIT,
                           origin: str | None = None) -> BearerMiddleware:
        """An aiohttp client middleware with the same 401 retry; the token goes to one
        origin only (``origin``, else the first request's). Needs ``token_worker[aiohttp]``."""
        from .aiohttp_auth import bearer_middleware

        return bearer_middleware(self, profile, wait, origin=origin)

    def _get(self, profile: str) -> Token:
        core = self.core
        generation = core.generation.get(profile, 0)
        # taken before the request: a reply delayed on its way back (a slow network, a
        # descheduled process) shortens the deadline instead of stretching it
        sent_at = self.clock.monotonic()
        try:
            value, pttl, fleet_now = self.store.read_raw(profile)
        except StoreError as exc:
            stale = core.stale(profile)
            if stale is not None:
                return stale
            if (unknown := unknown_profile(profile, core.profiles)) is not None:
                raise unknown from None  # a typo, whatever Redis is doing
            raise TokenUnavailable(profile, "redis_unreachable",
                                   unreachable(self.store.where, exc)) from None
        held = core.held(profile)
        if value is None:
            if held is not None:
                try:
                    record = self.store.status(profile)
                    known, known_at = record.fingerprint, record.issued_at
                except StoreError:
                    known, known_at = None, None
                if core.kept(profile, held, None, known, known_at) is not None:
                    return held
            raise self._diagnose(profile)
        token = core.token_from(profile, value, pttl, fleet_now, sent_at)
        if held is not None and core.kept(profile, held, token, None) is not None:
            return held
        refused = core.refusal(profile, token)
        if refused is not None:
            reason, why = refused
            raise TokenUnavailable(profile, reason, why,
                                   self._last_error(profile) if reason == "expired" else None)
        core.remember(profile, token, sent_at, generation)
        return token

    def _last_error(self, profile: str) -> str | None:
        try:
            return self.store.status(profile).last_error
        except StoreError:
            return None

    def _diagnose(self, profile: str) -> TokenUnavailable:
        unknown = unknown_profile(profile, self.core.profiles)
        if unknown is not None:
            return unknown
        try:
            record, listed, now = self.store.why_missing(profile)  # the fleet clock
        except StoreError:
            record, listed, now = StatusRecord(), None, self.clock.wall()
        return explain_missing(profile, self.core.profiles, record, listed, now)

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
                                       unreachable(self.store.where, exc)) from None
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
        fp = self.core.mark_rejected(profile, token)
        try:
            first = self.store.report_rejected(profile, fp)
        except StoreError as exc:
            raise TokenUnavailable(profile, "redis_unreachable", "cannot report the rejected "
                                   f"token: {unreachable(self.store.where, exc)}") from None
        log.info("token rejected by the API reported profile=%s fingerprint=%s first=%s",
                 profile, fp, first)
        return first

