"""Real HTTP(S) servers on 127.0.0.1 that answer what a test programs, however hostile."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from . import pki

Body = bytes | Callable[[], Iterable[bytes]]


class Canned:
    """Answers every request with ``status``, ``headers`` and ``body``; records requests.

    ``body`` may be a callable yielding chunks (sent as they come, no Content-Length, the
    connection closed after), for endless or trickling answers.
    """

    def __init__(self, status: int = 200, body: Body = b"",
                 headers: dict[str, str] | None = None, *,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.status, self.body, self.headers = status, body, dict(headers or {})
        self.received: list[tuple[str, str, bytes]] = []
        self.sent_bytes = 0
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.canned = self  # type: ignore[attr-defined]
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/connect/token"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    def __enter__(self) -> Canned:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        canned: Canned = self.server.canned  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        canned.received.append((self.command, self.path, self.rfile.read(length)))
        self.send_response(canned.status)
        for name, value in canned.headers.items():
            self.send_header(name, value)
        if isinstance(canned.body, bytes):
            self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)
            return
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in canned.body():
                if canned.stopping.is_set():
                    return
                self.wfile.write(chunk)
                canned.sent_bytes += len(chunk)
        except OSError:
            pass  # the client hung up, as it should

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


def trickle(data: bytes, interval: float) -> Callable[[], Iterator[bytes]]:
    """A body callable sending ``data`` one byte every ``interval`` seconds."""
    def chunks() -> Iterator[bytes]:
        for i in range(len(data)):
            yield data[i:i + 1]
            time.sleep(interval)
    return chunks


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1 / localhost; the certificate is its own CA."""
    key = pki.rsa_key()
    cert = pki.certificate(key, "localhost", server=True, ca=True)
    return (pki.write(directory / "server.pem", pki.cert_pem(cert)),
            pki.write(directory / "server.key", pki.key_pem(key)))
