"""reader.py, what a reader may trust: expiry inside the value, send-time deadlines, the
per-profile min_ttl of from_config, fork safety and a single invalidator thread."""

from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from token_worker import TokenReader, TokenUnavailable
from token_worker.invalidation import THREAD_NAME, Invalidator
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import wait_until, write_config

KEY = "stitch:token:payments"


# -- the expiry inside the value wins over the key's TTL ---------------------------------

@pytest.mark.parametrize("read_path", ["function", "commands"])
def test_replayed_value_under_a_long_px_dies_at_its_own_expiry(
        redis_url: str, rds: redis.Redis, refresher: Refresher, emulator: Emulator,
        read_path: str) -> None:
    if read_path == "function":
        assert refresher.store.load_functions()
    emulator.set_expires_in(1)
    refresher.refresh_profile("payments")
    stored = rds.get(KEY)
    assert stored is not None
    # one reader decodes the value while it is good (the same-value fast path later),
    # one sees it for the first time only after the replay (the full decode)
    warm = TokenReader(redis_url, min_ttl=0)
    cold = TokenReader(redis_url, min_ttl=0)
    try:
        assert warm.get("payments").access_token == emulator.issued_tokens[-1]
        assert wait_until(lambda: not rds.exists(KEY), 5), "the key did not expire"
        # someone with write access SETs the old value back under an hour-long PX
        rds.set(KEY, stored, px=3_600_000)
        for reader in (warm, cold):
            with pytest.raises(TokenUnavailable) as info:
                reader.get("payments")
            assert info.value.reason == "expired"
            assert emulator.issued_tokens[-1] not in str(info.value)
    finally:
        warm.close()
        cold.close()


# -- deadlines err early: counted from when the read was sent ----------------------------

class DelayingProxy:
    """A TCP proxy to Redis that holds every reply ``delay`` seconds before passing it on
    (a slow network path, or a reader process descheduled while the answer waits)."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            held: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._pump, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, held),
                             daemon=True).start()
            threading.Thread(target=self._release, args=(held, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket,
              held: queue.Queue[tuple[float, bytes]] | None) -> None:
        try:
            while data := src.recv(65536):
                if held is None:
                    dst.sendall(data)
                else:
                    held.put((time.monotonic() + self.delay, data))
        except OSError:
            pass

    def _release(self, held: queue.Queue[tuple[float, bytes]], dst: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                due, data = held.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


def test_a_late_reply_makes_the_deadline_early_never_late(
        redis_url: str, rds: redis.Redis, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    delay = 0.5
    proxy = DelayingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]), delay)
    reader = TokenReader(f"redis://127.0.0.1:{proxy.port}/0", cache=False)
    try:
        # where the key's expiry falls on this host's monotonic clock (direct, fast link)
        before = time.monotonic()
        sec, usec = rds.time()
        after = time.monotonic()
        offset = (before + after) / 2 - (sec + usec / 1_000_000)
        expiry = rds.execute_command("PEXPIRETIME", KEY) / 1000 + offset
        # the first read also opens the connection (a few delayed round trips)
        for earliest in (expiry - 10 * delay, expiry - delay - 0.3):
            token = reader.get("payments")
            # before the fix: reply time + PTTL, i.e. ``delay`` past the real expiry
            assert token.deadline <= expiry + 0.02, token.deadline - expiry
            assert token.deadline >= earliest  # early by the delay, not absurdly so
    finally:
        reader.close()
        proxy.close()


# -- from_config picks a min_ttl per profile that leaves no gap --------------------------

def test_from_config_min_ttl_is_margin_minus_interval_minus_timeout(
        tmp_path: Path, redis_url: str, emulator: Emulator) -> None:
    extra = ('[profiles.slow]\nscopes = ["client_refund"]\nmargin_seconds = 900\n\n'
             '[profiles.tight]\nscopes = ["client_disbursement"]\nmargin_seconds = 1.5\n')
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        margin=5, interval=1, timeout=1, extra=extra)
    reader = TokenReader.from_config(str(path))
    explicit = TokenReader.from_config(str(path), min_ttl=2)
    plain = TokenReader(redis_url, min_ttl=7)
    try:
        assert reader.min_ttl_for("payments") == 3  # 5 - 1 - 1
        assert reader.min_ttl_for("slow") == 5  # capped at the default
        assert reader.min_ttl_for("tight") == 0  # no room at all: never negative
        assert explicit.min_ttl_for("payments") == explicit.min_ttl_for("slow") == 2
        assert plain.min_ttl == plain.min_ttl_for("payments") == 7
        plain.min_ttl = 1  # still a plain, writable attribute
        assert plain.min_ttl_for("payments") == 1
    finally:
        for r in (reader, explicit, plain):
            r.close()


# -- fork and threads -------------------------------------------------------------------

def test_a_child_forked_while_a_thread_holds_the_lock_does_not_hang(
        redis_url: str, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    reader = TokenReader(redis_url)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with reader._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holder thread does not exist here
            code = 1
            try:
                reader.get("payments")
                reader.get("payments")  # a cached read: starts an invalidator
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join()
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the reader's lock")
    assert os.waitstatus_to_exitcode(status) == 0
    reader.close()


def _invalidators(reader: TokenReader) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name == THREAD_NAME and isinstance(t, Invalidator) and t.reader is reader]


@pytest.fixture
def fast_switching() -> Iterator[None]:
    # switch threads as often as possible, so a race shows up on every run
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(saved)


def test_concurrent_reads_start_one_invalidator_thread(
        redis_url: str, refresher: Refresher, fast_switching: None) -> None:
    refresher.refresh_profile("payments")
    for _ in range(5):
        reader = TokenReader(redis_url)
        reader.get("payments")  # cached now: the next reads start the invalidator
        barrier = threading.Barrier(32)
        errors: list[BaseException] = []

        def read(r: TokenReader = reader, b: threading.Barrier = barrier,
                 failed: list[BaseException] = errors) -> None:
            try:
                b.wait(5)
                for _ in range(20):
                    r.get("payments")
            except BaseException as exc:  # noqa: BLE001
                failed.append(exc)

        threads = [threading.Thread(target=read) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        try:
            assert not errors, errors
            assert len(_invalidators(reader)) == 1
        finally:
            reader.close()
        assert wait_until(lambda r=reader: not _invalidators(r), 5)
