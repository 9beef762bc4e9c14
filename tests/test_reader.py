"""reader.py: TokenReader against real Redis, tokens published by a real refresher."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from token_worker import TokenReader, TokenUnavailable, TokenWorkerError
from token_worker.config import load_config
from token_worker.refresh import Outcome, Refresher
from token_worker.store import TokenStore, connect_redis
from token_worker.testing.emulator import Emulator
from token_worker.tokens import Token

from .support import RedisServer, free_port, wait_until, write_config


@pytest.fixture
def reader(redis_url: str) -> Iterator[TokenReader]:
    r = TokenReader(redis_url, prefix="stitch")
    yield r
    r.close()


def unavailable(reader: TokenReader, profile: str = "payments", **kw: float) -> TokenUnavailable:
    with pytest.raises(TokenUnavailable) as info:
        reader.get(profile, **kw)
    return info.value


# -- the happy path ---------------------------------------------------------------------

def test_get_returns_the_published_token(reader: TokenReader, refresher: Refresher,
                                         emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    token = reader.get("payments")
    assert token.access_token == emulator.issued_tokens[-1]
    assert token.token_type == "Bearer"
    assert token.scopes == ("client_paymentrequest",)
    assert token.expires_at == pytest.approx(time.time() + 3600, abs=5)
    assert 3590 < token.expires_in <= 3600
    assert isinstance(token.expires_in, float)
    assert reader.get_access_token("payments") == token.access_token


def test_reader_never_calls_the_token_endpoint(reader: TokenReader, refresher: Refresher,
                                               emulator: Emulator) -> None:
    unavailable(reader)
    refresher.refresh_profile("payments")
    for _ in range(20):
        reader.get("payments")
    assert emulator.calls == 1


def test_auth_sets_the_bearer_header_for_requests(reader: TokenReader, refresher: Refresher,
                                                  emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    with requests.Session() as session:
        session.auth = reader.auth("payments")
        response = session.post(emulator.base_url + "/api", timeout=5)
        assert response.status_code == 200
        assert response.request.headers["Authorization"] == \
            f"Bearer {emulator.issued_tokens[-1]}"
        # read on every request: a refreshed token is used without a new auth object
        refresher.refresh_profile("payments", force=True)
        assert wait_until(lambda: session.post(emulator.base_url + "/api", timeout=5)
                          .request.headers["Authorization"].endswith(emulator.issued_tokens[-1]),
                          2)
    assert emulator.issued_tokens[-1] not in repr(reader.auth("payments"))


def test_from_config_needs_no_secret(config_path: Path, refresher: Refresher,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    refresher.refresh_profile("payments")
    monkeypatch.delenv("STITCH_CLIENT_SECRET")
    reader = TokenReader.from_config(str(config_path))
    try:
        assert reader.get("payments").token_type == "Bearer"
    finally:
        reader.close()


def test_from_config_honours_the_prefix(tmp_path: Path, redis_url: str, emulator: Emulator,
                                        secret_env: str) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        prefix="acme")
    refresher = Refresher.from_config(load_config(path))
    refresher.refresh_profile("payments")
    refresher.close()
    readers = [TokenReader(redis_url, prefix="acme"), TokenReader.from_config(str(path)),
               TokenReader(redis_url, prefix="stitch")]
    assert readers[0].get("payments").fingerprint == readers[1].get("payments").fingerprint
    assert unavailable(readers[2]).reason == "never_fetched"
    for r in readers:
        r.close()


# -- every reason a token is unavailable ------------------------------------------------

def test_never_fetched_names_the_profile(reader: TokenReader) -> None:
    err = unavailable(reader)
    assert err.reason == "never_fetched" and err.profile == "payments"
    assert "'payments'" in str(err) and "never fetched" in str(err)
    assert isinstance(err, TokenWorkerError)


def test_never_fetched_includes_the_last_refresh_error(reader: TokenReader,
                                                       refresher: Refresher,
                                                       emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope"}])
    refresher.refresh_profile("payments")
    err = unavailable(reader)
    assert err.reason == "never_fetched"
    assert err.last_error is not None and "invalid_scope" in err.last_error
    assert "last refresh error" in str(err) and "invalid_scope" in str(err)


def test_expired_token_is_refused_with_its_reason(refresher: Refresher, emulator: Emulator,
                                                  redis_url: str) -> None:
    emulator.set_expires_in(0.5)
    refresher.refresh_profile("payments")
    reader = TokenReader(redis_url, min_ttl=0.1)
    assert reader.get("payments")
    time.sleep(0.6)
    emulator.set_faults([{"mode": "http_error", "status": 503}])
    refresher.refresh_profile("payments")
    err = unavailable(reader)
    assert err.reason == "expired"
    assert "expired" in str(err) and "server_error" in str(err)
    reader.close()


def test_token_with_less_than_min_ttl_left_is_refused(refresher: Refresher, emulator: Emulator,
                                                      redis_url: str) -> None:
    emulator.set_expires_in(3)
    refresher.refresh_profile("payments")
    strict = TokenReader(redis_url)  # default min_ttl: a few seconds
    err = unavailable(strict)
    assert err.reason == "expired" and "min_ttl" in str(err)
    lenient = TokenReader(redis_url, min_ttl=1)
    assert lenient.get("payments").expires_in > 1
    strict.close()
    lenient.close()


def test_unknown_profile_from_config(config_path: Path, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    reader = TokenReader.from_config(str(config_path))
    err = unavailable(reader, "nope")
    assert err.reason == "unknown_profile"
    assert "'nope'" in str(err) and "payments" in str(err) and "refunds" in str(err)
    reader.close()


def test_unknown_profile_for_a_bare_reader_via_the_registry(reader: TokenReader,
                                                            refresher: Refresher) -> None:
    assert unavailable(reader, "nope").reason == "never_fetched"  # no worker has said yet
    refresher.sync_profiles()
    err = unavailable(reader, "nope")
    assert err.reason == "unknown_profile"
    assert unavailable(reader, "refunds").reason == "never_fetched"  # configured, not fetched


def test_unknown_profile_is_not_waited_for(config_path: Path) -> None:
    reader = TokenReader.from_config(str(config_path))
    started = time.monotonic()
    assert unavailable(reader, "nope", wait=5).reason == "unknown_profile"
    assert time.monotonic() - started < 1
    reader.close()


def test_unreachable_redis_names_host_and_port() -> None:
    port = free_port()
    reader = TokenReader(f"redis://:hunter2@127.0.0.1:{port}/0", socket_timeout=1)
    started = time.monotonic()
    err = unavailable(reader)
    assert time.monotonic() - started < 5
    assert err.reason == "redis_unreachable"
    assert f"127.0.0.1:{port}" in str(err)
    assert "hunter2" not in str(err) and "hunter2" not in repr(reader)


def test_rejected_token_is_not_served_until_replaced(reader: TokenReader, refresher: Refresher,
                                                     emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    token = reader.get("payments")
    assert reader.report_rejected("payments", token) is True
    err = unavailable(reader)
    assert err.reason == "rejected"
    assert refresher.refresh_profile("payments").outcome is Outcome.REFRESHED
    assert reader.get("payments").fingerprint != token.fingerprint


def test_token_unavailable_survives_pickling(reader: TokenReader) -> None:
    err = unavailable(reader)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.profile, copy.reason, str(copy)) == (err.profile, err.reason, str(err))


# -- the cache and waiting --------------------------------------------------------------

def test_cached_reader_sees_a_forced_refresh_within_100ms(redis_url: str, refresher: Refresher,
                                                          rds: redis.Redis) -> None:
    first = refresher.refresh_profile("payments")
    reader = TokenReader(redis_url, cache_max_age=60)
    try:
        reader.get("payments")
        reader.get("payments")  # starts the invalidation listener
        assert wait_until(lambda: reader._invalidator is not None and reader._invalidator.healthy,
                          3)
        reader.get("payments")
        rds.delete("stitch:token:payments")  # behind the reader's back: no event
        assert reader.get("payments").fingerprint == first.fingerprint  # served from cache
        forced = refresher.refresh_profile("payments", force=True)
        published = time.monotonic()
        assert forced.outcome is Outcome.REFRESHED
        while reader.get("payments").fingerprint != forced.fingerprint:
            assert time.monotonic() - published < 0.1, "cache not invalidated on publish"
            time.sleep(0.005)
    finally:
        reader.close()


def test_get_with_wait_returns_a_token_published_meanwhile(reader: TokenReader,
                                                           refresher: Refresher) -> None:
    results: list[Outcome] = []
    timer = threading.Timer(0.3, lambda: results.append(
        refresher.refresh_profile("payments").outcome))
    started = time.monotonic()
    timer.start()
    token = reader.get("payments", wait=5)
    elapsed = time.monotonic() - started
    timer.join()
    assert results == [Outcome.REFRESHED]
    assert token.fingerprint == refresher.store.get_token("payments").fingerprint  # type: ignore[union-attr]
    assert 0.25 <= elapsed < 1.5  # woken by the publish, not by a deadline


def test_get_with_wait_gives_up_at_the_deadline(reader: TokenReader) -> None:
    started = time.monotonic()
    err = unavailable(reader, wait=0.4)
    assert err.reason == "never_fetched"
    assert 0.35 <= time.monotonic() - started < 2


def test_get_with_wait_on_an_unreachable_redis_says_so_at_once() -> None:
    reader = TokenReader(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    started = time.monotonic()
    err = unavailable(reader, wait=10)
    assert err.reason == "redis_unreachable"
    assert time.monotonic() - started < 5  # not the whole wait
    reader.close()


def test_get_with_wait_reports_the_last_reason_when_redis_dies_meanwhile() -> None:
    server = RedisServer().start()
    reader = TokenReader(server.url, socket_timeout=1)
    try:
        timer = threading.Timer(0.3, server.kill)
        started = time.monotonic()
        timer.start()
        err = unavailable(reader, wait=10)
        timer.join()
        assert err.reason == "never_fetched"  # what the last check found, as before
        assert time.monotonic() - started < 5
    finally:
        reader.close()
        server.kill()


def test_serves_the_last_token_while_redis_is_down(emulator: Emulator) -> None:
    server = RedisServer().start()
    try:
        store = TokenStore(connect_redis(server.url), "stitch")
        now = store.time()
        token = Token(access_token="tok-stale-ok", token_type="Bearer", scopes=("a",),
                      issued_at=now, expires_at=now + 600, refresh_at=now + 300)
        store.publish("payments", token)
        stale = TokenReader(server.url, cache=False, socket_timeout=1)
        strict = TokenReader(server.url, cache=False, serve_stale=False, socket_timeout=1)
        assert stale.get("payments").access_token == "tok-stale-ok"
        assert strict.get("payments").access_token == "tok-stale-ok"
        server.kill()
        assert stale.get("payments").access_token == "tok-stale-ok"
        err = unavailable(strict)
        assert err.reason == "redis_unreachable" and str(server.port) in str(err)
        # a reader that never saw a token has nothing to serve
        assert unavailable(TokenReader(server.url, socket_timeout=1)).reason == \
            "redis_unreachable"
        stale.close()
        strict.close()
    finally:
        server.kill()


def test_stale_token_is_not_served_once_rejected(emulator: Emulator) -> None:
    server = RedisServer().start()
    try:
        store = TokenStore(connect_redis(server.url), "stitch")
        now = store.time()
        store.publish("payments", Token(access_token="tok-bad", token_type="Bearer",
                                        scopes=("a",), issued_at=now, expires_at=now + 600,
                                        refresh_at=now + 300))
        reader = TokenReader(server.url, cache=False, socket_timeout=1)
        token = reader.get("payments")
        reader.report_rejected("payments", token)
        server.kill()
        assert unavailable(reader).reason == "redis_unreachable"
        reader.close()
    finally:
        server.kill()


def test_many_rejection_reports_cause_one_refresh(redis_url: str, refresher: Refresher,
                                                  emulator: Emulator, rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    readers = [TokenReader(redis_url) for _ in range(3)]
    token = readers[0].get("payments")
    emulator.revoke(token.access_token)
    with requests.Session() as session:  # a bare header: the reader's auth would retry
        answer = session.post(emulator.base_url + "/api", timeout=5,
                              headers={"Authorization": f"Bearer {token.access_token}"})
    assert answer.status_code == 401
    firsts = [r.report_rejected("payments", token) for r in readers for _ in range(5)]
    assert firsts.count(True) == 1
    assert rds.get("stitch:rejected:payments") == token.fingerprint
    assert "payments" in refresher.due_profiles()
    calls = emulator.calls
    for r in (refresher, Refresher.from_config(refresher.config)):
        r.refresh_profile("payments")  # beat ticks on two workers
    assert emulator.calls == calls + 1
    replacement = readers[1].get("payments", wait=2)
    assert replacement.fingerprint != token.fingerprint
    with requests.Session() as session:
        assert session.post(emulator.base_url + "/api", auth=readers[2].auth("payments"),
                            timeout=5).status_code == 200
    for r in readers:
        r.close()


def test_reader_repr_shows_no_password() -> None:
    reader = TokenReader("redis://user:pa55word@127.0.0.1:6390/0")
    assert "pa55word" not in repr(reader)
    assert "127.0.0.1:6390" in repr(reader)


def test_unknown_profile_is_named_even_while_redis_is_down() -> None:
    from .support import free_port

    reader = TokenReader(f"redis://127.0.0.1:{free_port()}/0", profiles=["payments"],
                         socket_timeout=0.5)
    with pytest.raises(TokenUnavailable) as info:
        reader.get("paymnets")
    assert info.value.reason == "unknown_profile"
    with pytest.raises(TokenUnavailable) as info:
        reader.get("payments")
    assert info.value.reason == "redis_unreachable"


def test_close_stops_the_invalidation_listener(redis_url: str) -> None:
    reader = TokenReader(redis_url)
    reader._listening()  # the first cached read starts it
    listener = reader._invalidator
    assert listener is not None and listener.is_alive()
    reader.close()
    assert not listener.is_alive()
