"""The tokens an emulator has issued: minting them, and the fake API that checks them."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from .emulator_faults import lifetime
from .emulator_http import Reply, json_reply

_UNAUTHENTICATED = {"errors": [{"message": "UNAUTHENTICATED: Token is expired or malformed"}]}


class TokenBook:
    """Issued tokens in order (:attr:`issued`), and those the fake API still accepts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.issued: list[str] = []
        self._live: dict[str, tuple[float, str]] = {}  # token -> (monotonic expiry, scope)

    def mint(self, scope: str, expires_in: Any, mode: object) -> dict[str, Any]:
        """A success payload for ``scope``; ``mode`` "same_token" hands back a live token
        of that scope, "missing_token" leaves the token out."""
        payload = {"expires_in": expires_in, "scope": scope,
                   "token_type": "mac" if mode == "wrong_token_type" else "Bearer"}
        with self._lock:
            cached = [t for t, (_, sc) in self._live.items() if sc == scope]
            if mode == "same_token" and cached:
                # a server that hands back the token it already issued, with what is left
                token = payload["access_token"] = cached[-1]
                payload["expires_in"] = max(1, int(self._live[token][0] - time.monotonic()))
            elif mode != "missing_token":
                token = payload["access_token"] = "emu_" + secrets.token_urlsafe(32)
                self._live[token] = (time.monotonic() + lifetime(expires_in), scope)
                self.issued.append(token)
        return payload

    def revoke(self, access_token: str) -> None:
        with self._lock:
            self._live.pop(access_token, None)

    def api_reply(self, authorization: str) -> Reply:
        """The fake API's answer: 401 unless the bearer token is live."""
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            entry = self._live.get(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None or entry[0] <= time.monotonic():
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return json_reply(401, _UNAUTHENTICATED, challenge)
        return json_reply(200, {"data": {"ok": True, "scope": entry[1]}})
