"""The async reader on Sentinel and on a Cluster: reads, reports, and a failover."""

from __future__ import annotations

import asyncio

from token_worker.aio import AsyncTokenReader
from token_worker.exceptions import TokenUnavailable
from token_worker.store import RedisTarget, TokenStore
from token_worker.testing.topologies import RedisCluster, SentinelSet

from .support import make_token


async def _until_served(reader: AsyncTokenReader, access: str, seconds: float) -> bool:
    for _ in range(int(seconds / 0.1)):
        try:
            if (await reader.get("payments")).access_token == access:
                return True
        except TokenUnavailable:
            pass
        await asyncio.sleep(0.1)
    return False


def test_the_async_reader_follows_a_sentinel_failover() -> None:
    with SentinelSet() as sentinels:
        store = TokenStore.open(RedisTarget(sentinels.url, socket_timeout_seconds=1.0))
        store.publish("payments", make_token(store, 300))
        store.redis.execute_command("WAIT", 1, 2000)  # type: ignore[no-untyped-call]

        async def scenario() -> None:
            async with AsyncTokenReader(sentinels.url, socket_timeout=1.0) as reader:
                held = await reader.get("payments")
                assert reader.store.where.startswith("sentinel ")
                old = sentinels.kill_primary()
                # while no primary answers: the token it holds (serve_stale)
                assert await reader.get("payments") == held
                await asyncio.to_thread(sentinels.wait_for_failover, old)
                # a publish on the new primary reaches the same reader
                newer = make_token(store, 600, access="tok-new-primary")
                for _ in range(50):
                    try:
                        store.publish("payments", newer)
                        break
                    except Exception:  # noqa: BLE001 - the sync store reconnects too
                        await asyncio.sleep(0.2)
                assert await _until_served(reader, "tok-new-primary", 15)
                assert await reader.report_rejected("payments", newer)
        asyncio.run(scenario())
        store.close()


def test_the_async_reader_reads_and_reports_on_a_cluster() -> None:
    with RedisCluster() as cluster:
        store = TokenStore.open(RedisTarget(cluster.url))
        assert store.load_functions()
        token = make_token(store, 300)
        store.publish("payments", token)

        async def scenario() -> None:
            async with AsyncTokenReader(cluster.url) as reader:
                assert reader.store.keys.token("payments") == "{stitch}:token:payments"
                assert await reader.get("payments") == token
                assert reader.store._fcall_after == 0.0  # the read function, on its node
                assert await reader.report_rejected("payments", token)
                assert store.due(["payments"])[1] == ["payments"]
                # a publish on the cluster reaches the reader's subscription
                newer = make_token(store, 600, access="tok-B")
                store.publish("payments", newer)
                assert await _until_served(reader, "tok-B", 5)
        asyncio.run(scenario())
        store.close()
