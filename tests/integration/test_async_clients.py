"""A real worker with beat, an asyncio service's reader, and a 401 storm it heals."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import pytest

from token_worker.aio import AsyncTokenReader

from .conftest import Fleet

pytestmark = pytest.mark.integration


def test_a_storm_of_401s_costs_one_call_and_every_request_is_retried_once(
        fleet: Fleet) -> None:
    config = fleet.config(profiles={"payments": ["client_paymentrequest"]})
    worker = fleet.start_worker(config)
    worker.wait_ready()
    api = fleet.emulator.base_url + "/api"

    async def scenario() -> dict[str, object]:
        async with AsyncTokenReader.from_config(str(config)) as reader:
            token = await reader.get("payments", wait=60)
            fleet.emulator.revoke(token.access_token)
            calls = fleet.emulator.calls
            started = time.monotonic()
            # a generous wait: the assertion is one call and one retry each, not how fast a
            # loaded CI machine's worker answers the report
            async with httpx.AsyncClient(auth=reader.httpx_auth("payments", wait=30),
                                         timeout=60) as client:
                answers = await asyncio.gather(*[client.post(api) for _ in range(100)])
            took = time.monotonic() - started
            # the replacement, through aiohttp's middleware this time: no 401 at all
            async with aiohttp.ClientSession(
                    middlewares=[reader.aiohttp_middleware("payments", wait=30)]) as session:
                async with session.post(api) as reply:
                    again = reply.status
            return {"answers": answers, "took": took, "calls": fleet.emulator.calls - calls,
                    "again": again}

    out = asyncio.run(scenario())
    answers = out["answers"]
    assert isinstance(answers, list)
    print(f"\n100 requests with a revoked token: all retried in {out['took']:.2f}s, "
          f"{out['calls']} endpoint call")
    assert [a.status_code for a in answers] == [200] * 100
    assert all(len(a.history) == 1 and a.history[0].status_code == 401 for a in answers)
    assert out["calls"] == 1 and out["again"] == 200
