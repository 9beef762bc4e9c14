"""One client builder for every topology: one server, Sentinel, Cluster (real ones)."""

from __future__ import annotations

import time

import pytest

from token_worker.connection import RedisTarget, client_for, describe_redis, is_cluster
from token_worker.exceptions import ConfigError, StoreUnavailable
from token_worker.store import TokenStore
from token_worker.testing.helpers import free_port, wait_until
from token_worker.testing.topologies import RedisCluster, SentinelSet

from .support import make_token


def test_a_bad_url_is_a_config_error_naming_no_value() -> None:
    for url in ("redis+sentinel://h:26379/", "redis+cluster://h/3", "redis+x://h/"):
        with pytest.raises(ConfigError) as info:
            client_for(RedisTarget(url))
        assert url not in str(info.value) and "redis url:" in str(info.value)


def test_an_unreachable_cluster_is_store_unavailable_when_built() -> None:
    with pytest.raises(StoreUnavailable) as info:
        client_for(RedisTarget(f"redis+cluster://127.0.0.1:{free_port()}/",
                               socket_timeout_seconds=0.5))
    assert "cluster 127.0.0.1:" in str(info.value)


def test_sentinel_store_follows_a_failover_without_a_restart() -> None:
    with SentinelSet(sentinel_password="s3cret-sentinel") as sentinels:
        target = RedisTarget(sentinels.url, sentinel_password="s3cret-sentinel",
                             socket_timeout_seconds=1.0)
        store = TokenStore.open(target)
        assert describe_redis(store.redis).startswith("sentinel 127.0.0.1:")
        assert "mymaster" in store.where and not is_cluster(store.redis)
        token = make_token(store, 300)
        assert store.publish("payments", token) == 1
        store.redis.execute_command("WAIT", 1, 2000)  # type: ignore[no-untyped-call]
        old = sentinels.kill_primary()
        sentinels.wait_for_failover(old)
        # the same store object, the new primary: reads and writes go on
        assert wait_until(lambda: _answers(store), 15)
        assert store.get_token("payments") == token
        assert store.publish("payments", make_token(store, 600, access="tok-B")) == 1
        store.close()


def test_sentinel_without_its_password_is_refused() -> None:
    with SentinelSet(sentinel_password="s3cret-sentinel") as sentinels:
        store = TokenStore.open(RedisTarget(sentinels.url, socket_timeout_seconds=1.0))
        with pytest.raises(StoreUnavailable):
            store.time()
        store.close()


def _answers(store: TokenStore) -> bool:
    try:
        store.time()
        return True
    except StoreUnavailable:
        return False


def test_every_store_operation_works_on_a_cluster() -> None:
    with RedisCluster() as cluster:
        store = TokenStore.open(RedisTarget(cluster.url))
        assert is_cluster(store.redis) and store.where.startswith("cluster ")
        assert store.keys.token("p") == "{stitch}:token:p"
        assert store.load_functions()
        token = make_token(store, 300)
        assert store.publish("p", token) == 1
        assert store.get_token("p") == token and store._fcall_after == 0.0
        assert store.due(["p", "q"])[1] == ["q"]
        _, claims = store.claim_due(["p", "q"], horizon=1.0, hold=30.0, cooldown=10.0)
        assert [c.profile for c in claims] == ["q"] and list(store.claims()) == ["q"]
        with store.batch() as b:
            store.release_claim("q", pipeline=b)
        assert store.claims() == {}
        now, facts = store.facts(["p", "q"], locks=True)
        assert facts[0].token_ttl is not None and facts[1].token_ttl is None
        assert abs(now - store.time()) < 5
        assert store.why_missing("q")[1] is None  # no registry yet
        store.register_profiles({"p": {"margin_seconds": 60}})
        assert store.registered_profiles() == {"p": {"margin_seconds": 60}}
        owner = store.acquire_lock("p", 5)
        assert owner and store.extend_lock("p", owner, 5) and store.release_lock("p", owner)
        assert store.report_rejected("p", token.fingerprint)
        assert store.due(["p"])[1] == ["p"]  # the marker makes it due
        with store.batch() as b:
            store.record_outcome("p", "not_due", "token_valid", pipeline=b)
        assert store.status("p").last_reason == "token_valid"
        assert store.record_failure("p", store.time(), "m", "server_error",
                                    store.time() + 5) is not None
        assert store.wait_for(lambda: store.get_token("p"), time.monotonic() + 2) == token
        sub = store.pubsub()
        assert store.purge("p")
        assert wait_until(lambda: (m := sub.get_message(timeout=0.2)) is not None
                          and "p" in m["data"], 5)
        sub.close()
        store.forget("p")
        assert store.registered_profiles() == {}
        store._fcall_after = float("inf")  # the plain-command read path
        assert store.read_raw("p")[0] is None
        store.publish("p", token)
        assert store.get_token("p") == token
        store.close()


def test_a_cluster_store_follows_a_master_failover() -> None:
    with RedisCluster(replicas=1) as cluster:
        store = TokenStore.open(RedisTarget(cluster.url, socket_timeout_seconds=1.0))
        token = make_token(store, 300)
        assert store.publish("p", token) == 1
        owner = cluster.node_for_key("{stitch}:token:p")
        store.redis.execute_command("WAIT", 1, 2000,  # type: ignore[no-untyped-call]
                                    target_nodes=store.redis.get_node_from_key(  # type: ignore[attr-defined]
                                        "{stitch}:token:p"))
        cluster.fail_over(owner, kill=True)
        assert wait_until(lambda: _gets(store, token), 20)
        assert store.publish("p", make_token(store, 600, access="tok-B")) == 1
        store.close()


def _gets(store: TokenStore, token: object) -> bool:
    try:
        return store.get_token("p") == token
    except Exception:  # noqa: BLE001 - any error while the cluster settles: try again
        return False


def test_wait_replicas_acknowledges_each_publish(caplog: pytest.LogCaptureFixture) -> None:
    with SentinelSet() as sentinels:
        store = TokenStore.open(RedisTarget(sentinels.url, wait_replicas=1, wait_timeout_ms=2000))
        started = time.monotonic()
        assert store.publish("payments", make_token(store, 300)) == 1
        assert time.monotonic() - started < 2  # acknowledged, not timed out
        assert not [r for r in caplog.records if "acknowledged by" in r.getMessage()]
        # more replicas than there are: published all the same, after the timeout, logged
        more = TokenStore.open(RedisTarget(sentinels.url, wait_replicas=2, wait_timeout_ms=200))
        assert more.publish("payments", make_token(more, 400, access="tok-C")) == 1
        assert [r for r in caplog.records if "acknowledged by 1 of 2" in r.getMessage()]
        store.close()
        more.close()


def test_a_targets_repr_never_shows_a_password() -> None:
    target = RedisTarget("redis://reader:pa%2Fss-Zq8@127.0.0.1:6379/0",
                         sentinel_password="s3cret-sentinel")
    shown = f"{target!r} {target}"
    assert "pa%2Fss-Zq8" not in shown and "pa/ss" not in shown
    assert "s3cret-sentinel" not in shown
    assert "127.0.0.1:6379" in shown
