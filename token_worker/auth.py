"""Auth objects that put the reader's current token on outgoing requests.

Split from :mod:`token_worker.reader`; imports nothing heavy (requests is never
imported at module level: ``requests`` calls the object with its request).

Every auth object here and in :mod:`token_worker.httpx_auth` and
:mod:`token_worker.aiohttp_auth` behaves the same on a 401: it reports the token
that request carried as rejected (the fleet refreshes it once, however many
requests report it), waits up to ``wait`` seconds for the replacement, and sends
the request once more with it. A second 401 goes back to the caller as it is, and
so does the first when no replacement came in time, the replacement is the same
token, or the body cannot be sent again. Concurrent 401s for one token share one
report and one wait per reader (and the fleet's rejected marker makes every
process's report one refresh); no lock is ever held across I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from .exceptions import TokenUnavailable
from .tokens import Token

if TYPE_CHECKING:
    from requests import PreparedRequest, Response

__all__ = ["REPLACEMENT_WAIT", "AsyncReader", "BearerAuth", "SyncReader", "bearer", "current",
           "current_async", "is_async_reader", "replacement", "replacement_async",
           "report_only", "report_only_async"]

log = logging.getLogger("token_worker.auth")

# seconds a request that got a 401 waits for the fleet's replacement: a listener
# refreshes within about a second of the report (one endpoint call), and a caller
# would rather see the 401 than hang while the fleet cannot refresh
REPLACEMENT_WAIT = 5.0


class SyncReader(Protocol):
    """What the auth objects need of a reader (:class:`token_worker.TokenReader`)."""

    def get(self, profile: str, wait: float | None = None) -> Token: ...

    def report_rejected(self, profile: str, token: Token | str) -> bool: ...


class AsyncReader(Protocol):
    """The same, with coroutines (``token_worker.aio.AsyncTokenReader``)."""

    async def get(self, profile: str, wait: float | None = None) -> Token: ...

    async def report_rejected(self, profile: str, token: Token | str) -> bool: ...


def is_async_reader(reader: object) -> bool:
    """Whether ``reader.get`` is a coroutine function (an async reader)."""
    return inspect.iscoroutinefunction(getattr(reader, "get", None))


def bearer(token: Token) -> str:
    """The ``Authorization`` header value for ``token``."""
    return f"Bearer {token.access_token}"


def replacement(reader: SyncReader, profile: str, used: Token, wait: float) -> Token | None:
    """Report ``used`` rejected and wait for the token that replaces it.

    Threads of this process that got a 401 for the same token with the same reader
    share one report and one wait (one Redis subscription, not one per request).

    Returns:
        The replacement, or None when none came within ``wait`` seconds (or the
        reader handed back the rejected token itself).
    """
    return _flights(reader).share((profile, used.fingerprint),
                                  lambda: _replacement(reader, profile, used, wait))


def _replacement(reader: SyncReader, profile: str, used: Token, wait: float) -> Token | None:
    try:
        reader.report_rejected(profile, used)
    except TokenUnavailable as exc:
        _not_reported(profile, used, exc)  # another reader's report or beat may still do
    try:
        new = reader.get(profile, wait=wait)
    except TokenUnavailable as exc:
        _none_in_time(profile, used, wait, exc)
        return None
    return _checked(profile, used, new)


async def replacement_async(reader: SyncReader | AsyncReader, profile: str, used: Token,
                            wait: float) -> Token | None:
    """:func:`replacement` for async code: awaits an async reader; runs a sync
    reader's blocking calls in a worker thread (``asyncio.to_thread``). Tasks of one
    event loop share one report and one wait, as threads do."""
    key = (profile, used.fingerprint, id(asyncio.get_running_loop()))
    return await _flights(reader).share_async(
        key, lambda: _replacement_async(reader, profile, used, wait))


async def _replacement_async(reader: SyncReader | AsyncReader, profile: str, used: Token,
                             wait: float) -> Token | None:
    if not is_async_reader(reader):
        sync: SyncReader = reader  # type: ignore[assignment]
        return await asyncio.to_thread(replacement, sync, profile, used, wait)
    aio: AsyncReader = reader  # type: ignore[assignment]
    try:
        await aio.report_rejected(profile, used)
    except TokenUnavailable as exc:
        _not_reported(profile, used, exc)
    try:
        new = await aio.get(profile, wait=wait)
    except TokenUnavailable as exc:
        _none_in_time(profile, used, wait, exc)
        return None
    return _checked(profile, used, new)


class _Flights:
    """One replacement fetch per rejected token at a time; the others share its answer.

    The lock guards the table only: it is never held while Redis is asked or awaited.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[Hashable, Future[Token | None]] = {}
        self._tasks: dict[Hashable, asyncio.Future[Token | None]] = {}

    def share(self, key: Hashable, fetch: Callable[[], Token | None]) -> Token | None:
        with self._lock:
            pending = self._threads.get(key)
            if pending is None:
                mine: Future[Token | None] = Future()
                self._threads[key] = mine
        if pending is not None:
            return pending.result()  # the fetching thread always settles it (finally)
        try:
            result = fetch()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(result)
            return result
        finally:
            with self._lock:
                del self._threads[key]

    async def share_async(self, key: Hashable,
                          fetch: Callable[[], Awaitable[Token | None]]) -> Token | None:
        pending = self._tasks.get(key)  # one event loop per key: no lock needed
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this task was cancelled, not the one fetching for it
                # the fetching task was cancelled: fetch ourselves
        mine = asyncio.get_running_loop().create_future()
        self._tasks[key] = mine
        try:
            result = await fetch()
        except asyncio.CancelledError:
            mine.cancel()
            raise
        except BaseException as exc:
            mine.set_exception(exc)
            mine.exception()  # retrieved: no warning when no task shared it
            raise
        else:
            mine.set_result(result)
            return result
        finally:
            if self._tasks.get(key) is mine:
                del self._tasks[key]


