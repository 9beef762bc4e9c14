"""listener.py: the worker's thread that refreshes rejected tokens and a store come back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from token_worker import TokenReader, TokenUnavailable
from token_worker.config import Config, load_config
from token_worker.listener import Listener
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import RedisServer, wait_until, write_config


def start(config: Config) -> Listener:
    listener = Listener(Refresher.from_config(config))
    listener.start()
    assert listener.subscribed.wait(5), "the listener did not subscribe"
    return listener


@pytest.fixture
def listeners(config: Config) -> Iterator[list[Listener]]:
    """Two workers' listeners on the same fleet."""
    running = [start(config), start(config)]
    yield running
    for listener in running:
        listener.stop(5)
        listener.refresher.close()


def test_rejected_token_is_replaced_at_once_with_one_call(
        listeners: list[Listener], refresher: Refresher, emulator: Emulator,
        redis_url: str) -> None:
    refresher.refresh_profile("payments")
    readers = [TokenReader(redis_url) for _ in range(4)]
    token = readers[0].get("payments")
    calls = emulator.calls
    firsts: list[bool] = []
    threads = [threading.Thread(target=lambda r=r: firsts.extend(
        r.report_rejected("payments", token) for _ in range(50))) for r in readers]
    started = time.monotonic()
    for t in threads:
        t.start()
    replacement = readers[0].get("payments", wait=5)
    waited = time.monotonic() - started
    for t in threads:
        t.join()
    time.sleep(0.3)  # room for a second listener's duplicate to show
    assert replacement.fingerprint != token.fingerprint
    assert firsts.count(True) == 1 and len(firsts) == 200
    assert emulator.calls == calls + 1  # two listeners, two hundred reports, one call
    assert waited < 1
    for r in readers:
        r.close()


def test_report_of_an_already_replaced_token_costs_nothing(
        listeners: list[Listener], refresher: Refresher, emulator: Emulator,
        redis_url: str) -> None:
    refresher.refresh_profile("payments")
    old = TokenReader(redis_url).get("payments")
    refresher.refresh_profile("payments", force=True)
    calls = emulator.calls
    reader = TokenReader(redis_url)
    assert reader.report_rejected("payments", old)  # a task that held the old one
    time.sleep(0.5)
    assert emulator.calls == calls
    assert reader.get("payments").fingerprint != old.fingerprint
    # and the schedule is back where the current token wants it: beat stays quiet
    assert "payments" not in refresher.due_profiles()
    reader.close()


def test_store_back_empty_gets_every_profile_republished_without_beat(
        tmp_path: Path, emulator: Emulator, secret_env: str) -> None:
    server = RedisServer().start()
    try:
        path = write_config(tmp_path / "tw.toml", redis_url=server.url, token_url=emulator.url,
                            profiles={"payments": ["client_paymentrequest"],
                                      "refunds": ["client_refund"]})
        config = load_config(path)
        refresher = Refresher.from_config(config)
        for name in ("payments", "refunds"):
            refresher.refresh_profile(name)
        listener = start(config)
        server.kill()
        assert wait_until(lambda: not listener.subscribed.is_set(), 5)
        server.start()  # empty
        up = time.monotonic()
        reader = TokenReader(server.url)
        for profile in ("payments", "refunds"):
            reader.get(profile, wait=5)
        print(f"\nre-published {time.monotonic() - up:.2f}s after Redis came back")
        assert time.monotonic() - up < 2.5
        assert sorted(server.client().hkeys("stitch:profiles")) == ["payments", "refunds"]
        listener.stop(5)
        reader.close()
        refresher.close()
    finally:
        server.kill()


def test_listener_survives_an_unexpected_error_and_keeps_refreshing(
        config: Config, refresher: Refresher, emulator: Emulator, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener = start(config)
    try:
        refresher.refresh_profile("payments")
        boom = {"left": 1}
        original = listener._handle

        def handle_once_badly(data: str) -> None:
            if boom["left"]:
                boom["left"] = 0
                raise ValueError("a bug, not a Redis error")  # used to end the thread
            original(data)

        monkeypatch.setattr(listener, "_handle", handle_once_badly)
        reader = TokenReader(redis_url, cache=False)

        def current() -> str | None:
            try:
                return reader.get("payments").fingerprint
            except TokenUnavailable:
                return None

        try:
            token = reader.get("payments")
            reader.report_rejected("payments", token)  # this report hits the bug...
            # ...and the catch-up after resubscribing refreshes it all the same
            assert wait_until(lambda: current() not in (None, token.fingerprint), 5)
            assert listener.is_alive()
            second = reader.get("payments")
            refresher.store.redis.hset("stitch:status:payments", "rejected_refresh_at", "0")
            reader.report_rejected("payments", second)
            assert wait_until(lambda: current() not in (None, second.fingerprint), 5)
        finally:
            reader.close()
    finally:
        listener.stop(5)
        listener.refresher.close()


def test_listener_warns_once_per_outage_however_often_it_retries(
        tmp_path: Path, emulator: Emulator, secret_env: str,
        caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer().start()
    try:
        path = write_config(tmp_path / "tw.toml", redis_url=server.url, token_url=emulator.url)
        listener = start(load_config(path))
        try:
            with caplog.at_level(logging.WARNING, logger="token_worker.listener"):
                for _ in range(2):
                    server.kill()
                    assert wait_until(lambda: not listener.subscribed.is_set(), 5)
                    time.sleep(2.5)  # several reconnect attempts (backoff up to 1s)
                    server.start()
                    assert listener.subscribed.wait(5)
            unreachable = [r for r in caplog.records if "unreachable, retrying" in r.message]
            assert len(unreachable) == 2, [r.message for r in caplog.records]
            assert listener.is_alive()
        finally:
            listener.stop(5)
            listener.refresher.close()
    finally:
        server.kill()
