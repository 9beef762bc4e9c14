"""The cluster ACL file (ops/redis-acl-cluster.conf) on a real cluster: the same users,
the same limits, with the hash-tagged prefix and what a cluster client must ask."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from token_worker import TokenReader
from token_worker.config import parse_config
from token_worker.exceptions import StoreError
from token_worker.refresh import Refresher
from token_worker.status import read_statuses
from token_worker.store import RedisTarget, TokenStore
from token_worker.testing.emulator import Emulator
from token_worker.testing.topologies import RedisCluster

from .acl_support import PASSWORDS
from .support import CLIENT_ID, REPO, make_token

ACL_FILE = REPO / "ops" / "redis-acl-cluster.conf"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as c:
        text = ACL_FILE.read_text()
        for port in c.ports:
            node = redis.Redis(port=port, decode_responses=True)
            for line in text.splitlines():
                words = shlex.split(line)
                if not words or words[0] != "user" or words[1] in ("default", "admin"):
                    continue  # the cluster's own default user stays: it built the cluster
                rules = [("#" + hashlib.sha256(PASSWORDS[words[1]].encode()).hexdigest()
                          if w == f"#{words[1].upper()}_PASSWORD_SHA256" else w)
                         for w in words[2:]]
                node.execute_command("ACL", "SETUSER", words[1], *rules)
            node.close()
        yield c


def _url(cluster: RedisCluster, user: str) -> str:
    return cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{PASSWORDS[user]}@")


def test_the_cluster_file_is_the_plain_one_with_the_prefix_as_hash_tag() -> None:
    plain = (REPO / "ops" / "redis-acl.conf").read_text()
    clustered = ACL_FILE.read_text()
    assert "~stitch:" not in clustered and "&stitch:" not in clustered
    assert clustered.count("{stitch}:") >= plain.count("stitch:")


def test_each_user_does_its_job_and_no_more_on_a_cluster(
        cluster: RedisCluster, emulator: Emulator, tmp_path: Path, secret_env: str) -> None:
    data = {
        "redis": {"url": _url(cluster, "refresher")}, "celery": {"broker_url": "amqp://mq//"},
        "stitch": {"token_url": emulator.url},
        "clients": {"main": {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"}},
        "profiles": {"payments": {"scopes": ["client_paymentrequest"]}},
    }
    refresher = Refresher.from_config(parse_config(data))
    try:
        refresher.sync_profiles()
        assert refresher.refresh_profile("payments").outcome == "refreshed"
        assert refresher.due_profiles() == []
    finally:
        refresher.close()
    reader = TokenReader(_url(cluster, "reader"))
    try:
        token = reader.get("payments")
        assert reader.store._fcall_after == 0.0  # the function path, as on one server
        assert reader.report_rejected("payments", token)
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.store.redis.zadd("{stitch}:schedule", {"payments": 0})
        with pytest.raises(StoreError):
            reader.store.purge("payments")
    finally:
        reader.close()
    observer = TokenStore.open(RedisTarget(_url(cluster, "observer")))
    try:
        rows = read_statuses(parse_config(data), observer, locks=True)
        assert rows[0].state == "refresh_due"  # reported rejected
        with pytest.raises(StoreError):
            observer.get_token("payments")  # never sees a token
        with pytest.raises(StoreError):
            observer.publish("payments", make_token(observer, 60))
    finally:
        observer.close()
