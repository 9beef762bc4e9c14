"""A total deadline for one HTTP request made with requests, even against a trickling server.

requests' ``timeout`` bounds each socket operation, not the request: a server sending one
byte a second never trips it. :class:`Deadline` arms a watchdog timer that shuts down the
sockets its request uses once the time is up, and :class:`DeadlineAdapter` tells it which
sockets those are (new and pooled connections, http and https alike, TLS handshake
included). Shutting a socket down wakes the blocked read at once; the caller then checks
:attr:`Deadline.expired` to tell a deadline from a real connection error.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Iterator
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import requests
from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["BodyTooLarge", "Deadline", "DeadlineAdapter", "install", "read_capped"]

CHUNK = 8192
_active: ContextVar[Deadline | None] = ContextVar("token_worker_deadline", default=None)


class Deadline:
    """Context manager: a watchdog that shuts the request's sockets down at the deadline.

    Only the thread that entered it registers sockets (through the context variable), so
    concurrent requests on one session never shut down each other's connections.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        # fd of the connection's socket -> our own dup of it: shutdown(2) acts on the
        # socket, not the fd, and a dup stays valid after TLS detaches the original object
        self._socks: dict[int, socket.socket] = {}
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.name = "token-worker-deadline"
        self._timer.daemon = True
        self._token: Token[Deadline | None] | None = None

    def remaining(self) -> float:
        return max(0.001, self.deadline - time.monotonic())

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.deadline

    def watch(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down at the deadline (at once when it has passed already)."""
        if sock is None:
            return
        try:
            fd = sock.fileno()
            dup = socket.fromfd(fd, sock.family, sock.type)
        except OSError:
            return
        with self._lock:
            old = self._socks.pop(fd, None)
            self._socks[fd] = dup
            if self.expired:
                _shutdown(dup)
        if old is not None:
            old.close()

    def forget(self, sock: socket.socket | None) -> None:
        """Stop watching ``sock``: its connection went back to the pool for others."""
        if sock is None:
            return
        try:
            fd = sock.fileno()
        except OSError:
            return
        with self._lock:
            dup = self._socks.pop(fd, None)
        if dup is not None:
            dup.close()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for dup in self._socks.values():
                _shutdown(dup)

    def __enter__(self) -> Deadline:
        self._token = _active.set(self)
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()
        self._timer.join()  # never leave a watchdog thread behind
        if self._token is not None:
            _active.reset(self._token)
        with self._lock:
            dups, self._socks = list(self._socks.values()), {}
        for dup in dups:
            dup.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its owner


class _HTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = _active.get()
        if deadline is not None:
            deadline.watch(sock)  # before TLS, so a trickled handshake is cut short too
        return sock


class _HTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = _active.get()
        if deadline is not None:
            deadline.watch(sock)
        return sock


class _PoolMixin:
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        deadline = _active.get()
        if deadline is not None:
            deadline.watch(conn.sock)  # a reused keep-alive connection; new ones: _new_conn
        return conn

    def _put_conn(self, conn: Any) -> None:
        deadline = _active.get()
        if deadline is not None and conn is not None:
            deadline.forget(conn.sock)
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_PoolMixin, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_PoolMixin, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections report their sockets to the active :class:`Deadline`.

    SOCKS proxies keep urllib3's own pools: there only the body read is bounded.
    """

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def install(session: requests.Session, url: str) -> bool:
    """Mount a :class:`DeadlineAdapter` for ``url`` on ``session`` unless one serves it.

    A plain HTTPAdapter is replaced (keeping its retry and pool settings); an adapter of the
    caller's own class is kept, and False returned: its requests get the body deadline only.
    """
    current = session.get_adapter(url)
    if isinstance(current, DeadlineAdapter):
        return True
    if type(current) is not HTTPAdapter:
        return False
    adapter = DeadlineAdapter(
        pool_connections=getattr(current, "_pool_connections", DEFAULT_POOLSIZE),
        pool_maxsize=getattr(current, "_pool_maxsize", DEFAULT_POOLSIZE),
        max_retries=current.max_retries,
        pool_block=getattr(current, "_pool_block", DEFAULT_POOLBLOCK))
    scheme, _, rest = url.partition("://")
    session.mount(f"{scheme}://{rest.split('/', 1)[0]}/", adapter)
    return True


class BodyTooLarge(ValueError):
    """The answer's body is bigger than the cap (or in an encoding we do not decode)."""


def read_capped(response: requests.Response, limit: int, deadline: Deadline) -> bytes:
    """The body of a ``stream=True`` response, at most ``limit`` bytes after decoding.

    Never holds more than ``limit`` plus one chunk. gzip and deflate are decoded here, with
    a bound, rather than by urllib3, so a small compressed bomb cannot inflate past it.

    Raises:
        BodyTooLarge: the body, or its Content-Length, exceeds ``limit``.
        TimeoutError: the deadline passed while reading.
        requests.RequestException, urllib3 errors, OSError: the connection broke.
    """
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise BodyTooLarge("body in an unsupported content encoding")
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes")
    # wbits 32+: zlib or gzip header, detected
    decoder = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding not in ("", "identity") \
        else None
    body, seen = bytearray(), 0
    for chunk in _chunks(response):
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, limit + 1 - len(body))
            except zlib.error:
                raise BodyTooLarge("compressed body does not decode") from None
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        if deadline.passed():
            raise TimeoutError
    if decoder is not None:
        body += decoder.flush()
        if len(body) > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
    if deadline.passed():  # a shut-down socket can look like a short, complete body
        raise TimeoutError
    return bytes(body)


def _chunks(response: requests.Response) -> Iterator[bytes]:
    while True:
        chunk = response.raw.read(CHUNK, decode_content=False)
        if not chunk:
            return
        yield chunk
