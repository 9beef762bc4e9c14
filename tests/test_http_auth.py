"""auth.py, httpx_auth.py, aiohttp_auth.py: on a 401, one report, one refresh, one retry.

Everything is real: a Redis, the token endpoint emulator, a worker's Listener that
refreshes on a report, and a small HTTP API (below) that accepts only the token
currently published in Redis, unless the test revoked it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import httpx
import pytest
import redis
import requests
from requests.adapters import HTTPAdapter

from token_worker import TokenReader
from token_worker.aiohttp_auth import bearer_middleware
from token_worker.auth import BearerAuth, SyncReader
from token_worker.config import Config
from token_worker.httpx_auth import HttpxBearerAuth
from token_worker.listener import Listener
from token_worker.refresh import Refresher
from token_worker.store import TokenStore
from token_worker.testing.emulator import Emulator
from token_worker.tokens import Token, fingerprint

UNAUTHENTICATED = b'{"error":"UNAUTHENTICATED"}'
# (client, reader): "sync" a TokenReader; "coro" the same behind plain coroutines (any
# object with awaitable get/report_rejected); "aio" token_worker.aio.AsyncTokenReader
CASES = [("requests", "sync"), ("httpx", "sync"), ("httpx_async", "sync"),
         ("httpx_async", "coro"), ("httpx_async", "aio"), ("aiohttp", "sync"),
         ("aiohttp", "coro"), ("aiohttp", "aio")]
IDS = [f"{client}-{reader}" for client, reader in CASES]


class Api:
    """200 for the token published in Redis unless revoked, else 401; records requests."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self.revoked: set[str] = set()
        self.revoke_all = False
        self.redirect_to: str | None = None
        self.seen: list[tuple[str | None, int]] = []  # (fingerprint, status) per request
        self.first_401_at: float | None = None
        self.first_200_at: float | None = None
        self._lock = threading.Lock()
        self._hold = 0
        self._held = 0
        self._release = threading.Event()
        self.released = self._release  # set once the held answers are let go
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/payments"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def hold(self, n: int) -> None:
        """Keep the first ``n`` answers to a revoked token until all ``n`` have come."""
        self._hold, self._held = n, 0
        self._release.clear()

    def answer(self, authorization: str | None) -> int:
        token = authorization.removeprefix("Bearer ") if authorization else None
        published = self.store.get_token("payments")
        ok = (token is not None and published is not None and token == published.access_token
              and token not in self.revoked and not self.revoke_all)
        status = 200 if ok else 401
        if not ok and token in self.revoked and self._hold:
            with self._lock:
                self._held += 1
                if self._held >= self._hold:
                    self._release.set()
            self._release.wait(10)
        with self._lock:
            self.seen.append((fingerprint(token) if token else None, status))
            if status == 401 and self.first_401_at is None:
                self.first_401_at = time.monotonic()
            if status == 200 and self.first_200_at is None:
                self.first_200_at = time.monotonic()
        return status

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of 100 connects must not overflow the backlog


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            data += self.rfile.read(size + 2)[:-2]
        self.rfile.readline()
        return data

    def do_GET(self) -> None:
        api: Api = self.server.api  # type: ignore[attr-defined]
        self._body()
        if api.redirect_to and self.path.endswith("/redirect"):
            self._send(302, b"", {"Location": api.redirect_to})
            return
        status = api.answer(self.headers.get("Authorization"))
        self._send(status, b'{"ok":true}' if status == 200 else UNAUTHENTICATED)

    do_POST = do_GET

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class CoroutineReader:
    """A real TokenReader behind coroutines (the async-reader protocol)."""

    def __init__(self, reader: TokenReader) -> None:
        self.reader = reader

    async def get(self, profile: str, wait: float | None = None) -> Token:
        return await asyncio.to_thread(self.reader.get, profile, wait)

    async def report_rejected(self, profile: str, token: Token | str) -> bool:
        return await asyncio.to_thread(self.reader.report_rejected, profile, token)


@dataclass
class Result:
    status: int
    body: bytes
    history: list[int] | None  # statuses of earlier answers (aiohttp keeps none)


