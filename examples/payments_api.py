"""A payments service on FastAPI (or any asyncio app): async reads, httpx, 401 healing.

The service never holds the client secret and never calls the token endpoint: it reads
the fleet's token from Redis with :class:`token_worker.aio.AsyncTokenReader`, and its
httpx client's auth reports a 401, waits for the fleet's replacement and resends once.
Run it (see README.md; needs ``pip install fastapi uvicorn 'token_worker[httpx]'``)::

    TOKEN_WORKER_CONFIG=token_worker.toml uvicorn payments_api:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException

from token_worker import TokenUnavailable
from token_worker.aio import AsyncTokenReader

STITCH_API_URL = os.environ.get("STITCH_API_URL", "http://127.0.0.1:8400/api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # one reader and one client per process, in the server's event loop
    reader = AsyncTokenReader.from_config()        # only [redis] is used: no secret here
    async with httpx.AsyncClient(auth=reader.httpx_auth("payments"), timeout=30) as client:
        app.state.reader, app.state.stitch = reader, client
        yield
    await reader.aclose()


app = FastAPI(lifespan=lifespan)


@app.post("/payments")
async def create_payment(payment: dict[str, Any]) -> dict[str, Any]:
    try:
        response = await app.state.stitch.post(STITCH_API_URL, json=payment)
    except TokenUnavailable as exc:    # no token yet (a fresh fleet, Redis down too long)
        raise HTTPException(status_code=503, detail=exc.reason) from None
    # a 401 here was retried once with the replacement already: it is the API's answer
    return {"status": response.status_code, "body": response.json()}


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    token = await app.state.reader.get("payments")   # raises TokenUnavailable when none
    return {"payments": {"fingerprint": token.fingerprint, "expires_in": token.expires_in}}
