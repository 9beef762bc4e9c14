"""store.py and keys.py against the session's private redis-server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from token_worker.exceptions import StoreError
from token_worker.keys import Keys
from token_worker.store import REJECTED_COOLDOWN_SECONDS, TokenStore, connect_redis
from token_worker.tokens import Token, fingerprint

from .support import wait_until


@pytest.fixture
def store(redis_url: str) -> Iterator[TokenStore]:
    client = connect_redis(redis_url)
    yield TokenStore(client, "stitch")
    client.close()


def make_token(store: TokenStore, lifetime: float, *, access: str = "tok-A",
               issued_ago: float = 0.0, refresh_in: float | None = None) -> Token:
    now = store.time()
    issued_at = now - issued_ago
    return Token(access_token=access, token_type="Bearer", scopes=("client_paymentrequest",),
                 issued_at=issued_at, expires_at=now + lifetime,
                 refresh_at=now + (refresh_in if refresh_in is not None else lifetime / 2))


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
             keys.profiles(), keys.rejected("p", "abc"), keys.events()]
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


def test_tokens_are_ordered_by_issue_time_not_by_expiry(store: TokenStore,
                                                         rds: redis.Redis) -> None:
    newer = make_token(store, 300, access="tok-newer")
    assert store.publish("payments", newer) == 1
    stale = make_token(store, 900, access="tok-stale", issued_ago=5)  # a slow refresher's
    assert store.publish("payments", stale) == 0
    got = store.get_token("payments")
    assert got is not None and got.access_token == "tok-newer"
    assert rds.pttl("stitch:token:payments") > 290_000
    # issued later but shorter-lived (the replacement of a revoked or force-replaced token):
    # under the old never-shorter rule it was thrown away and the revoked one kept
    later = make_token(store, 60, access="tok-later")
    assert store.publish("payments", later) == 1
    assert store.get_token("payments").access_token == "tok-later"  # type: ignore[union-attr]
    assert rds.pttl("stitch:token:payments") <= 60_000


def test_token_from_before_issue_times_were_recorded_keeps_the_expiry_rule(
        store: TokenStore, rds: redis.Redis) -> None:
    store.publish("payments", make_token(store, 300, access="tok-old-version"))
    rds.hdel("stitch:status:payments", "issued_at")  # as 0.1.0 left it
    assert store.publish("payments", make_token(store, 100, access="tok-shorter")) == 0
    assert store.publish("payments", make_token(store, 600, access="tok-longer")) == 1


def test_refused_publish_does_not_touch_schedule_or_announce(store: TokenStore,
                                                             rds: redis.Redis) -> None:
    store.publish("payments", make_token(store, 300, refresh_in=200))
    before = rds.zscore("stitch:schedule", "payments")
    pubsub = rds.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("stitch:events")
    old = make_token(store, 100, access="tok-old", refresh_in=1, issued_ago=3)
    assert store.publish("payments", old) == 0
    assert pubsub.get_message(timeout=0.3) is None
    assert rds.zscore("stitch:schedule", "payments") == before
    pubsub.close()


def test_publish_is_fenced_by_the_lock_owner(store: TokenStore, rds: redis.Redis) -> None:
    # a holder whose lock expired and was taken by another must not publish over it
    owner = store.acquire_lock("payments", 30)
    assert owner is not None
    assert store.publish("payments", make_token(store, 300), "someone-else") == -2
    assert rds.exists("stitch:token:payments") == 0
    assert store.record_failure("payments", store.time(), "x", "server_error",
                                store.time() + 5, "someone-else") is None
    assert rds.exists("stitch:status:payments") == 0
    assert store.publish("payments", make_token(store, 300), owner) == 1
    assert store.release_lock("payments", owner)
    # no holder at all (ours lapsed, nobody took it): issue order alone decides
    assert store.publish("payments", make_token(store, 300, access="tok-2"), owner) == 1


def test_success_status_is_written_with_the_token(store: TokenStore) -> None:
    token = make_token(store, 60)
    store.publish("payments", token)
    status = store.status("payments")
    assert status["consecutive_failures"] == "0"
    assert status["last_error"] == ""
    assert float(status["issued_at"]) == pytest.approx(token.issued_at)
    assert status["fingerprint"] == token.fingerprint


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


def test_reports_make_a_profile_due_at_most_once_per_cooldown(store: TokenStore) -> None:
    first = make_token(store, 300, refresh_in=200)
    store.publish("payments", first)
    store.report_rejected("payments", first.fingerprint)
    assert store.due(["payments"])[1] == ["payments"]
    # the replacement came from a report: a report of it within the cooldown waits
    second = make_token(store, 300, access="tok-B", refresh_in=200)
    store.publish("payments", second, rejected_refresh_at=store.time())
    store.report_rejected("payments", second.fingerprint)
    assert store.due(["payments"])[1] == []
    third = make_token(store, 300, access="tok-C", refresh_in=200)
    store.publish("payments", third,
                  rejected_refresh_at=store.time() - REJECTED_COOLDOWN_SECONDS - 1)
    store.report_rejected("payments", third.fingerprint)
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
    store.schedule_at("refunds", now - 1)
    assert store.due(["payments", "refunds"])[1] == ["refunds"]


def test_a_missing_token_is_due_whatever_the_schedule_says(store: TokenStore,
                                                          rds: redis.Redis) -> None:
    # evicted (volatile-* policies pick token keys first), lost in a failover, or deleted
    store.publish("payments", make_token(store, 300, refresh_in=200))
    assert store.due(["payments"])[1] == []
    rds.delete("stitch:token:payments")
    assert store.due(["payments"])[1] == ["payments"]


def test_a_missing_token_waits_out_a_failure_backoff(store: TokenStore) -> None:
    now = store.time()
    assert store.record_failure("payments", now, "HTTP 503", "server_error", now + 30)
    assert store.due(["payments"])[1] == []  # the backoff stands: an outage is not a storm
    store.schedule_at("payments", now - 1)
    assert store.due(["payments"])[1] == ["payments"]


def test_due_leaves_profiles_it_does_not_know_alone(store: TokenStore) -> None:
    # another worker's config (a rolling deploy, a second app on the prefix) has "retired"
    now = store.time()
    store.publish("payments", make_token(store, 300, refresh_in=100))
    store.schedule_at("retired", now + 100)
    assert store.due(["payments", "refunds"])[1] == ["refunds"]
    assert store.schedule()["retired"] == pytest.approx(now + 100)


def test_profile_registry_is_merged_never_replaced(store: TokenStore, rds: redis.Redis) -> None:
    store.register_profiles({"a": {"scopes": ["x"]}, "b": {"scopes": ["y"]}})
    store.register_profiles({"b": {"scopes": ["z"]}})
    assert sorted(rds.hkeys("stitch:profiles")) == ["a", "b"]
    assert store.registered_profiles()["b"] == {"scopes": ["z"]}


@pytest.mark.parametrize("key", ["stitch:schedule", "stitch:token:payments",
                                 "stitch:status:payments", "stitch:lock:payments"])
def test_scripts_heal_a_key_of_the_wrong_type(store: TokenStore, rds: redis.Redis,
                                              key: str) -> None:
    # a SET on the schedule used to make due() and publish() fail with WRONGTYPE
    if key.endswith("schedule") or key.endswith("lock:payments"):
        rds.hset(key, "x", "1")
    else:
        rds.rpush(key, "x")
    assert store.due(["payments"])[1] == ["payments"]
    owner = store.acquire_lock("payments", 30)
    assert owner is not None
    assert store.publish("payments", make_token(store, 300, refresh_in=200), owner) == 1
    assert store.get_token("payments") is not None
    assert store.due(["payments"])[1] == []
    assert store.record_failure("payments", store.time(), "x", "server_error",
                                store.time() + 5, owner) == (1, "")


def test_a_lock_with_no_expiry_is_given_one(store: TokenStore, rds: redis.Redis) -> None:
    rds.set("stitch:lock:payments", "by-hand")
    assert store.lock_ttl("payments") == float("inf")  # held, not free: no busy wait
    assert store.acquire_lock("payments", 2) is None
    assert 0 < rds.pttl("stitch:lock:payments") <= 2000


def test_lock_extension_only_by_its_owner(store: TokenStore, rds: redis.Redis) -> None:
    owner = store.acquire_lock("payments", 1)
    assert owner is not None
    assert store.extend_lock("payments", owner, 60)
    assert rds.pttl("stitch:lock:payments") > 50_000
    assert not store.extend_lock("payments", "not-the-owner", 600)
    assert rds.pttl("stitch:lock:payments") <= 60_000


def test_read_function_is_used_once_loaded(store: TokenStore, rds: redis.Redis) -> None:
    store.publish("payments", make_token(store, 300))
    rds.function_flush()
    assert store.get_token("payments") is not None  # the MULTI fallback
    assert store._fcall_after > time.monotonic()
    assert store.load_functions()
    store._fcall_after = 0.0
    calls = int(rds.info("commandstats").get("cmdstat_fcall_ro", {}).get("calls", 0))
    assert store.get_token("payments") is not None
    after = int(rds.info("commandstats").get("cmdstat_fcall_ro", {}).get("calls", 0))
    assert after == calls + 1


def test_replayed_value_under_a_long_ttl_dies_at_its_own_expiry(store: TokenStore,
                                                                rds: redis.Redis) -> None:
    token = make_token(store, 1)
    store.publish("payments", token)
    value = rds.get("stitch:token:payments")
    time.sleep(1.1)
    rds.set("stitch:token:payments", value, px=3_600_000)  # replayed with a long PX
    got = store.get_token("payments")
    assert got is not None and got.expires_in == 0.0


# -- status -----------------------------------------------------------------------------

def test_failures_count_up_and_success_clears_them(store: TokenStore) -> None:
    now = store.time()
    assert store.record_failure("payments", now, "HTTP 503", "server_error", now + 5) == (1, "")
    assert store.record_failure("payments", now, "HTTP 503", "server_error", now + 9) == \
        (2, "server_error")
    status = store.status("payments")
    assert status["consecutive_failures"] == "2"
    assert status["last_error"] == "HTTP 503"
    assert float(status["next_attempt_at"]) == pytest.approx(now + 9)
    assert store.schedule()["payments"] == pytest.approx(now + 9)
    token = make_token(store, 60)
    store.publish("payments", token)
    status = store.status("payments")
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


def test_a_failure_after_a_newer_success_is_fenced_out(store: TokenStore) -> None:
    # a holder paused past its lock wakes up to a timeout after another holder succeeded
    started = store.time() - 5
    store.publish("payments", make_token(store, 300))
    assert store.record_failure("payments", store.time(), "timed out", "timeout",
                                store.time() + 2, "lapsed-owner", started) is None
    assert store.status("payments")["consecutive_failures"] == "0"
