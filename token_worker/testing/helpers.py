"""Small waits and ports for tests, benchmarks and the demo."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["free_port", "free_ports", "port_in_use", "timed_wait", "wait_until"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int, bus: bool = False) -> list[int]:
    """Distinct free ports; with ``bus``, ones whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        wanted = {port, port + 10000} if bus else {port}
        if wanted & {6379, *ports, *(p + 10000 for p in ports)}:
            continue
        try:
            if bus:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10000))  # OverflowError above 65535
        except (OSError, OverflowError):
            continue
        ports.append(port)
    return ports


def port_in_use(port: int) -> bool:
    """Whether something else holds ``port`` on 127.0.0.1 the way redis-server binds it
    (``SO_REUSEADDR``: a listener or a live connection counts, ``TIME_WAIT`` does not).

    :func:`free_port` only says a port *was* free: between it and the bind, another
    process (a parallel test worker, any client's outgoing connection) may take it.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something true or ``timeout`` passes.

    Returns its last value (false when it timed out), so callers can assert on it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def timed_wait(done: Callable[[], bool], timeout: float, failure: str) -> float:
    """Seconds until ``done()``; RuntimeError(``failure``) after ``timeout``."""
    began = time.monotonic()
    if not wait_until(done, timeout):
        raise RuntimeError(failure)
    return time.monotonic() - began
