"""aiohttp client middleware: ``Authorization: Bearer ...`` and one retry on a 401.

Imported only by code that uses aiohttp (>= 3.12, ``ClientSession(middlewares=...)``)::

    session = aiohttp.ClientSession(
        middlewares=[bearer_middleware(reader, "payments", origin="https://api.stitch.money")])

The 401 behaviour is described in :mod:`token_worker.auth`. aiohttp runs client
middlewares on every redirect hop, after it has dropped the header for another
origin; so the token goes to one origin only: ``origin``, or else the origin of the
first request the middleware sees (as aiohttp's own ``DigestAuthMiddleware`` does).
"""

from __future__ import annotations

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from aiohttp.payload import Payload
from yarl import URL

from .auth import (
    REPLACEMENT_WAIT,
    AsyncReader,
    SyncReader,
    bearer,
    current_async,
    replacement_async,
    report_only_async,
)

__all__ = ["BearerMiddleware", "bearer_middleware"]


def bearer_middleware(reader: SyncReader | AsyncReader, profile: str,
                      wait: float = REPLACEMENT_WAIT, *,
                      origin: str | None = None) -> BearerMiddleware:
    """A client middleware putting ``profile``'s token on requests to one origin.

    Args:
        reader: an async reader (awaited) or a :class:`token_worker.TokenReader` (its
            blocking calls run in a worker thread).
        profile: the scope profile whose token to send.
        wait: seconds to wait on a 401 for the replacement.
        origin: the API's origin (``https://api.stitch.money``); requests elsewhere
            pass untouched. Default: the first request's origin.
    """
    return BearerMiddleware(reader, profile, wait=wait, origin=origin)


class BearerMiddleware:
    """See :func:`bearer_middleware`."""

    def __init__(self, reader: SyncReader | AsyncReader, profile: str, *,
                 wait: float = REPLACEMENT_WAIT, origin: str | None = None) -> None:
        self.reader = reader
        self.profile = profile
        self.wait = wait
        self.origin = URL(origin).origin() if origin is not None else None

    def __repr__(self) -> str:
        return (f"BearerMiddleware(profile={self.profile!r}, wait={self.wait:g}, "
                f"origin={str(self.origin) if self.origin else None!r})")

    async def __call__(self, request: ClientRequest,
                       handler: ClientHandlerType) -> ClientResponse:
        origin = request.url.origin()
        if self.origin is None:
            self.origin = origin  # before any await: the first caller anchors it
        if origin != self.origin:
            return await handler(request)
        used = await current_async(self.reader, self.profile, self.wait)
        request.headers[hdrs.AUTHORIZATION] = bearer(used)
        response = await handler(request)
        if response.status != 401:
            return response
        # read and release: the retry can reuse the connection, the caller can still
        # read this 401 should it come back
        await response.read()
        body = request.body
        if isinstance(body, Payload) and body.consumed:
            await report_only_async(self.reader, self.profile, used)
            return response
        new = await replacement_async(self.reader, self.profile, used, self.wait)
        if new is None:
            return response
        request.headers[hdrs.AUTHORIZATION] = bearer(new)
        return await handler(request)
