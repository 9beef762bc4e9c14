"""Every Redis error leaves the store as a StoreError, naming the server, never a value."""

from __future__ import annotations

import time

import pytest

from token_worker.exceptions import StoreError, StoreUnavailable, TokenWorkerError
from token_worker.store import TokenStore, connect_redis
from token_worker.testing.helpers import free_port
from token_worker.testing.redis_server import RedisServer

from .support import make_token


def test_an_unreachable_redis_is_store_unavailable_from_every_method() -> None:
    port = free_port()
    store = TokenStore(connect_redis(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5))
    calls = {
        "time": lambda: store.time(), "read_raw": lambda: store.read_raw("payments"),
        "get_token": lambda: store.get_token("payments"),
        "due": lambda: store.due(["payments"]), "status": lambda: store.status("payments"),
        "facts": lambda: store.facts(["payments"]),
        "acquire_lock": lambda: store.acquire_lock("payments", 5),
        "report_rejected": lambda: store.report_rejected("payments", "ab"),
        "pubsub": lambda: store.pubsub(),
        "wait_for": lambda: store.wait_for(lambda: False, time.monotonic() + 1),
    }
    for name, call in calls.items():
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value, StoreError | TokenWorkerError), name
        assert f"127.0.0.1:{port}" in str(info.value), name
        assert info.value.__cause__ is not None, name  # the redis-py error, for debugging


def test_a_refused_command_is_a_store_error_that_is_not_unavailable(store: TokenStore) -> None:
    store.redis.set(store.keys.schedule(), "not a sorted set")
    with pytest.raises(StoreError) as info:
        store.next_due("payments")  # ZSCORE on a string: WRONGTYPE
    assert not isinstance(info.value, StoreUnavailable)
    assert "WRONGTYPE" in str(info.value) and "not a sorted set" not in str(info.value)


def test_a_subscription_that_loses_its_server_raises_store_unavailable() -> None:
    with RedisServer() as server:
        store = TokenStore(connect_redis(server.url, socket_timeout=1))
        sub = store.pubsub()
        assert sub.get_message(timeout=0.2) is None
        server.kill()
        with pytest.raises(StoreUnavailable):
            for _ in range(20):
                sub.get_message(timeout=0.2)
        sub.close()
        sub.close()  # closing twice, or after the loss, never raises


def test_batch_sends_queued_writes_in_one_round_trip_only_when_the_block_ends(
        store: TokenStore) -> None:
    token = make_token(store, 300)
    assert store.publish("payments", token) == 1
    with store.batch() as batch:
        store.record_outcome("payments", "done_elsewhere", "lock_held", pipeline=batch)
        store.schedule_no_earlier("payments", token.refresh_at + 50, pipeline=batch)
        assert store.status("payments").last_outcome == "refreshed"  # not yet sent
    rec = store.status("payments")
    assert (rec.last_outcome, rec.last_reason) == ("done_elsewhere", "lock_held")
    assert store.next_due("payments") == pytest.approx(token.refresh_at + 50)
    with pytest.raises(RuntimeError), store.batch() as batch:
        store.record_outcome("payments", "not_due", "token_valid", pipeline=batch)
        raise RuntimeError("the block failed")
    assert store.status("payments").last_outcome == "done_elsewhere"  # nothing was sent


def test_a_publish_clears_the_previous_reason(store: TokenStore) -> None:
    store.record_outcome("payments", "done_elsewhere", "superseded")
    assert store.publish("payments", make_token(store, 300)) == 1
    rec = store.status("payments")
    assert rec.last_outcome == "refreshed" and rec.last_reason is None


def test_facts_read_locks_only_when_asked(store: TokenStore) -> None:
    store.publish("payments", make_token(store, 300))
    owner = store.acquire_lock("payments", 30)
    assert owner
    now, (plain,) = store.facts(["payments"])
    _, (locked,) = store.facts(["payments"], locks=True)
    assert plain.lock_ttl == 0.0 and 29 < locked.lock_ttl <= 30
    assert plain.token_ttl is not None and 299 < plain.token_ttl <= 300
    assert plain.record.fingerprint == make_token(store, 300).fingerprint
    assert abs(now - store.time()) < 5


def test_both_stores_classify_errors_alike() -> None:
    # the async store used to call a cluster that is down "refused"; one function now
    from redis.exceptions import ClusterDownError, MasterDownError, ResponseError

    from token_worker.store_async import error_at as async_error_at
    from token_worker.store_guard import error_at

    assert async_error_at is error_at
    for exc in (ClusterDownError("down"), MasterDownError("down"), ConnectionError("x")):
        assert isinstance(error_at("h:1", exc), StoreUnavailable)
    refused = error_at("h:1", ResponseError("WRONGTYPE Operation"))
    assert not isinstance(refused, StoreUnavailable) and "h:1" in str(refused)
