"""httpx auth: ``Authorization: Bearer ...`` from a reader, and one retry on a 401.

Imported only by code that uses httpx (the ``token_worker[httpx]`` extra). Works with
``httpx.Client`` and ``httpx.AsyncClient``; the 401 behaviour is described in
:mod:`token_worker.auth`. The 401 that led to a retry is in ``response.history``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from .auth import (
    REPLACEMENT_WAIT,
    AsyncReader,
    SyncReader,
    bearer,
    current,
    current_async,
    is_async_reader,
    replacement,
    replacement_async,
    report_only,
    report_only_async,
)
from .tokens import Token

__all__ = ["HttpxBearerAuth"]


class HttpxBearerAuth(httpx.Auth):
    """Sets the bearer header per request; on a 401, reports, waits, retries once.

    Args:
        reader: a :class:`token_worker.TokenReader` (``httpx.Client`` and
            ``httpx.AsyncClient``; in the async client its blocking calls run in a
            worker thread) or an async reader such as
            ``token_worker.aio.AsyncTokenReader`` (``httpx.AsyncClient`` only).
        profile: the scope profile whose token to send.
        wait: seconds to wait on a 401 for the replacement.
    """

    # neither body is read up front: uploads and downloads keep streaming; a 401's
    # (small) body is read before waiting, which hands its connection back to the pool
    requires_request_body = False
    requires_response_body = False

    def __init__(self, reader: SyncReader | AsyncReader, profile: str, *,
                 wait: float = REPLACEMENT_WAIT) -> None:
        self.reader = reader
        self.profile = profile
        self.wait = wait
        self._async_reader = is_async_reader(reader)

    def __repr__(self) -> str:
        return f"HttpxBearerAuth(profile={self.profile!r}, wait={self.wait:g})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                                  None]:
        if self._async_reader:
            raise TypeError(f"HttpxBearerAuth(profile={self.profile!r}) was given an async "
                            "reader, which httpx.Client cannot await: use it with "
                            "httpx.AsyncClient, or give httpx.Client a TokenReader")
        reader: SyncReader = self.reader  # type: ignore[assignment]
        used = current(reader, self.profile, self.wait)
        request.headers["Authorization"] = bearer(used)
        response = yield request
        if not _rejected(response, used):
            return
        response.read()
        if not _resendable(request):
            report_only(reader, self.profile, used)
            return
        new = replacement(reader, self.profile, used, self.wait)
        if new is not None:
            request.headers["Authorization"] = bearer(new)
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request,
                                                                              httpx.Response]:
        used = await current_async(self.reader, self.profile, self.wait)
        request.headers["Authorization"] = bearer(used)
        response = yield request
        if not _rejected(response, used):
            return
        await response.aread()
        if not _resendable(request):
            await report_only_async(self.reader, self.profile, used)
            return
        new = await replacement_async(self.reader, self.profile, used, self.wait)
        if new is not None:
            request.headers["Authorization"] = bearer(new)
            yield request


def _rejected(response: httpx.Response, used: Token) -> bool:
    """A 401 to the token we sent (a redirect to another origin drops the header:
    that answer says nothing of the token, and a retry would hand it the new one)."""
    return (response.status_code == 401
            and response.request.headers.get("Authorization") == bearer(used))


def _resendable(request: httpx.Request) -> bool:
    """Whether the body is in memory (bytes, form, JSON); a stream was sent already."""
    try:
        request.content  # noqa: B018
    except httpx.RequestNotRead:
        return False
    return True