def run(client: str, reader_kind: str, reader: TokenReader, url: str, n: int = 1,
        wait: float = 20.0, redis_url: str = "") -> tuple[list[Result], list[str]]:
    """``n`` concurrent GETs through the client under test; (results, reprs shown)."""
    if client not in ("requests", "httpx"):
        return asyncio.run(_run_async(client, reader_kind, reader, url, n, wait, redis_url))
    auth: BearerAuth | HttpxBearerAuth
    if client == "requests":
        auth = BearerAuth(reader, "payments", wait=wait)
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_maxsize=n))
        session.auth = auth

        def send() -> requests.Response | httpx.Response:
            return session.get(url, timeout=10)

        close = session.close
    else:
        auth = HttpxBearerAuth(reader, "payments", wait=wait)
        hclient = httpx.Client(auth=auth, timeout=10, limits=httpx.Limits(max_connections=n))
        send, close = (lambda: hclient.get(url)), hclient.close

    def one(_: int) -> Result:
        r = send()
        return Result(r.status_code, r.content, [h.status_code for h in r.history])

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n))), [repr(auth)]
    finally:
        close()


async def _run_async(client: str, reader_kind: str, reader: TokenReader, url: str, n: int,
                     wait: float, redis_url: str) -> tuple[list[Result], list[str]]:
    used: Any = reader
    if reader_kind == "coro":
        used = CoroutineReader(reader)
    elif reader_kind == "aio":
        from token_worker.aio import AsyncTokenReader

        used = AsyncTokenReader(redis_url)
    try:
        if client == "httpx_async":
            auth = HttpxBearerAuth(used, "payments", wait=wait)
            async with httpx.AsyncClient(auth=auth, timeout=10) as hclient:
                async def one_httpx() -> Result:
                    r = await hclient.get(url)
                    return Result(r.status_code, r.content, [h.status_code for h in r.history])

                return list(await asyncio.gather(*(one_httpx() for _ in range(n)))), \
                    [repr(auth), repr(used)]
        middleware = bearer_middleware(used, "payments", wait=wait)
        async with aiohttp.ClientSession(middlewares=[middleware]) as session:
            async def one_aiohttp() -> Result:
                async with session.get(url) as r:
                    return Result(r.status, await r.read(), None)

            return list(await asyncio.gather(*(one_aiohttp() for _ in range(n)))), \
                [repr(middleware), repr(used)]
    finally:
        if reader_kind == "aio":
            await used.aclose()


@pytest.fixture
def api(store: TokenStore) -> Iterator[Api]:
    server = Api(store)
    yield server
    server.stop()


def close_woken(close: Callable[[], object], store: TokenStore) -> None:
    """Run ``close`` while waking the subscriber threads it joins (they poll once a
    second): a message on the events channel that is no event makes them see their
    stop flag at once."""
    closing = threading.Thread(target=close)
    closing.start()
    while closing.is_alive():
        store.redis.publish(store.keys.events(), "wake")
        closing.join(0.02)


@pytest.fixture
def listener(config: Config, store: TokenStore) -> Iterator[Listener]:
    """A worker's listener: refreshes a profile once when its token is reported."""
    running = Listener(Refresher.from_config(config))
    running.start()
    assert running.subscribed.wait(5), "the listener did not subscribe"
    yield running

    def close() -> None:
        running.stop(5)
        running.refresher.close()

    close_woken(close, store)


@pytest.fixture
def reader(redis_url: str, refresher: Refresher, store: TokenStore) -> Iterator[TokenReader]:
    refresher.refresh_profile("payments")
    r = TokenReader(redis_url)
    yield r
    close_woken(r.close, store)


def assert_no_token_shown(caplog: pytest.LogCaptureFixture, emulator: Emulator,
                          *shown: object) -> None:
    """No token issued so far in any log record (all loggers, DEBUG) or repr."""
    texts = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    texts += [repr(thing) for thing in shown]
    assert emulator.issued_tokens
    for token in emulator.issued_tokens:
        assert not [t for t in texts if token in t]


def published(api: Api) -> Token:
    """The token in Redis now (a reader's cache may lag the publish by milliseconds)."""
    token = api.store.get_token("payments")
    assert token is not None
    return token


def revoke_current(api: Api, reader: TokenReader) -> Token:
    token = reader.get("payments")
    api.revoked.add(token.access_token)
    return token


@pytest.fixture(params=CASES, ids=IDS)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    client, reader_kind = request.param
    return client, reader_kind


