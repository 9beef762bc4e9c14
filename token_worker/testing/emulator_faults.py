"""The emulator's fault modes: which exist, how a spec is checked, which one fires, and
the answers given without looking at the request."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from .emulator_http import Reply, html_reply, json_reply

# Faults answered without looking at the request: fault spec -> reply.
_CANNED: dict[str, Callable[[dict[str, Any]], Reply]] = {
    "http_error": lambda f: json_reply(int(f.get("status", 500)), {"error": "server_error"}),
    "rate_limit": lambda f: json_reply(429, {"error": "rate_limited"},
                                       {"Retry-After": str(int(f.get("retry_after", 1)))}),
    "oauth_error": lambda f: json_reply(400, {"error": str(f.get("error", "invalid_grant"))}),
    "unauthorized": lambda f: json_reply(401, {"error": "invalid_client"}),
    "malformed_json": lambda f: (200, "application/json", b'{"access_token": "x", ', {}),
    "html": lambda f: html_reply(200, b"<h1>Stitch</h1><p>Please sign in.</p>"),
}
# Faults that bend a success answer; all but missing_token still hand out a real token, so
# leak tests can find it and /api accepts it.
TOKEN_SHAPED = frozenset({"bad_expires", "wrong_token_type", "scope_not_granted",
                          "expires_in_string", "missing_token", "same_token"})
FAULT_MODES: frozenset[str] = frozenset(_CANNED) | TOKEN_SHAPED | {
    "latency", "timeout", "echo", "trickle"}
NO_TOKEN = frozenset(_CANNED) | {"missing_token"}  # 200 answers that carry no token
TRICKLE_PARTS = ("all", "headers", "body")  # "trickle": which part goes out byte by byte
MAX_DELAY_SECONDS = 3600.0
# Numeric fault fields: name -> (lowest, highest) accepted
_FAULT_NUMBERS = {"status": (100, 599), "retry_after": (0, 86400),
                  "seconds": (0, MAX_DELAY_SECONDS), "interval": (0, 10)}


def bounded(name: str, value: object, low: float, high: float, *,
            open_low: bool = False) -> float:
    """``value`` as a finite float within the bounds, else ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number") from None
    if not math.isfinite(number) or number > high or number < low or (
            open_low and number == low):
        raise ValueError(f"{name} must be a finite number in {'(' if open_low else '['}"
                         f"{low:g}, {high:g}]")
    return number


def checked_faults(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``faults`` (their counts go down as they fire), each spec checked.

    Raises:
        ValueError: Unknown mode, or a bad count, probability or numeric field.
    """
    specs = []
    for spec in faults:
        if not isinstance(spec, dict) or spec.get("mode") not in FAULT_MODES:
            raise ValueError(f"bad fault spec {spec!r}; modes: {sorted(FAULT_MODES)}")
        count, probability = spec.get("count"), spec.get("probability", 1.0)
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ValueError(f"fault count must be a non-negative int or null: {count!r}")
        if not isinstance(probability, int | float) or not 0 <= probability <= 1:
            raise ValueError(f"fault probability must be within [0, 1]: {probability!r}")
        for name, (low, high) in _FAULT_NUMBERS.items():
            if name in spec:
                bounded(f"fault {name}", spec[name], low, high)
        if spec.get("part", "all") not in TRICKLE_PARTS:
            raise ValueError(f"fault part must be one of {', '.join(TRICKLE_PARTS)}")
        specs.append(dict(spec))
    return specs


def pick_fault(specs: list[dict[str, Any]], rng: random.Random) -> dict[str, Any] | None:
    """The first spec that applies to this call, its count taken down; caller holds a lock."""
    for spec in specs:
        count = spec.get("count")
        if (count is None or count > 0) and rng.random() < spec.get("probability", 1):
            if count is not None:
                spec["count"] = count - 1
            return spec
    return None


def fixed_reply(spec: dict[str, Any], body: bytes) -> Reply | None:
    """The answer of a fault that ignores the request, else None."""
    mode = spec.get("mode")
    if mode in _CANNED:
        return _CANNED[mode](spec)
    if mode == "echo":
        # A careless server reflecting the request, secret and all: for leak tests.
        return html_reply(500, b"<h1>500 Internal Server Error</h1><pre>" + body + b"</pre>")
    return None


def lifetime(expires_in: object) -> float:
    """How long /api accepts a token minted with this (possibly absurd) ``expires_in``."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return 0.0
    try:
        seconds = float(expires_in)
    except OverflowError:  # a "bad_expires" int beyond any float
        return 1e9
    return min(seconds, 1e9) if math.isfinite(seconds) or seconds > 0 else 0.0


def bend(payload: dict[str, Any], scope: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A freshly minted success payload as the fault in ``spec`` distorts it."""
    mode = spec.get("mode")
    if mode == "scope_not_granted":
        other = "" if scope == "client_imageupload" else "client_imageupload"
        payload["scope"] = spec.get("scope", other)
    elif mode == "expires_in_string":
        payload["expires_in"] = str(payload["expires_in"])
    return payload
