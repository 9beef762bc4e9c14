"""The token endpoint client: one client-credentials POST, validated.

A few small functions in the manner of google-auth's ``oauth2/_client.py``:
build the form, send it, turn the answer into an :class:`IssuedToken` or a
:class:`~token_worker.exceptions.TokenRequestError`, and decide on its own
whether an error is worth retrying. Response bodies never reach an exception
or a log: a careless server may echo the request (and so the secret) back.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from ._version import __version__
from .config import ClientSettings
from .deadline import BodyTooLarge, Deadline, install, read_capped
from .exceptions import ConfigError, TokenRequestError

__all__ = ["IssuedToken", "TokenClient", "can_retry", "parse_retry_after"]

log = logging.getLogger("token_worker.client")

USER_AGENT = f"token_worker/{__version__} (+requests/{requests.__version__})"
# OAuth error codes are short snake_case words; anything else is not echoed
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTENT_TYPE = re.compile(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,60}")
MAX_BODY_BYTES = 64 * 1024  # a token answer is a few hundred bytes
MAX_EXPIRES_IN = 604800  # a week: the contract's bound; beyond it is a broken server
MAX_TOKEN_CHARS = 8192
MAX_SCOPE_CHARS = 4096
# Printable ASCII without space: a token goes verbatim into an Authorization header
_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_CHARS}}}")
_SCOPE = re.compile(rf"[\x20-\x7e]{{0,{MAX_SCOPE_CHARS}}}")
# expires_in sent as a string: plain decimal only (float() would take "nan", "1_000")
_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,12})?(?:[eE][+-]?[0-9]{1,3})?")
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


def _load_json(body: bytes) -> Any:
    """Parsed JSON, or None when the body is not JSON (deep nesting included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _error_code(body: bytes) -> str | None:
    parsed = _load_json(body)
    code = parsed.get("error") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _malformed(client_id: str, what: str, status: int | None = 200) -> TokenRequestError:
    return TokenRequestError(
        f"token request for client {client_id}: malformed response: {what}",
        error="malformed_response", status=status, retryable=False,
    )


def _expires_in(raw: Any) -> float | None:
    """``expires_in`` as seconds when it is a number in (0, MAX_EXPIRES_IN], else None."""
    if isinstance(raw, str) and _NUMBER.fullmatch(raw):
        raw = float(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        seconds = float(raw)
    except OverflowError:  # an int too big for a float
        return None
    return seconds if math.isfinite(seconds) and 0 < seconds <= MAX_EXPIRES_IN else None


def parse_token_response(
    body: bytes, content_type: str, client_id: str, scopes: Sequence[str]
) -> IssuedToken:
    """Validate a 200 answer. Raises TokenRequestError (not retryable) on any defect.

    Messages say what is wrong, never what the body held.
    """
    parsed = _load_json(body)
    if parsed is None:
        kind = content_type.split(";")[0].strip().lower()
        kind = kind if _CONTENT_TYPE.fullmatch(kind) else "unknown"
        raise _malformed(client_id, f"body is not JSON (content-type {kind})")
    if not isinstance(parsed, dict):
        raise _malformed(client_id, "body is not a JSON object")
    access_token = parsed.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        raise _malformed(client_id, "access_token missing or empty")
    if not _TOKEN.fullmatch(access_token):
        raise _malformed(client_id, f"access_token is not 1-{MAX_TOKEN_CHARS} printable "
                                    "ASCII characters")
    expires_in = _expires_in(parsed.get("expires_in"))
    if expires_in is None:
        raise _malformed(client_id, f"expires_in is not a number in (0, {MAX_EXPIRES_IN}]")
    token_type = parsed.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _malformed(client_id, "token_type is not Bearer")
    granted_raw = parsed.get("scope", " ".join(scopes))  # RFC 6749 5.1: omitted = as requested
    if not isinstance(granted_raw, str) or not _SCOPE.fullmatch(granted_raw):
        raise _malformed(client_id, f"scope is not a string of at most {MAX_SCOPE_CHARS} "
                                    "printable ASCII characters")
    granted = tuple(granted_raw.split())
    missing = [s for s in scopes if s not in granted]
    if missing:
        raise _malformed(client_id, f"scopes not granted: {' '.join(missing)}")
    return IssuedToken(access_token=access_token, expires_in=expires_in,
                       token_type="Bearer", scopes=granted)  # noqa: S106 (a type name)


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, client_id: str
) -> TokenRequestError:
    """Map a non-200 answer to a TokenRequestError, using only status, code and headers."""
    code = _error_code(body)
    if code is None:
        code = ("rate_limited" if status == 429 else "server_error" if status >= 500
                else "unauthorized" if status == 401 else f"http_{status}")
    return TokenRequestError(
        f"token request for client {client_id} failed: HTTP {status} {code}",
        error=code, status=status, retryable=can_retry(status, code),
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )


class TokenClient:
    """Requests client tokens from one token endpoint over one pooled session.

    Each request has a total deadline of ``timeout`` seconds (connect, send, headers and
    body), enforced by :mod:`token_worker.deadline`; redirects are never followed.
    """

    def __init__(
        self,
        token_url: str,
        audience: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive finite number of seconds")
        self.token_url = token_url
        self.audience = audience or token_url
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if not install(self.session, token_url):
            log.warning("session has its own adapter for the token URL: the request "
                        "deadline covers the body only")

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

    def _timed_out(self, client_id: str) -> TokenRequestError:
        return TokenRequestError(
            f"token request for client {client_id} timed out after {self.timeout:g}s",
            error="timeout", retryable=True,
        )

    def _unreachable(self, client_id: str, exc: BaseException) -> TokenRequestError:
        return TokenRequestError(
            f"token request for client {client_id} failed: cannot reach "
            f"{self.token_url} ({type(exc).__name__})",
            error="connection_error", retryable=True,
        )

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
        with Deadline(self.timeout) as deadline:
            try:
                # never follow a redirect: it would re-send the form, secret and all
                response = self.session.post(
                    self.token_url, data=form, allow_redirects=False, stream=True,
                    timeout=(deadline.remaining(), deadline.remaining()),
                    headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                )
            except requests.Timeout:
                raise self._timed_out(client.client_id) from None
            except requests.RequestException as exc:
                if deadline.passed():  # the watchdog shut the socket down
                    raise self._timed_out(client.client_id) from None
                raise self._unreachable(client.client_id, exc) from None
            finally:
                form.clear()
            with response:
                return self._answer(response, deadline, client.client_id, scopes, started)

    def _answer(self, response: requests.Response, deadline: Deadline, client_id: str,
                scopes: Sequence[str], started: float) -> IssuedToken:
        status = response.status_code
        log.debug("token endpoint answered client_id=%s status=%s duration=%.3fs",
                  client_id, status, time.monotonic() - started)
        if 300 <= status < 400:
            # the Location is not quoted: it may carry anything the server chose
            raise TokenRequestError(
                f"token request for client {client_id} failed: HTTP {status} redirect refused",
                error="redirect_refused", status=status, retryable=False,
            )
        try:
            body = read_capped(response, MAX_BODY_BYTES, deadline)
        except (BodyTooLarge, TimeoutError, requests.RequestException,
                urllib3.exceptions.HTTPError, OSError) as exc:
            if status != 200:
                body = b""  # the status alone still says what went wrong
            elif isinstance(exc, BodyTooLarge):
                raise _malformed(client_id, str(exc)) from None
            elif isinstance(exc, TimeoutError) or deadline.passed():
                raise self._timed_out(client_id) from None
            else:
                raise self._unreachable(client_id, exc) from None
        if status != 200:
            raise error_from_response(status, response.headers, body, client_id)
        return parse_token_response(body, response.headers.get("Content-Type", ""),
                                    client_id, scopes)