_FLIGHTS: weakref.WeakKeyDictionary[object, _Flights] = weakref.WeakKeyDictionary()
_FLIGHTS_LOCK = threading.Lock()


def _flights(reader: object) -> _Flights:
    """The reader's table (kept as long as the reader lives)."""
    with _FLIGHTS_LOCK:
        try:
            flights = _FLIGHTS.get(reader)
            if flights is None:
                flights = _FLIGHTS[reader] = _Flights()
        except TypeError:  # not weakly referenceable: nothing shared, still correct
            flights = _Flights()
    return flights


def _after_fork_in_child() -> None:
    # a lock held by a parent thread at fork time stays held forever in the child
    global _FLIGHTS, _FLIGHTS_LOCK
    _FLIGHTS, _FLIGHTS_LOCK = weakref.WeakKeyDictionary(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current(reader: SyncReader, profile: str, wait: float) -> Token:
    """``reader.get(profile)``; when another request just had the current token rejected
    (its 401 reported), wait up to ``wait`` for the replacement rather than fail this
    request before it is sent."""
    try:
        return reader.get(profile)
    except TokenUnavailable as exc:
        if exc.reason != "rejected" or wait <= 0:
            raise
    return reader.get(profile, wait=wait)


async def current_async(reader: SyncReader | AsyncReader, profile: str,
                        wait: float = 0.0) -> Token:
    """:func:`current` from async code, off the event loop for a sync reader."""
    if not is_async_reader(reader):
        sync: SyncReader = reader  # type: ignore[assignment]
        return await asyncio.to_thread(current, sync, profile, wait)
    aio: AsyncReader = reader  # type: ignore[assignment]
    try:
        return await aio.get(profile)
    except TokenUnavailable as exc:
        if exc.reason != "rejected" or wait <= 0:
            raise
    return await aio.get(profile, wait=wait)


def _not_reported(profile: str, used: Token, exc: TokenUnavailable) -> None:
    log.warning("profile=%s: cannot report the rejected token (fingerprint=%s); waiting for "
                "a replacement all the same: %s", profile, used.fingerprint, exc)


def _none_in_time(profile: str, used: Token, wait: float, exc: TokenUnavailable) -> None:
    # the message names the profile and reason, never a token
    log.warning("profile=%s: the API answered 401 (fingerprint=%s) and no replacement "
                "came within %gs; returning the 401: %s", profile, used.fingerprint, wait, exc)
    return None


def _checked(profile: str, used: Token, new: Token) -> Token | None:
    if new.access_token == used.access_token:
        log.warning("profile=%s: the API answered 401 (fingerprint=%s) and the reader "
                    "still serves that token; returning the 401", profile, used.fingerprint)
        return None
    log.info("profile=%s: the API answered 401 (fingerprint=%s); retrying once with its "
             "replacement (fingerprint=%s)", profile, used.fingerprint, new.fingerprint)
    return new


def report_only(reader: SyncReader, profile: str, used: Token) -> None:
    """Report ``used`` rejected without retrying: the request body cannot be sent again
    (a stream already consumed), so the 401 goes back as it is."""
    try:
        reader.report_rejected(profile, used)
    except TokenUnavailable as exc:
        log.warning("profile=%s: cannot report the rejected token (fingerprint=%s): %s",
                    profile, used.fingerprint, exc)
    _unsendable(profile, used)


async def report_only_async(reader: SyncReader | AsyncReader, profile: str,
                            used: Token) -> None:
    """:func:`report_only` for async code."""
    if not is_async_reader(reader):
        sync: SyncReader = reader  # type: ignore[assignment]
        await asyncio.to_thread(report_only, sync, profile, used)
        return
    aio: AsyncReader = reader  # type: ignore[assignment]
    try:
        await aio.report_rejected(profile, used)
    except TokenUnavailable as exc:
        log.warning("profile=%s: cannot report the rejected token (fingerprint=%s): %s",
                    profile, used.fingerprint, exc)
    _unsendable(profile, used)


def _unsendable(profile: str, used: Token) -> None:
    log.warning("profile=%s: the API answered 401 (fingerprint=%s); the request body is a "
                "stream that cannot be sent again, so the 401 is returned", profile,
                used.fingerprint)


class BearerAuth:
    """A ``requests`` auth callable: ``Authorization: Bearer ...``, one retry on 401.

    Args:
        reader: reads the current token on every request.
        profile: the scope profile whose token to send.
        wait: seconds to wait on a 401 for the replacement (:data:`REPLACEMENT_WAIT`).
    """

    def __init__(self, reader: SyncReader, profile: str, *,
                 wait: float = REPLACEMENT_WAIT) -> None:
        self.reader = reader
        self.profile = profile
        self.wait = wait

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        token = current(self.reader, self.profile, self.wait)
        request.headers["Authorization"] = bearer(token)
        # the hook holds the token this request carries: by the time the answer comes
        # the reader may serve another one, and reporting that one would be wrong
        request.register_hook("response", _On401(self, token))  # type: ignore[no-untyped-call]
        return request

    def __repr__(self) -> str:
        return f"BearerAuth(profile={self.profile!r}, wait={self.wait:g})"


class _On401:
    """The response hook of one request (like requests' ``HTTPDigestAuth.handle_401``)."""

    __slots__ = ("auth", "used")

    def __init__(self, auth: BearerAuth, used: Token) -> None:
        self.auth = auth
        self.used = used

    def __repr__(self) -> str:
        return f"<BearerAuth 401 hook profile={self.auth.profile!r}>"

    def __call__(self, response: Response, **kwargs: Any) -> Response:
        request = response.request
        # a redirect to another host drops the header: that 401 says nothing of our
        # token, and a retry would hand the replacement to that host
        if response.status_code != 401 or \
                request.headers.get("Authorization") != bearer(self.used):
            return response
        from requests.cookies import extract_cookies_to_jar

        # read the body and release the connection, so the retry can reuse it and the
        # caller can still read the 401 should it come back
        response.content  # noqa: B018
        response.close()
        auth = self.auth
        if not _rewind(request):
            report_only(auth.reader, auth.profile, self.used)
            return response
        new_token = replacement(auth.reader, auth.profile, self.used, auth.wait)
        if new_token is None:
            return response
        retry = request.copy()
        # copy() shares the hooks dict: the retry must not carry this hook (one retry)
        retry.hooks = {event: [h for h in hooks if h is not self]
                       for event, hooks in request.hooks.items()}
        jar = retry._cookies  # type: ignore[attr-defined]
        extract_cookies_to_jar(jar, request, response.raw)  # type: ignore[no-untyped-call]
        retry.prepare_cookies(jar)
        retry.headers["Authorization"] = bearer(new_token)
        answer: Response = response.connection.send(retry, **kwargs)
        answer.history.append(response)
        answer.request = retry
        return answer


def _rewind(request: PreparedRequest) -> bool:
    """Put a file-like body back where it started; False when it cannot be resent."""
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return True
    position = getattr(request, "_body_position", None)  # set by requests for files
    seek = getattr(body, "seek", None)
    if isinstance(position, int) and seek is not None:
        try:
            seek(position)
        except OSError:
            return False
        return True
    return False
