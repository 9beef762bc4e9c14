"""scripts.py: the Lua inside Redis (publish order and fence, failure fence, due rules,
type healing, lock upkeep, the readers' read function), through the store's methods."""

from __future__ import annotations

import time

import pytest
import redis

from token_worker.store import REJECTED_COOLDOWN_SECONDS, TokenStore

from .support import make_token, raw_status


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
    status = raw_status(store)
    assert status["consecutive_failures"] == "0"
    assert status["last_error"] == ""
    assert float(status["issued_at"]) == pytest.approx(token.issued_at)
    assert status["fingerprint"] == token.fingerprint


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
    store.redis.zadd(store.keys.schedule(), {"payments": now - 1})
    assert store.due(["payments"])[1] == ["payments"]


def test_due_leaves_profiles_it_does_not_know_alone(store: TokenStore) -> None:
    # another worker's config (a rolling deploy, a second app on the prefix) has "retired"
    now = store.time()
    store.publish("payments", make_token(store, 300, refresh_in=100))
    store.redis.zadd(store.keys.schedule(), {"retired": now + 100})
    assert store.due(["payments", "refunds"])[1] == ["refunds"]
    assert store.schedule()["retired"] == pytest.approx(now + 100)


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


def test_a_failure_after_a_newer_success_is_fenced_out(store: TokenStore) -> None:
    # a holder paused past its lock wakes up to a timeout after another holder succeeded
    started = store.time() - 5
    store.publish("payments", make_token(store, 300))
    assert store.record_failure("payments", store.time(), "timed out", "timeout",
                                store.time() + 2, "lapsed-owner", started) is None
    assert raw_status(store)["consecutive_failures"] == "0"
