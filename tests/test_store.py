"""store.py and keys.py against the session's private redis-server."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from token_worker.exceptions import StoreError
from token_worker.keys import Keys
from token_worker.store import TokenStore, connect_redis
from token_worker.tokens import fingerprint

from .support import make_token, raw_status, wait_until

# -- keys -------------------------------------------------------------------------------

def test_contract_key_names() -> None:
    keys = Keys("stitch")
    assert keys.token("payments") == "stitch:token:payments"
    assert keys.status("payments") == "stitch:status:payments"
    assert keys.lock("payments") == "stitch:lock:payments"
    assert Keys("acme").token("refunds") == "acme:token:refunds"


def test_every_key_lives_under_the_prefix() -> None:
    keys = Keys("pfx")
    names = [keys.token("p"), keys.status("p"), keys.lock("p"), keys.schedule(),
             keys.profiles(), keys.rejected("p"), keys.events()]
    assert all(name.startswith("pfx:") for name in names)
    assert len(set(names)) == len(names)


# -- publish ----------------------------------------------------------------------------

def test_publish_writes_contract_json_expiring_with_the_token(store: TokenStore,
                                                              rds: redis.Redis) -> None:
    token = make_token(store, 120)
    assert store.publish("payments", token) == 1
    data = json.loads(rds.get("stitch:token:payments"))
    assert data["access_token"] == "tok-A"
    assert data["token_type"] == "Bearer"
    assert data["scope"] == "client_paymentrequest"
    assert data["issued_at"] == pytest.approx(token.issued_at)
    assert data["expires_at"] == pytest.approx(token.expires_at)
    pttl = rds.pttl("stitch:token:payments")
    assert 118_000 < pttl <= 120_000  # the key dies with the token, per Redis's clock


def test_publish_schedules_the_refresh_and_announces_it(store: TokenStore,
                                                        rds: redis.Redis) -> None:
    pubsub = rds.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("stitch:events")
    wait_until(lambda: pubsub.get_message(timeout=0.05) is None, 0.2)
    token = make_token(store, 120, refresh_in=60)
    store.publish("payments", token)
    message = wait_until(lambda: pubsub.get_message(timeout=0.1), 2)
    assert message["data"] == f"payments {token.fingerprint}"
    assert rds.zscore("stitch:schedule", "payments") == pytest.approx(token.refresh_at)
    pubsub.close()


def test_announced_token_is_already_readable(store: TokenStore, rds: redis.Redis) -> None:
    """Whoever wakes on the event reads the token that caused it (one atomic step)."""
    pubsub = rds.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("stitch:events")
    seen: list[str | None] = []

    def listen() -> None:
        for _ in range(20):
            message = pubsub.get_message(timeout=0.5)
            if message:
                got = store.get_token("payments")
                seen.append(got.fingerprint if got else None)
                if len(seen) == 5:
                    return

    thread = threading.Thread(target=listen)
    thread.start()
    time.sleep(0.1)
    published = []
    for i in range(5):
        token = make_token(store, 100 + i, access=f"tok-{i}")
        assert store.publish("payments", token) == 1
        published.append(token.fingerprint)
    thread.join(10)
    pubsub.close()
    assert len(seen) == 5 and all(fp in published for fp in seen)


def test_round_trip_through_get_token(store: TokenStore) -> None:
    token = make_token(store, 60)
    store.publish("payments", token)
    got = store.get_token("payments")
    assert got is not None
    assert (got.access_token, got.scopes, got.expires_at) == \
        (token.access_token, token.scopes, pytest.approx(token.expires_at))
    assert 58 < got.expires_in <= 60


def test_get_token_of_unpublished_profile_is_none(store: TokenStore) -> None:
    assert store.get_token("payments") is None
    assert store.read_raw("payments")[:2] == (None, 0.0)


def test_publishing_an_already_expired_token_writes_nothing(store: TokenStore,
                                                            rds: redis.Redis) -> None:
    dead = make_token(store, -1)
    assert store.publish("payments", dead) == -1
    assert rds.exists("stitch:token:payments") == 0
    assert rds.zscore("stitch:schedule", "payments") is None


def test_token_key_disappears_when_the_token_expires(store: TokenStore) -> None:
    store.publish("payments", make_token(store, 0.3))
    assert store.get_token("payments") is not None
    time.sleep(0.4)
    assert store.get_token("payments") is None


def test_unreadable_value_is_a_store_error(store: TokenStore, rds: redis.Redis) -> None:
    rds.set("stitch:token:payments", "{not json", px=60_000)
    with pytest.raises(StoreError, match="payments"):
        store.get_token("payments")
    rds.set("stitch:token:payments", json.dumps({"access_token": "x"}), px=60_000)
    with pytest.raises(StoreError):
        store.get_token("payments")


def test_encrypted_value_without_keys_is_a_store_error(store: TokenStore,
                                                       rds: redis.Redis) -> None:
    rds.set("stitch:token:payments", "enc:v1:k1:AAAA", px=60_000)
    with pytest.raises(StoreError, match="encrypted"):
        store.get_token("payments")


def test_prefixes_do_not_see_each_other(redis_url: str, store: TokenStore) -> None:
    other = TokenStore(connect_redis(redis_url), "acme")
    store.publish("payments", make_token(store, 60))
    assert other.get_token("payments") is None


# -- purge and rejection ----------------------------------------------------------------

def test_purge_deletes_the_token_and_makes_the_profile_due(store: TokenStore) -> None:
    store.publish("payments", make_token(store, 300, refresh_in=200))
    assert store.due(["payments"])[1] == []
    assert store.purge("payments") is True
    assert store.get_token("payments") is None
    assert store.due(["payments"])[1] == ["payments"]
    assert store.purge("payments") is False


def test_rejection_is_marked_once_per_token_and_makes_profile_due(store: TokenStore,
                                                                  rds: redis.Redis) -> None:
    token = make_token(store, 300, refresh_in=200)
    store.publish("payments", token)
    before = rds.zscore("stitch:schedule", "payments")
    assert store.report_rejected("payments", token.fingerprint) is True
    assert store.report_rejected("payments", token.fingerprint) is False
    assert store.is_rejected("payments", token.fingerprint)
    assert not store.is_rejected("payments", fingerprint("another"))
    assert rds.zscore("stitch:schedule", "payments") == before  # the reader writes no schedule
    assert store.due(["payments"])[1] == ["payments"]


def test_forget_removes_a_profile_from_the_fleet(store: TokenStore, rds: redis.Redis) -> None:
    store.register_profiles({"payments": {"scopes": ["x"]}, "refunds": {"scopes": ["y"]}})
    store.publish("payments", make_token(store, 300))
    store.forget("payments")
    assert rds.exists("stitch:token:payments", "stitch:status:payments") == 0
    assert rds.zscore("stitch:schedule", "payments") is None
    assert rds.hkeys("stitch:profiles") == ["refunds"]


# -- schedule ---------------------------------------------------------------------------

def test_due_lists_unpublished_profiles(store: TokenStore) -> None:
    now, due = store.due(["payments", "refunds"])
    assert sorted(due) == ["payments", "refunds"]
    assert abs(now - time.time()) < 5


def test_due_follows_the_schedule(store: TokenStore) -> None:
    now = store.time()
    store.publish("payments", make_token(store, 300, refresh_in=100))
    store.publish("refunds", make_token(store, 300, refresh_in=100))
    store.redis.zadd(store.keys.schedule(), {"refunds": now - 1})
    assert store.due(["payments", "refunds"])[1] == ["refunds"]


def test_profile_registry_is_merged_never_replaced(store: TokenStore, rds: redis.Redis) -> None:
    store.register_profiles({"a": {"scopes": ["x"]}, "b": {"scopes": ["y"]}})
    store.register_profiles({"b": {"scopes": ["z"]}})
    assert sorted(rds.hkeys("stitch:profiles")) == ["a", "b"]
    assert store.registered_profiles()["b"] == {"scopes": ["z"]}


# -- status -----------------------------------------------------------------------------

def test_failures_count_up_and_success_clears_them(store: TokenStore) -> None:
    now = store.time()
    assert store.record_failure("payments", now, "HTTP 503", "server_error", now + 5) == (1, "")
    assert store.record_failure("payments", now, "HTTP 503", "server_error", now + 9) == \
        (2, "server_error")
    status = raw_status(store)
    assert status["consecutive_failures"] == "2"
    assert status["last_error"] == "HTTP 503"
    assert float(status["next_attempt_at"]) == pytest.approx(now + 9)
    assert store.schedule()["payments"] == pytest.approx(now + 9)
    token = make_token(store, 60)
    store.publish("payments", token)
    status = raw_status(store)
    assert status["consecutive_failures"] == "0"
    assert status["last_error"] == ""
    assert float(status["last_success_at"]) == pytest.approx(token.issued_at)
    assert status["fingerprint"] == token.fingerprint
    assert "tok-A" not in json.dumps(status)


# -- lock -------------------------------------------------------------------------------

def test_lock_is_exclusive_and_released_only_by_its_owner(store: TokenStore,
                                                          rds: redis.Redis) -> None:
    owner = store.acquire_lock("payments", 10)
    assert owner is not None
    assert store.acquire_lock("payments", 10) is None
    assert store.release_lock("payments", "not-the-owner") is False
    assert rds.get("stitch:lock:payments") == owner
    assert store.release_lock("payments", owner) is True
    assert rds.exists("stitch:lock:payments") == 0
    assert store.acquire_lock("payments", 10) is not None


def test_lock_is_per_profile(store: TokenStore) -> None:
    assert store.acquire_lock("payments", 10) is not None
    assert store.acquire_lock("refunds", 10) is not None


def test_crashed_holders_lock_frees_itself(store: TokenStore) -> None:
    crashed = store.acquire_lock("payments", 0.2)
    assert crashed is not None
    assert 0 < store.lock_ttl("payments") <= 0.2
    time.sleep(0.3)
    assert store.lock_ttl("payments") == 0.0
    successor = store.acquire_lock("payments", 10)
    assert successor is not None
    # the late original holder must not free the successor's lock
    assert store.release_lock("payments", crashed) is False
    assert store.acquire_lock("payments", 10) is None


def test_two_threads_never_hold_the_lock_together(store: TokenStore) -> None:
    barrier = threading.Barrier(8)
    owners: list[str | None] = []

    def grab() -> None:
        barrier.wait()
        owners.append(store.acquire_lock("payments", 10))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([o for o in owners if o is not None]) == 1


def test_repr_names_host_and_prefix_not_password(redis_server: object, redis_url: str) -> None:
    store = TokenStore(redis.Redis.from_url("redis://:pw-hunter2@127.0.0.1:1/0"), "stitch")
    assert "pw-hunter2" not in repr(store)
    assert "127.0.0.1:1" in repr(store)


