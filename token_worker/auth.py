"""Auth objects that put the reader's current token on outgoing requests.

Split from :mod:`token_worker.reader`; imports nothing heavy (requests is never
imported: ``requests`` calls the object with its request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .reader import TokenReader

__all__ = ["BearerAuth"]


class BearerAuth:
    """A ``requests`` auth callable: sets ``Authorization: Bearer ...`` per request."""

    def __init__(self, reader: TokenReader, profile: str) -> None:
        self.reader = reader
        self.profile = profile

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.reader.get_access_token(self.profile)}"
        return request

    def __repr__(self) -> str:
        return f"BearerAuth(profile={self.profile!r})"
