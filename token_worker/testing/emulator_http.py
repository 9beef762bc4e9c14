"""The emulator's HTTP side: reply shapes, request parsing, the server and its handler.

The handler only moves bytes; what to answer is decided by the :class:`App` it serves
(:class:`token_worker.testing.emulator.Emulator`), so this module never imports it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

# One logger for the whole emulator: the demo quiets it and tests capture it by this name.
log = logging.getLogger("token_worker.emulator")

TOKEN_PATH = "/connect/token"  # noqa: S105 - a URL path, not a password
MAX_REQUEST_BYTES = 1024 * 1024  # a token form is a few hundred bytes
_CONTENT_LENGTH = re.compile(r"[0-9]{1,7}")
_FORM_TYPE = "application/x-www-form-urlencoded"

# (status, content type, body, extra headers)
Reply = tuple[int, str, bytes, dict[str, str]]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 section 5.1


def json_reply(status: int, obj: object, headers: dict[str, str] | None = None) -> Reply:
    return status, "application/json", json.dumps(obj).encode(), {**_NO_STORE, **(headers or {})}


def html_reply(status: int, body: bytes) -> Reply:
    return status, "text/html; charset=utf-8", b"<html><body>" + body + b"</body></html>", {}


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, list[str]], dict[str, str],
                                                        bool]:
    """(every value of each field, first value of each field, whether it was a form)."""
    is_form = content_type.split(";")[0].strip().lower() == _FORM_TYPE
    raw = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if is_form else {}
    return raw, {key: values[0] for key, values in raw.items()}, is_form


class App(Protocol):
    """What the handler needs from the emulator it serves."""

    _request: threading.local  # per handler thread: Host header seen, trickle setting
    _stopping: threading.Event

    def _token(self, content_type: str, body: bytes, host: str) -> Reply | None: ...

    def _api(self, authorization: str) -> Reply: ...

    def _control(self, method: str, path: str, body: bytes) -> Reply: ...


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler sleeping in a "timeout" fault must not block stop()

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.emulator = app
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-latency are expected; keep tracebacks off stderr.
        log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "StitchEmulator/1.0"

    def do_POST(self) -> None:
        emu, path = self.server.emulator, urlsplit(self.path).path
        emu._request.trickle = None
        lengths = self.headers.get_all("Content-Length") or ["0"]
        # read(-1) would wait for EOF and a huge one for bytes that never come: refuse both
        if len(lengths) != 1 or not _CONTENT_LENGTH.fullmatch(lengths[0].strip()) or \
                int(lengths[0]) > MAX_REQUEST_BYTES:
            self.close_connection = True  # the unread body must not parse as a request
            return self._send(json_reply(400, {"error": "invalid_request"}))
        body = self.rfile.read(int(lengths[0]))
        if path == TOKEN_PATH and self.command == "POST":
            ctype, host = self.headers.get("Content-Type", ""), self.headers.get("Host", "")
            return self._send(emu._token(ctype, body, host))
        if path == TOKEN_PATH:
            return self._send(json_reply(405, {"error": "invalid_request"}, {"Allow": "POST"}))
        if path in ("/api", "/graphql"):
            return self._send(emu._api(self.headers.get("Authorization", "")))
        if path.startswith("/_emulator/"):
            return self._send(emu._control(self.command, path, body))
        return self._send(json_reply(404, {"error": "not_found"}))

    do_GET = do_POST

    def _send(self, reply: Reply | None) -> None:
        if reply is None:  # "timeout" fault: hang up without an answer
            self.close_connection = True
            return
        status, content_type, payload, headers = reply
        trickle = getattr(self.server.emulator._request, "trickle", None)
        self._trickle_head = trickle is not None and trickle[1] in ("all", "headers")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if trickle is not None and trickle[1] in ("all", "body"):
            self._drip(payload)
        else:
            self.wfile.write(payload)

    def flush_headers(self) -> None:
        if getattr(self, "_trickle_head", False):
            buffered: list[bytes] = getattr(self, "_headers_buffer", [])
            head = b"".join(buffered)
            buffered.clear()
            self._drip(head)
        else:
            super().flush_headers()

    def _drip(self, data: bytes) -> None:
        trickle = self.server.emulator._request.trickle
        interval = trickle[0] if trickle else 0.0
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            if self.server.emulator._stopping.wait(interval):
                self.close_connection = True
                raise ConnectionAbortedError("emulator stopping")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Path only: a confused client might put a secret in the query string.
        log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # Template only: http.server's error messages quote the raw request line.
        log.debug("http.server: %s", format)
