"""The token endpoint client: one client-credentials POST, validated.

A few small functions in the manner of google-auth's ``oauth2/_client.py``:
build the form, send it, turn the answer into an :class:`IssuedToken` or a
:class:`~token_worker.exceptions.TokenRequestError`, and decide on its own
whether an error is worth retrying. Response bodies never reach an exception
or a log: a careless server may echo the request (and so the secret) back.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from ._version import __version__
from .config import ClientSettings
from .exceptions import ConfigError, TokenRequestError

__all__ = ["IssuedToken", "TokenClient", "can_retry", "parse_retry_after"]

log = logging.getLogger("token_worker.client")

USER_AGENT = f"token_worker/{__version__} (+requests/{requests.__version__})"
# OAuth error codes are short snake_case words; anything else is not echoed
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# RFC 6749 5.2 codes that mean "this will not work until someone changes something"
_PERMANENT = {"invalid_client", "invalid_scope", "invalid_grant", "invalid_request",
              "unauthorized_client", "unsupported_grant_type", "access_denied"}


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A validated endpoint answer. ``expires_in`` is seconds from the request."""

    access_token: str = field(repr=False)
    expires_in: float
    token_type: str
    scopes: tuple[str, ...]


def can_retry(status: int | None, error: str) -> bool:
    """Whether a failed request may succeed if simply tried again soon.

    Timeouts, connection errors, 5xx and 429 may; a refused client, scope or grant,
    a 401 and a malformed success will not until someone changes something.
    """
    if status is None:
        return error in {"timeout", "connection_error"}
    if status == 429 or status >= 500:
        return error not in _PERMANENT
    return error == "temporarily_unavailable"


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else None


def _malformed(client_id: str, what: str) -> TokenRequestError:
    return TokenRequestError(
        f"token request for client {client_id}: malformed response: {what}",
        error="malformed_response", status=200, retryable=False,
    )


def parse_token_response(
    response: requests.Response, client_id: str, scopes: Sequence[str]
) -> IssuedToken:
    """Validate a 200 answer. Raises TokenRequestError (not retryable) on any defect."""
    try:
        body = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "unknown").split(";")[0]
        raise _malformed(client_id, f"body is not JSON (content-type {kind})") from None
    if not isinstance(body, dict):
        raise _malformed(client_id, "body is not a JSON object")
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        raise _malformed(client_id, "access_token missing or empty")
    raw_expires: Any = body.get("expires_in")
    try:
        expires_in = float(raw_expires) if not isinstance(raw_expires, bool) else math.nan
    except (TypeError, ValueError):
        expires_in = math.nan
    if not math.isfinite(expires_in) or expires_in <= 0:
        raise _malformed(client_id, "expires_in is not a positive number")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _malformed(client_id, "token_type is not Bearer")
    granted_raw = body.get("scope", " ".join(scopes))  # RFC 6749 5.1: omitted = as requested
    if not isinstance(granted_raw, str):
        raise _malformed(client_id, "scope is not a string")
    granted = tuple(granted_raw.split())
    missing = [s for s in scopes if s not in granted]
    if missing:
        raise _malformed(client_id, f"scopes not granted: {' '.join(missing)}")
    return IssuedToken(access_token=access_token, expires_in=expires_in,
                       token_type="Bearer", scopes=granted)  # noqa: S106 (a type name)


def error_from_response(response: requests.Response, client_id: str) -> TokenRequestError:
    """Map a non-200 answer to a TokenRequestError, using only status, code and headers."""
    status = response.status_code
    code = _error_code(response)
    if code is None:
        code = ("rate_limited" if status == 429 else "server_error" if status >= 500
                else "unauthorized" if status == 401 else f"http_{status}")
    return TokenRequestError(
        f"token request for client {client_id} failed: HTTP {status} {code}",
        error=code, status=status, retryable=can_retry(status, code),
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


class TokenClient:
    """Requests client tokens from one token endpoint over one pooled session."""

    def __init__(
        self,
        token_url: str,
        audience: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.token_url = token_url
        self.audience = audience or token_url
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def __repr__(self) -> str:
        return f"TokenClient(token_url={self.token_url!r}, timeout={self.timeout!r})"

    def close(self) -> None:
        self.session.close()

    def _form(self, client: ClientSettings, scopes: Sequence[str]) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_id": client.client_id,
            "scope": " ".join(scopes),
            "audience": self.audience,
        }
        if client.certificate_file:
            from .credentials import ASSERTION_TYPE, build_assertion, load_certificate

            cert = load_certificate(client.certificate_file)
            form["client_assertion_type"] = ASSERTION_TYPE
            # aud is the token URL (contract), whatever the form's audience says
            form["client_assertion"] = build_assertion(client.client_id, self.token_url, cert)
        else:
            form["client_secret"] = client.read_secret().get_secret_value()
        return form

    def request_token(self, client: ClientSettings, scopes: Sequence[str]) -> IssuedToken:
        """Make one token request.

        Raises:
            TokenRequestError: the endpoint failed or answered something unusable.
            ConfigError: the client's credentials cannot be read right now.
        """
        if not scopes:
            raise ConfigError(["scopes: must not be empty"])
        form = self._form(client, scopes)
        started = time.monotonic()
        try:
            response = self.session.post(
                self.token_url, data=form, timeout=self.timeout,
                headers={"Accept": "application/json"},
            )
        except requests.Timeout:
            raise TokenRequestError(
                f"token request for client {client.client_id} timed out after {self.timeout:g}s",
                error="timeout", retryable=True,
            ) from None
        except requests.RequestException as exc:
            raise TokenRequestError(
                f"token request for client {client.client_id} failed: cannot reach "
                f"{self.token_url} ({type(exc).__name__})",
                error="connection_error", retryable=True,
            ) from None
        finally:
            form.clear()
        elapsed = time.monotonic() - started
        log.debug("token endpoint answered client_id=%s status=%s duration=%.3fs",
                  client.client_id, response.status_code, elapsed)
        with response:
            if response.status_code != 200:
                raise error_from_response(response, client.client_id)
            return parse_token_response(response, client.client_id, scopes)

