"""Stitch's rules for a client-credentials token request, as the emulator enforces them."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from .emulator_faults import bounded

MAX_EXPIRES_IN = 604800  # the lifetime bound clients enforce; beyond it use "bad_expires"


def checked_expires_in(seconds: object) -> float:
    """``seconds`` as a token lifetime.

    Raises:
        ValueError: not a finite number in (0, 604800]; use a "bad_expires" fault for
            answers a client must refuse.
    """
    return bounded("expires_in", seconds, 0, MAX_EXPIRES_IN, open_low=True)


def wire_number(value: float) -> int | float:
    # Stitch sends whole seconds as an int; fractional lifetimes exist only in tests.
    return int(value) if float(value).is_integer() else float(value)


def form_error(raw: dict[str, list[str]], form: dict[str, str], is_form: bool, *,
               client_ok: Callable[[str, dict[str, str]], bool], scopes: frozenset[str],
               audiences: set[str]) -> str | None:
    """The OAuth error code Stitch answers this token request with, or None if it is good.

    Args:
        raw: Every value of each form field.
        form: The first value of each form field.
        is_form: Whether the body was sent as a form.
        client_ok: ``(client_id, form) -> authenticated``; asked only once the grant
            type and the choice of credential are right.
        scopes: The scopes a client may request.
        audiences: The audience values accepted.
    """
    # OAuth forbids repeated parameters; refused like a wrong content type.
    if not is_form or any(len(values) > 1 for values in raw.values()):
        return "invalid_request"
    if form.get("grant_type") != "client_credentials":
        return "unsupported_grant_type"
    if "client_secret" in form and "client_assertion" in form:
        return "invalid_request"
    if not client_ok(form.get("client_id", ""), form):
        return "invalid_client"
    requested = form.get("scope", "").split()
    if not requested or not set(requested) <= scopes:
        return "invalid_scope"
    if not form.get("audience"):
        return "invalid_request"
    return None if form["audience"] in audiences else "invalid_grant"


def secret_ok(clients: dict[str, str] | None, client_id: str, secret: str) -> bool:
    """Whether ``secret`` is ``client_id``'s; ``clients`` None (dev mode) takes any."""
    if clients is None or not secret:
        return bool(secret)
    expected = clients.get(client_id)
    # Compare even for unknown ids so timing does not tell which ids exist.
    same = hmac.compare_digest(secret.encode(), (expected or "\0").encode())
    return expected is not None and same
