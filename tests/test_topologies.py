"""token_worker.testing.topologies: real Sentinel and Cluster processes that fail over."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.sentinel import Sentinel

from token_worker.testing.topologies import RedisCluster, SentinelSet

PASSWORD = "Tq3-data"
SENTINEL_PASSWORD = "Zr8-sentinel"


def test_sentinel_and_cluster_urls_follow_the_contract() -> None:
    plain, secured = SentinelSet(), SentinelSet("payments", password="p w", username="u")
    hosts = ",".join(f"127.0.0.1:{port}" for port in plain.sentinel_ports)
    assert plain.url == f"redis+sentinel://{hosts}/mymaster/0"
    assert secured.url.startswith("redis+sentinel://u:p%20w@127.0.0.1:")
    assert secured.url.endswith("/payments/0")
    assert SentinelSet(password="pw").url.startswith("redis+sentinel://:pw@")
    cluster = RedisCluster()
    assert cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{port}" for port in cluster.ports) + "/"
    assert 6379 not in cluster.ports and all(port + 10000 <= 65535 for port in cluster.ports)


def test_a_topology_that_does_not_start_leaves_no_process_or_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topology = SentinelSet(extra_args=["--no-such-option", "yes"])
    with pytest.raises(RuntimeError, match="did not start"):
        topology.start()
    assert topology.nodes == [] and topology.dir is None
    # a temp dir of its own: parallel tests start topologies in the shared one
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        RedisCluster(masters=2).start()  # redis-cli wants three masters; no dir is left
    assert not [d for d in os.listdir(tmp_path) if d.startswith("tw-topology-")]


def test_sentinel_fails_over_to_the_replica_that_has_the_data() -> None:
    with SentinelSet(password=PASSWORD, sentinel_password=SENTINEL_PASSWORD) as topology:
        directory = topology.dir
        assert topology.url.startswith(f"redis+sentinel://:{PASSWORD}@")
        sentinel = Sentinel([("127.0.0.1", port) for port in topology.sentinel_ports],
                            sentinel_kwargs={"password": SENTINEL_PASSWORD}, socket_timeout=1)
        primary = sentinel.master_for("mymaster", password=PASSWORD, decode_responses=True)
        primary.set("{stitch}:token:payments", "v1")
        assert primary.wait(1, 1000) == 1

        old = topology.kill_primary()
        seconds = topology.wait_for_failover(old, timeout=30)

        new = topology.primary_port
        assert new != old and 0 < seconds < 30
        assert topology.node(new).client().execute_command("ROLE")[0] == "master"
        assert primary.get("{stitch}:token:payments") == "v1"
        topology.restart_node(old)  # it comes back as a master, empty, until Sentinel
        rejoined = topology.wait_for_replica(old, timeout=30)  # makes it a replica
        assert topology.node(old).client().get("{stitch}:token:payments") == "v1"
        print(f"sentinel failover {seconds:.1f} s, rejoin {rejoined:.1f} s")
    assert topology.nodes == [] and directory is not None and not os.path.exists(directory)


def test_cluster_keys_of_one_prefix_share_a_slot_on_the_master_that_serves_it() -> None:
    cluster = RedisCluster()
    # another process takes a node's bus port after it was chosen: new ports, no failure
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", cluster.ports[1] + 10000))
    taken = squatter.getsockname()[1]
    with squatter, cluster:
        assert taken not in {*cluster.ports, *(p + 10000 for p in cluster.ports)}
        client = ClusterClient(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports],
                               decode_responses=True)
        client.set("{stitch}:a", "1")
        client.set("{stitch}:b", "2")
        slot = cluster.keyslot("{stitch}:a")
        assert slot == cluster.keyslot("{stitch}:b") == client.keyslot("{stitch}:b")
        owner = cluster.node_for_key("{stitch}:a")
        assert owner == cluster.master_for_slot(slot) in cluster.ports
        assert cluster.node(owner).client().mget("{stitch}:a", "{stitch}:b") == ["1", "2"]
        assert cluster.replicas_of(owner) == []
        client.close()


def test_cluster_fails_over_by_hand_and_by_kill_and_keeps_the_keys() -> None:
    with RedisCluster(replicas=1) as cluster:
        assert len(cluster.nodes) == 6
        client = ClusterClient(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports],
                               decode_responses=True)
        client.set("{stitch}:a", "1")
        client.set("{stitch}:b", "2")
        first = cluster.node_for_key("{stitch}:a")
        (replica,) = cluster.replicas_of(first)

        by_hand = cluster.fail_over(first)
        assert cluster.node_for_key("{stitch}:a") == replica
        assert cluster.replicas_of(replica) == [first]
        assert client.mget("{stitch}:a", "{stitch}:b") == ["1", "2"]

        client.set("{stitch}:a", "3")
        assert redis.Redis(port=replica).wait(1, 1000) == 1
        by_kill = cluster.fail_over(replica, kill=True)
        assert cluster.node_for_key("{stitch}:b") == first
        assert cluster.node(replica).proc is None
        assert client.mget("{stitch}:a", "{stitch}:b") == ["3", "2"]
        print(f"cluster failover by hand {by_hand:.1f} s, by kill {by_kill:.1f} s")
        client.close()
