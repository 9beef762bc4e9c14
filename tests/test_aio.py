"""AsyncTokenReader: the sync reader's semantics, awaited, against a real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from token_worker import TokenUnavailable
from token_worker.aio import AsyncTokenReader
from token_worker.refresh import Refresher
from token_worker.store import TokenStore
from token_worker.testing.redis_server import RedisServer

from .support import env_with, make_token, python


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_get_reads_the_published_token_and_caches_it(store: TokenStore,
                                                       redis_url: str) -> None:
    token = make_token(store, 300)
    store.publish("payments", token)

    async def scenario() -> None:
        async with AsyncTokenReader(redis_url) as reader:
            got = await reader.get("payments")
            assert got == token and 299 < got.expires_in <= 300
            assert await reader.get_access_token("payments") == token.access_token
            for _ in range(50):  # subscribed: served from memory, no read
                if reader._healthy:
                    break
                await asyncio.sleep(0.05)
            assert reader._healthy
            first = await reader.get("payments")
            assert await reader.get("payments") is first
            # a publish invalidates the cache within the channel's delivery time
            newer = make_token(store, 600, access="tok-B")
            store.publish("payments", newer)
            for _ in range(100):
                if (await reader.get("payments")) == newer:
                    break
                await asyncio.sleep(0.01)
            assert (await reader.get("payments")) == newer
    run(scenario())


def test_the_same_reasons_and_messages_as_the_sync_reader(store: TokenStore,
                                                          redis_url: str) -> None:
    from token_worker import TokenReader

    async def reasons() -> list[tuple[str, str]]:
        out = []
        async with AsyncTokenReader(redis_url, profiles=["payments"]) as reader:
            for profile in ("payments", "nope"):
                try:
                    await reader.get(profile)
                except TokenUnavailable as exc:
                    out.append((exc.reason, str(exc)))
        return out

    sync = TokenReader(redis_url, profiles=["payments"])
    expected = []
    for profile in ("payments", "nope"):
        with pytest.raises(TokenUnavailable) as info:
            sync.get(profile)
        expected.append((info.value.reason, str(info.value)))
    sync.close()
    assert run(reasons()) == expected
    assert [r for r, _ in expected] == ["never_fetched", "unknown_profile"]


def test_serve_stale_when_redis_is_gone_then_unreachable() -> None:
    async def scenario(server: RedisServer) -> None:
        store = TokenStore.open(__import__("token_worker.store").store.RedisTarget(server.url))
        store.publish("payments", make_token(store, 300))
        store.close()
        reader = AsyncTokenReader(server.url, socket_timeout=0.5, cache=False)
        held = await reader.get("payments")
        server.kill()
        assert await reader.get("payments") == held  # the token it holds
        strict = AsyncTokenReader(server.url, socket_timeout=0.5, serve_stale=False)
        with pytest.raises(TokenUnavailable) as info:
            await strict.get("payments")
        assert info.value.reason == "redis_unreachable"
        assert f"127.0.0.1:{server.port}" in str(info.value)
        await reader.aclose()
        await strict.aclose()

    with RedisServer() as server:
        run(scenario(server))


def test_wait_returns_a_token_published_meanwhile(store: TokenStore, redis_url: str) -> None:
    async def scenario() -> None:
        async with AsyncTokenReader(redis_url) as reader:
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, store.publish, "payments", make_token(store, 300))
            started = time.monotonic()
            token = await reader.get("payments", wait=10)
            assert token.access_token == "tok-A" and time.monotonic() - started < 3
            with pytest.raises(TokenUnavailable):
                await reader.get("refunds", wait=0.3)
    run(scenario())


def test_report_rejected_stops_serving_and_a_refresh_replaces_it(
        refresher: Refresher, redis_url: str) -> None:
    refresher.refresh_profile("payments")

    async def scenario() -> None:
        async with AsyncTokenReader(redis_url) as reader:
            token = await reader.get("payments")
            assert await reader.report_rejected("payments", token) is True
            assert await reader.report_rejected("payments", token) is False
            with pytest.raises(TokenUnavailable) as info:
                await reader.get("payments")
            assert info.value.reason == "rejected"
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, refresher.refresh_profile, "payments")
            replacement = await reader.get("payments", wait=10)
            assert replacement.access_token != token.access_token
    run(scenario())


def test_many_concurrent_tasks_share_one_reader(store: TokenStore, redis_url: str) -> None:
    token = make_token(store, 300)
    store.publish("payments", token)

    async def scenario() -> None:
        async with AsyncTokenReader(redis_url) as reader:
            got = await asyncio.gather(*[reader.get("payments") for _ in range(500)])
            assert all(t == token for t in got)
    run(scenario())


def test_another_event_loop_or_a_forked_child_is_refused_clearly(store: TokenStore,
                                                                 redis_url: str) -> None:
    store.publish("payments", make_token(store, 300))
    reader = AsyncTokenReader(redis_url)
    # loops of their own, run without asyncio.run's cancel-everything at exit, which hung
    # twice under xdist in the parallel phase cancelling the reader's subscription task;
    # the reader is closed in its own loop at the end
    own, other = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        own.run_until_complete(reader.get("payments"))
        with pytest.raises(RuntimeError, match="another event loop"):
            other.run_until_complete(reader.get("payments"))
    finally:
        other.close()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            asyncio.new_event_loop().run_until_complete(reader.get("payments"))
        except RuntimeError as exc:
            code = 0 if "another process" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        own.run_until_complete(reader.aclose())
        own.close()


def test_importing_it_loads_no_celery_requests_or_pydantic() -> None:
    code = ("import sys, token_worker.aio; "
            "print([m for m in ('celery', 'requests', 'pydantic') if m in sys.modules])")
    out = subprocess.run([python(), "-c", code], capture_output=True, text=True,
                         env=env_with(), check=True).stdout.strip()
    assert out == "[]", out


def test_from_config_needs_no_credential(tmp_path: object, config_path: object,
                                         store: TokenStore, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    store.publish("payments", make_token(store, 300))
    monkeypatch.delenv("STITCH_CLIENT_SECRET", raising=False)

    async def scenario() -> None:
        reader = AsyncTokenReader.from_config(str(config_path))
        try:
            assert (await reader.get("payments")).access_token == "tok-A"
            assert reader.core.profiles == {"payments", "refunds"}
        finally:
            await reader.aclose()
    run(scenario())
    assert sys.modules.get("token_worker.aio") is not None


def test_a_thousand_waiters_share_the_readers_subscription(store: TokenStore,
                                                            redis_url: str) -> None:
    async def scenario() -> None:
        async with AsyncTokenReader(redis_url) as reader:
            with pytest.raises(TokenUnavailable):
                await reader.get("payments")
            for _ in range(100):
                if reader._healthy:
                    break
                await asyncio.sleep(0.02)
            loop = asyncio.get_running_loop()
            loop.call_later(0.5, store.publish, "payments", make_token(store, 300))
            before = store.redis.info("clients")["connected_clients"]
            waiters = [asyncio.ensure_future(reader.get("payments", wait=10))
                       for _ in range(1000)]
            await asyncio.sleep(0.2)
            during = store.redis.info("clients")["connected_clients"]
            tokens = await asyncio.gather(*waiters)
            assert {t.access_token for t in tokens} == {"tok-A"}
            assert during - before <= 3  # not one connection per waiter
    run(scenario())


def test_a_purge_after_a_rotation_this_reader_missed_is_not_served_around(
        store: TokenStore, redis_url: str) -> None:
    older = make_token(store, 300, access="tok-A", issued_ago=60)
    newer = make_token(store, 600, access="tok-B")
    store.publish("payments", older)

    async def scenario() -> None:
        async with AsyncTokenReader(redis_url, cache=False) as reader:
            assert await reader.get("payments") == older
            store.publish("payments", newer)  # never read by this reader
            store.purge("payments")
            with pytest.raises(TokenUnavailable):
                await reader.get("payments")
    run(scenario())