def test_a_revoked_token_is_reported_replaced_once_and_the_request_retried(
        case: tuple[str, str], api: Api, reader: TokenReader, listener: Listener,
        emulator: Emulator, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, the HTTP clients', the asyncio's
    old = revoke_current(api, reader)
    calls = emulator.calls
    [result], reprs = run(*case, reader, api.url, redis_url=redis_url)
    assert result.status == 200 and result.body == b'{"ok":true}'
    assert result.history in (None, [401])
    assert emulator.calls == calls + 1
    new = published(api)
    assert api.seen == [(old.fingerprint, 401), (new.fingerprint, 200)]
    assert any("retrying once" in r.getMessage() for r in caplog.records)
    assert_no_token_shown(caplog, emulator, *reprs, reader, old, new)


def test_a_second_401_is_returned_as_it_is_and_nothing_more_is_sent(
        case: tuple[str, str], api: Api, reader: TokenReader, listener: Listener,
        emulator: Emulator, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    revoke_current(api, reader)
    api.revoke_all = True  # the replacement is refused too
    calls = emulator.calls
    [result], reprs = run(*case, reader, api.url, redis_url=redis_url)
    time.sleep(0.3)  # room for a third request to show
    assert result.status == 401 and result.body == UNAUTHENTICATED
    assert result.history in (None, [401])
    assert [status for _, status in api.seen] == [401, 401]
    assert len({fp for fp, _ in api.seen}) == 2  # the second carried the replacement
    assert emulator.calls == calls + 1
    assert_no_token_shown(caplog, emulator, *reprs)


def test_a_hundred_concurrent_401s_cost_one_endpoint_call_and_all_succeed_on_retry(
        case: tuple[str, str], api: Api, reader: TokenReader, listener: Listener,
        emulator: Emulator, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    n = 100
    old = revoke_current(api, reader)
    api.hold(n)  # every request is in flight with the revoked token before any 401 leaves
    calls = emulator.calls
    results, reprs = run(*case, reader, api.url, n=n, redis_url=redis_url)
    done = time.monotonic()
    assert api.first_401_at is not None and api.first_200_at is not None
    print(f"\n{'-'.join(case)}: {n} x 401 -> first retry answered after "
          f"{api.first_200_at - api.first_401_at:.3f}s, all {n} after "
          f"{done - api.first_401_at:.3f}s; endpoint calls {emulator.calls - calls}")
    assert [r.status for r in results] == [200] * n
    assert all(r.history in (None, [401]) for r in results)
    assert emulator.calls == calls + 1
    new = published(api).fingerprint
    assert sorted(api.seen) == sorted([(old.fingerprint, 401)] * n + [(new, 200)] * n)
    assert_no_token_shown(caplog, emulator, *reprs)


@pytest.mark.parametrize("case", [("requests", "sync"), ("httpx_async", "sync"),
                                  ("aiohttp", "aio")],
                         ids=["requests-sync", "httpx_async-sync", "aiohttp-aio"])
def test_concurrent_401s_for_one_token_share_one_report_and_one_wait(
        case: tuple[str, str], api: Api, reader: TokenReader, refresher: Refresher,
        emulator: Emulator, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="token_worker")
    n = 100
    revoke_current(api, reader)
    api.hold(n)
    results: list[list[Result]] = []
    sending = threading.Thread(target=lambda: results.append(
        run(*case, reader, api.url, n=n, redis_url=redis_url)[0]))
    sending.start()
    assert api.released.wait(10)
    time.sleep(1.0)  # every request has its 401 and waits (no listener: no refresh yet)
    refresher.refresh_profile("payments")  # due: its token was reported
    sending.join(10)
    assert [r.status for r in results[0]] == [200] * n
    reports = [r for r in caplog.records if r.name == "token_worker.reader"
               and r.getMessage().startswith("token rejected by the API reported")]
    assert len(reports) == 1


@pytest.mark.parametrize("case", [("requests", "sync"), ("httpx", "sync"),
                                  ("httpx_async", "coro"), ("aiohttp", "sync")],
                         ids=["requests-sync", "httpx-sync", "httpx_async-coro",
                              "aiohttp-sync"])
def test_no_replacement_in_time_returns_the_first_401_after_the_wait(
        case: tuple[str, str], api: Api, reader: TokenReader, rds: redis.Redis,
        emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    old = revoke_current(api, reader)  # and no listener: nobody refreshes
    started = time.monotonic()
    [result], reprs = run(*case, reader, api.url, wait=0.3)
    took = time.monotonic() - started
    assert result.status == 401 and result.body == UNAUTHENTICATED
    assert result.history in (None, [])
    assert api.seen == [(old.fingerprint, 401)]
    assert rds.get("stitch:rejected:payments") == old.fingerprint  # reported all the same
    assert 0.3 <= took < 3
    assert any("no replacement came within 0.3s" in r.getMessage() for r in caplog.records)
    assert_no_token_shown(caplog, emulator, *reprs)


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_streamed_body_is_reported_but_not_sent_twice(
        client: str, api: Api, reader: TokenReader, listener: Listener,
        rds: redis.Redis) -> None:
    old = revoke_current(api, reader)

    def chunks() -> Iterator[bytes]:
        yield b"part one, "
        yield b"part two"

    if client == "requests":
        status = requests.post(api.url, data=chunks(), timeout=5,
                               auth=BearerAuth(reader, "payments")).status_code
    else:
        with httpx.Client(auth=HttpxBearerAuth(reader, "payments"), timeout=5) as hclient:
            status = hclient.post(api.url, content=chunks()).status_code
    assert status == 401
    assert api.seen == [(old.fingerprint, 401)]
    assert rds.get("stitch:rejected:payments") == old.fingerprint


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_401_after_a_redirect_to_another_origin_reports_nothing(
        client: str, api: Api, store: TokenStore, reader: TokenReader,
        rds: redis.Redis) -> None:
    other = Api(store)  # another port: another origin, which never sees our header
    try:
        api.redirect_to = other.url
        url = api.url + "/redirect"
        if client == "requests":
            status = requests.get(url, timeout=5, auth=BearerAuth(reader, "payments")
                                  ).status_code
        else:
            with httpx.Client(auth=HttpxBearerAuth(reader, "payments"), timeout=5,
                              follow_redirects=True) as hclient:
                status = hclient.get(url).status_code
        assert status == 401
        assert other.seen == [(None, 401)]
        assert rds.get("stitch:rejected:payments") is None
    finally:
        other.stop()


def test_aiohttp_middleware_sends_the_token_to_its_origin_only(
        api: Api, store: TokenStore, reader: TokenReader) -> None:
    other = Api(store)

    async def go() -> list[int]:
        middleware = bearer_middleware(reader, "payments", origin=api.url)
        async with aiohttp.ClientSession(middlewares=[middleware]) as session:
            statuses = []
            for url in (other.url, api.url):
                async with session.get(url) as r:
                    statuses.append(r.status)
            return statuses

    try:
        assert asyncio.run(go()) == [401, 200]
        assert other.seen == [(None, 401)]
        assert api.seen == [(reader.get("payments").fingerprint, 200)]
    finally:
        other.stop()


def test_httpx_sync_client_refuses_an_async_reader(api: Api, reader: TokenReader) -> None:
    with httpx.Client(auth=HttpxBearerAuth(CoroutineReader(reader), "payments")) as hclient:
        with pytest.raises(TypeError, match="httpx.AsyncClient"):
            hclient.get(api.url)
    assert api.seen == []


def test_a_token_reader_satisfies_the_reader_protocol(reader: TokenReader) -> None:
    typed: SyncReader = reader  # checked by mypy on this file
    assert typed.get("payments").token_type == "Bearer"


SHARED = [c for c in CASES if c[1] != "aio"]  # the reader that reported is the one used


@pytest.mark.parametrize("case", SHARED, ids=[f"{c}-{r}" for c, r in SHARED])
def test_a_request_made_while_the_token_awaits_its_replacement_waits_for_it(
        case: tuple[str, str], api: Api, reader: TokenReader, refresher: Refresher,
        emulator: Emulator, redis_url: str) -> None:
    # another request's 401 was reported a moment ago; the fleet's replacement comes 0.5 s
    # later: a new request waits for it (up to the wait) instead of failing unsent
    old = reader.get("payments")
    assert reader.report_rejected("payments", old)
    timer = threading.Timer(0.5, lambda: refresher.refresh_profile("payments"))
    timer.start()
    try:
        [result], _ = run(*case, reader, api.url, redis_url=redis_url, wait=5.0)
    finally:
        timer.join()
    new = published(api)
    assert new.fingerprint != old.fingerprint
    assert result.status == 200
    assert api.seen == [(new.fingerprint, 200)]  # sent once, with the replacement


def test_an_async_readers_request_waits_for_the_replacement_of_a_token_it_reported(
        api: Api, refresher: Refresher, redis_url: str, reader: TokenReader) -> None:
    from token_worker.aio import AsyncTokenReader

    async def scenario() -> tuple[Token, int]:
        async with AsyncTokenReader(redis_url) as aio:
            old = await aio.get("payments")
            assert await aio.report_rejected("payments", old)
            timer = threading.Timer(0.5, lambda: refresher.refresh_profile("payments"))
            timer.start()
            try:
                async with httpx.AsyncClient(auth=aio.httpx_auth("payments")) as client:
                    response = await client.get(api.url)
            finally:
                timer.join()
            return old, response.status_code

    old, status = asyncio.run(scenario())
    new = published(api)
    assert new.fingerprint != old.fingerprint and status == 200
    assert api.seen == [(new.fingerprint, 200)]
