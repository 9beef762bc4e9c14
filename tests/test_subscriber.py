"""subscriber.py and TokenStore.wait_for: the events channel, subscribed for real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from token_worker.events import Event
from token_worker.exceptions import StoreError, StoreUnavailable
from token_worker.store import TokenStore, connect_redis
from token_worker.subscriber import Subscriber

from .support import RedisServer, free_port, make_token, wait_until


class Calls:
    """What a subscriber handed over, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.subscribes = 0
        self.downs: list[Exception | None] = []
        self.healthy_on_subscribe: list[bool] = []

    def subscriber(self, store: TokenStore, **kw: float) -> Subscriber:
        sub: Subscriber

        def on_subscribe() -> None:
            self.subscribes += 1
            self.healthy_on_subscribe.append(sub.healthy)

        sub = Subscriber(store, self.events.append, on_subscribe=on_subscribe,
                         on_down=self.downs.append, **kw)
        return sub


@pytest.fixture
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.kill()


def test_each_event_is_handed_over_in_order_and_junk_dropped(store: TokenStore,
                                                             rds: redis.Redis) -> None:
    calls = Calls()
    sub = calls.subscriber(store)
    sub.start()
    try:
        assert sub.subscribed.wait(5) and sub.healthy
        assert calls.subscribes == 1 and calls.healthy_on_subscribe == [False]
        token = make_token(store, 120)
        rds.publish("stitch:events", "no event at all")
        store.publish("payments", token)
        store.purge("payments")
        assert wait_until(lambda: len(calls.events) == 2, 3)
        assert calls.events == [Event.published("payments", token.fingerprint),
                                Event.purged("payments")]
        assert sub.is_alive() and calls.downs == []
    finally:
        sub.stop(5)
    assert not sub.is_alive() and not sub.healthy
    assert calls.downs == [None]  # stopped, not lost


def test_resubscribes_after_redis_restarts_healthy_only_while_subscribed(
        server: RedisServer) -> None:
    store = TokenStore(connect_redis(server.url, socket_timeout=1))
    calls = Calls()
    sub = calls.subscriber(store, max_backoff=0.4)
    sub.start()
    try:
        assert sub.subscribed.wait(5)
        server.kill()
        assert wait_until(lambda: not sub.healthy, 5)
        assert not sub.subscribed.is_set()
        time.sleep(1.5)  # attempts keep failing meanwhile, backing off to 0.4s
        assert all(isinstance(e, StoreError) for e in calls.downs)  # the store's errors
        assert 3 <= len(calls.downs) <= 12, calls.downs  # retrying, not spinning
        server.start()
        assert sub.subscribed.wait(5) and sub.healthy
        assert calls.subscribes == 2
        token = make_token(store, 120)
        store.publish("payments", token)
        assert wait_until(lambda: Event.published("payments", token.fingerprint)
                          in calls.events, 3)
    finally:
        sub.stop(5)
        store.redis.close()


def test_an_exception_in_a_callback_resubscribes_instead_of_ending_the_thread(
        store: TokenStore) -> None:
    seen: list[Event] = []
    downs: list[Exception | None] = []
    subscribes: list[int] = []

    def on_event(event: Event) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise ValueError("a bug in a callback")

    sub = Subscriber(store, on_event, on_subscribe=lambda: subscribes.append(1),
                     on_down=downs.append)
    sub.start()
    try:
        assert sub.subscribed.wait(5)
        store.purge("payments")
        assert wait_until(lambda: len(subscribes) == 2, 5), "not resubscribed"
        assert isinstance(downs[0], ValueError)
        store.purge("refunds")
        assert wait_until(lambda: Event.purged("refunds") in seen, 3)
        assert sub.is_alive()
    finally:
        sub.stop(5)


def test_stop_ends_the_thread_within_a_second(store: TokenStore) -> None:
    sub = Subscriber(store, lambda event: None)
    sub.start()
    assert sub.subscribed.wait(5)
    started = time.monotonic()
    sub.stop(3)
    assert not sub.is_alive() and time.monotonic() - started < 1.5


# -- wait_for ---------------------------------------------------------------------------

def test_wait_for_returns_the_value_as_soon_as_an_event_makes_it_true(
        store: TokenStore) -> None:
    token = make_token(store, 120)
    timer = threading.Timer(0.3, lambda: store.publish("payments", token))
    started = time.monotonic()
    timer.start()
    got = store.wait_for(lambda: store.get_token("payments"), time.monotonic() + 5, every=10)
    elapsed = time.monotonic() - started
    timer.join()
    assert got is not None and got.fingerprint == token.fingerprint
    assert 0.25 <= elapsed < 1.0  # woken by the publish, not by the re-check


def test_wait_for_misses_no_event_between_its_check_and_its_wait(store: TokenStore) -> None:
    token = make_token(store, 120)
    checks: list[float] = []

    def published_right_after_the_first_check() -> bool:
        checks.append(time.monotonic())
        if len(checks) == 1:
            store.publish("payments", token)  # lands before the wait begins
            return False
        return store.get_token("payments") is not None

    started = time.monotonic()
    assert store.wait_for(published_right_after_the_first_check, started + 5, every=10)
    assert time.monotonic() - started < 1.0


def test_wait_for_rechecks_without_events_and_gives_up_at_the_deadline(
        store: TokenStore) -> None:
    checks: list[float] = []
    started = time.monotonic()
    assert store.wait_for(lambda: checks.append(time.monotonic()), started + 0.7,
                          every=0.2) is None
    assert 0.65 <= time.monotonic() - started < 1.5
    assert 3 <= len(checks) <= 6  # about every 0.2s, not spinning
    # a deadline already past still checks once
    assert store.wait_for(lambda: "now", time.monotonic() - 1) == "now"


def test_wait_for_lets_redis_errors_through() -> None:
    store = TokenStore(connect_redis(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1))
    with pytest.raises(StoreUnavailable):
        store.wait_for(lambda: False, time.monotonic() + 2)
