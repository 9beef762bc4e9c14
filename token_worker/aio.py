"""``AsyncTokenReader``: the reader for asyncio services (FastAPI, aiohttp, Starlette).

The same semantics as :class:`token_worker.reader.TokenReader`, by construction: both
hand every decision to :class:`~token_worker.reader_core.ReaderCore` (token parsing,
cache, ``min_ttl``, serve_stale, lost publishes, error reasons and messages) and only
the reads differ, awaited here on ``redis.asyncio`` (:mod:`token_worker.store_async`).

One reader belongs to one event loop and one process: its connections do. It binds to
the loop it is first used in and refuses another loop, or a forked child, with a
``RuntimeError`` saying what to do. Importing this module, and ``from_config``, load no
Celery, requests or pydantic (:mod:`token_worker.reader_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .auth import REPLACEMENT_WAIT
from .clock import SYSTEM, Clock
from .codec import TokenCodec
from .connection import RedisTarget, async_client_for
from .events import Event
from .exceptions import StoreError, TokenUnavailable
from .reader_config import DEFAULT_CACHE_MAX_AGE, DEFAULT_MIN_TTL
from .reader_core import ReaderCore, explain_missing, unknown_profile, unreachable
from .records import StatusRecord
from .store_async import AsyncSubscription, AsyncTokenStore
from .tokens import Token

if TYPE_CHECKING:
    from .aiohttp_auth import BearerMiddleware
    from .httpx_auth import HttpxBearerAuth

__all__ = ["AsyncTokenReader"]

log = logging.getLogger("token_worker.reader")

_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 5.0
_POLL = 1.0  # a wait re-checks at least this often (a lost channel)


class AsyncTokenReader:
    """Reads published tokens from Redis, awaited. Arguments as :class:`TokenReader`'s
    (``client``: a ready ``redis.asyncio`` client)."""

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
        client: Any = None,
        clock: Clock = SYSTEM,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        target = RedisTarget(redis_url, prefix, tls_ca_file, tls_cert_file, tls_key_file,
                             socket_timeout)
        self.store = (AsyncTokenStore.open(target, codec) if client is None
                      else AsyncTokenStore(client, prefix, codec, _where_of(redis_url)))
        self.clock = clock
        self.core = ReaderCore(min_ttl=min_ttl, min_ttls=min_ttls, cache=cache,
                               cache_max_age=cache_max_age, serve_stale=serve_stale,
                               profiles=profiles, clock=clock, decode=self.store.decode)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self._healthy = False
        self._closed = False
        self._inflight: dict[str, asyncio.Future[Token]] = {}
        self._changed = asyncio.Event()  # set (and replaced) on every event

    @classmethod
    def from_config(cls, path: str | None = None, **options: Any) -> AsyncTokenReader:
        """A reader with the worker's Redis settings; needs no credential on this host."""
        from .reader_config import reader_options

        return cls(**reader_options(path, options, connect=async_client_for))

    def __repr__(self) -> str:
        return f"AsyncTokenReader(redis={self.store.where!r}, prefix={self.store.prefix!r})"

    async def __aenter__(self) -> AsyncTokenReader:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the invalidation task and close the Redis connections."""
        self._closed = True
        task, self._listener = self._listener, None
        if task is not None and not task.done():
            # redis-py can swallow a cancel inside a pub/sub read: the task also ends on
            # its own within a poll (it checks _closed), and we wait no longer than that
            task.cancel()
            await asyncio.wait({task}, timeout=2 * _POLL)
        self._healthy = False
        await self.store.close()

    def min_ttl_for(self, profile: str) -> float:
        return self.core.min_ttl_for(profile)

    # -- the loop and the channel ----------------------------------------------------
    def _bind(self) -> None:
        if os.getpid() != self.core.pid:
            raise RuntimeError("this AsyncTokenReader was created in another process (fork): "
                               "create a new one in the child")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("this AsyncTokenReader belongs to another event loop: create "
                               "one reader per event loop")
        if self._closed:
            raise RuntimeError("this AsyncTokenReader is closed")

    def _listening(self) -> bool:
        """Whether the cache may serve: the invalidation task is subscribed (started
        lazily, once, in the reader's loop)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="token_worker-invalidator")
        return self._healthy

    async def _listen(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._closed:
            sub: AsyncSubscription | None = None
            try:
                sub = await self.store.subscribe()
                while not self._closed:
                    message = await sub.get_message(timeout=_POLL)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.core.invalidate_all()  # anything published meanwhile was missed
                        self._healthy = True
                        backoff = _BACKOFF_MIN
                    elif message["type"] == "message":
                        event = Event.parse(message["data"])
                        if event is None:
                            continue
                        if event.kind == "purged":
                            self.core.forget_last(event.profile)
                        else:
                            self.core.invalidate(event.profile)
                        changed, self._changed = self._changed, asyncio.Event()
                        changed.set()  # wake the waiters: one subscription for all of them
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the channel is down; the task lives on
                log.debug("invalidation channel down (%s); cache off until resubscribed",
                          type(exc).__name__)
            finally:
                self._healthy = False
                self.core.invalidate_all()
                if sub is not None:
                    await sub.aclose()
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # -- reading -------------------------------------------------------------------
    async def get(self, profile: str, wait: float | None = None) -> Token:
        """The current token for ``profile`` (see :meth:`TokenReader.get`).

        Raises:
            TokenUnavailable: as :meth:`TokenReader.get`.
            RuntimeError: used from another event loop or process than its own.
        """
        self._bind()
        core = self.core
        if core.cache_enabled:
            token = core.cached(profile)
            if token is not None and self._listening():
                return token
            self._listening()
        try:
            return await self._read_once(profile)
        except TokenUnavailable as exc:
            if not wait or exc.reason == "unknown_profile":
                raise
        return await self._wait(profile, wait)

    async def _read_once(self, profile: str) -> Token:
        """One Redis read per profile at a time: tasks that ask while it is in flight
        share its answer (a thousand concurrent misses are one read, one connection)."""
        pending = self._inflight.get(profile)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # we were cancelled ourselves
                # the task reading for us was cancelled: read ourselves
        future: asyncio.Future[Token] = asyncio.get_running_loop().create_future()
        self._inflight[profile] = future
        try:
            token = await self._get(profile)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody shared it
            raise
        else:
            future.set_result(token)
            return token
        finally:
            if self._inflight.get(profile) is future:
                del self._inflight[profile]

    async def get_access_token(self, profile: str, wait: float | None = None) -> str:
        return (await self.get(profile, wait)).access_token

    def httpx_auth(self, profile: str, *, wait: float = REPLACEMENT_WAIT) -> HttpxBearerAuth:
        """An ``httpx.Auth`` for ``httpx.AsyncClient``: the current token on every request;
        on a 401, report, wait up to ``wait`` s for the replacement, send once more."""
        from .httpx_auth import HttpxBearerAuth

        return HttpxBearerAuth(self, profile, wait=wait)

    def aiohttp_middleware(self, profile: str, *, wait: float = REPLACEMENT_WAIT,
                           origin: str | None = None) -> BearerMiddleware:
        """An aiohttp client middleware with the same 401 retry (one origin only)."""
        from .aiohttp_auth import bearer_middleware

        return bearer_middleware(self, profile, wait, origin=origin)

    async def _get(self, profile: str) -> Token:
        core = self.core
        generation = core.generation.get(profile, 0)
        sent_at = self.clock.monotonic()
        try:
            value, pttl, fleet_now = await self.store.read_raw(profile)
        except StoreError as exc:
            stale = core.stale(profile)
            if stale is not None:
                return stale
            if (unknown := unknown_profile(profile, core.profiles)) is not None:
                raise unknown from None
            raise TokenUnavailable(profile, "redis_unreachable",
                                   unreachable(self.store.where, exc)) from None
        held = core.held(profile)
        if value is None:
            if held is not None:
                try:
                    record = await self.store.status(profile)
                    known, known_at = record.fingerprint, record.issued_at
                except StoreError:
                    known, known_at = None, None
                if core.kept(profile, held, None, known, known_at) is not None:
                    return held
            raise await self._diagnose(profile)
        token = core.token_from(profile, value, pttl, fleet_now, sent_at)
        if held is not None and core.kept(profile, held, token, None) is not None:
            return held
        refused = core.refusal(profile, token)
        if refused is not None:
            reason, why = refused
            error = await self._last_error(profile) if reason == "expired" else None
            raise TokenUnavailable(profile, reason, why, error)
        core.remember(profile, token, sent_at, generation)
        return token

    async def _last_error(self, profile: str) -> str | None:
        try:
            return (await self.store.status(profile)).last_error
        except StoreError:
            return None

    async def _diagnose(self, profile: str) -> TokenUnavailable:
        unknown = unknown_profile(profile, self.core.profiles)
        if unknown is not None:
            return unknown
        try:
            record, listed, now = await self.store.why_missing(profile)
        except StoreError:
            record, listed, now = StatusRecord(), None, self.clock.wall()
        return explain_missing(profile, self.core.profiles, record, listed, now)

    async def _wait(self, profile: str, wait: float) -> Token:
        """Checked on every event and at least every second, on the reader's own
        subscription while it is up (a thousand waiters, one connection), else on one
        of the wait's own."""
        deadline = self.clock.monotonic() + wait
        last_exc: TokenUnavailable | None = None
        while self._listening():
            changed = self._changed  # taken before the read: an event after it wakes us
            try:
                return await self._read_once(profile)
            except TokenUnavailable as exc:
                last_exc = exc
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise last_exc
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(min(left, _POLL), 0.01))
        try:
            sub = await self.store.subscribe()
        except StoreError as exc:
            raise TokenUnavailable(profile, "redis_unreachable",
                                   unreachable(self.store.where, exc)) from None
        try:
            while True:
                try:
                    return await self._get(profile)
                except TokenUnavailable as exc:
                    last_exc = exc
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    raise last_exc
                try:
                    await sub.get_message(timeout=max(min(left, _POLL), 0.01))
                except StoreError:
                    await asyncio.sleep(min(left, 0.1))
        finally:
            await sub.aclose()

    async def report_rejected(self, profile: str, token: Token | str) -> bool:
        """Tell the fleet the API answered 401 for this token (see
        :meth:`TokenReader.report_rejected`)."""
        self._bind()
        fp = self.core.mark_rejected(profile, token)
        try:
            first = await self.store.report_rejected(profile, fp)
        except StoreError as exc:
            raise TokenUnavailable(profile, "redis_unreachable", "cannot report the rejected "
                                   f"token: {unreachable(self.store.where, exc)}") from None
        log.info("token rejected by the API reported profile=%s fingerprint=%s first=%s",
                 profile, fp, first)
        return first


def _where_of(url: str) -> str:
    from .store_async import _where
    from .topology import TopologyError, parse_topology

    try:
        topology = parse_topology(url)
    except TopologyError:
        return "?"
    return topology.where if topology is not None else _where(url)
