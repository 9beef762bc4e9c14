"""The emulator's JSON control API under ``/_emulator/``, for tests running it elsewhere."""

from __future__ import annotations

import json
from typing import Any, Protocol

from .emulator_http import Reply, json_reply


class Controlled(Protocol):
    """The emulator methods the control API drives."""

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def set_faults(self, faults: list[dict[str, Any]]) -> None: ...

    def set_expires_in(self, seconds: float) -> None: ...

    def set_latency(self, seconds: float) -> None: ...


def control_reply(emulator: Controlled, method: str, path: str, body: bytes) -> Reply:
    """Answer ``GET stats`` or ``POST faults|reset|config``; bad input is a 400, changing
    nothing that was not valid."""
    action = path.removeprefix("/_emulator/")
    if action not in ("stats", "faults", "reset", "config"):
        return json_reply(404, {"error": "not_found"})
    if method != ("GET" if action == "stats" else "POST"):
        return json_reply(405, {"error": "method_not_allowed"})
    if action == "stats":
        return json_reply(200, emulator.stats())
    try:
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        if action == "faults":
            emulator.set_faults(list(data.get("faults", [])))
        elif action == "reset":
            emulator.reset()
        if action == "config" and "expires_in" in data:
            emulator.set_expires_in(data["expires_in"])
        if action == "config" and "latency" in data:
            emulator.set_latency(data["latency"])
    except (ValueError, TypeError) as exc:
        return json_reply(400, {"error": "invalid_request", "error_description": str(exc)})
    return json_reply(200, {"ok": True})
