"""Every error token_worker raises, rooted at one class callers can catch.

::

    TokenWorkerError
    ├── ConfigError              invalid configuration; .problems lists each one
    ├── TokenRequestError        the token endpoint refused or failed; .retryable
    ├── StoreError               Redis refused a command, or holds what cannot be read
    │   └── StoreUnavailable     Redis could not be reached (connection, timeout)
    └── TokenUnavailable         a reader has no unexpired token for a profile

No message built here ever contains a token or a client secret: callers pass
fingerprints, error codes and HTTP statuses, never response bodies.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "StoreError",
    "StoreUnavailable",
    "TokenRequestError",
    "TokenUnavailable",
    "TokenWorkerError",
]


class TokenWorkerError(Exception):
    """Root of every error raised by token_worker."""


class ConfigError(TokenWorkerError):
    """The configuration is invalid.

    Attributes:
        problems: one line per problem, each naming the key path.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in self.problems))


class TokenRequestError(TokenWorkerError):
    """A token request failed.

    Attributes:
        error: the OAuth ``error`` code (``invalid_client`` ...), or a local code
            such as ``timeout``, ``connection_error``, ``malformed_response``.
        status: the HTTP status, or None when no answer arrived.
        retryable: whether trying again soon may succeed.
        retry_after: seconds the server asked us to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.error = error
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only arguments need help to survive pickling across processes
        return (_rebuild_request_error, (str(self), self.error, self.status, self.retryable,
                                         self.retry_after))


def _rebuild_request_error(
    message: str, error: str, status: int | None, retryable: bool, retry_after: float | None
) -> TokenRequestError:
    return TokenRequestError(
        message, error=error, status=status, retryable=retryable, retry_after=retry_after
    )


class StoreError(TokenWorkerError):
    """Redis refused a command, or held something token_worker cannot read.

    Every Redis error raised inside :class:`~token_worker.store.TokenStore` surfaces as
    this (the redis-py error is its ``__cause__``); its message names the server, never
    a key's value.
    """


class StoreUnavailable(StoreError):
    """Redis could not be reached: refused, timed out, or the connection dropped."""


class TokenUnavailable(TokenWorkerError):
    """No unexpired token is available for a profile.

    Attributes:
        profile: the profile asked for.
        reason: one of ``never_fetched``, ``expired``, ``redis_unreachable``,
            ``unknown_profile``, ``rejected``, ``encrypted``, ``unreadable``.
        last_error: the last refresh error recorded for the profile, if any.
    """

    def __init__(
        self, profile: str, reason: str, detail: str, last_error: str | None = None
    ) -> None:
        self.profile = profile
        self.reason = reason
        self.last_error = last_error
        message = f"no token for profile {profile!r}: {detail}"
        if last_error:
            message += f" (last refresh error: {last_error})"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_unavailable, (self.profile, self.reason, str(self), self.last_error))


def _rebuild_unavailable(
    profile: str, reason: str, message: str, last_error: str | None
) -> TokenUnavailable:
    err = TokenUnavailable.__new__(TokenUnavailable)
    err.profile, err.reason, err.last_error = profile, reason, last_error
    Exception.__init__(err, message)
    return err
