"""deadline.py and the client's bounded read: a total deadline and a capped body, over
real sockets against the emulator and hostile test servers (http and https)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from token_worker.client import MAX_BODY_BYTES, TokenClient
from token_worker.config import ClientSettings, Config
from token_worker.exceptions import TokenRequestError
from token_worker.testing.emulator import Emulator

from .http_servers import Canned, self_signed, trickle

SCOPES = ["client_paymentrequest"]
GOOD = (b'{"access_token": "tok_ok", "expires_in": 3600, "token_type": "Bearer", '
        b'"scope": "client_paymentrequest"}')


@pytest.fixture
def main_client(config: Config) -> ClientSettings:
    return config.client_for("payments")


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "token-worker-deadline"]


def timed_failure(client: TokenClient, main_client: ClientSettings) -> tuple[float,
                                                                            TokenRequestError]:
    started = time.monotonic()
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, SCOPES)
    return time.monotonic() - started, info.value


# -- the total deadline ------------------------------------------------------------------

@pytest.mark.parametrize(("part", "interval"), [("all", 0.015), ("headers", 0.025),
                                                ("body", 0.04)])
def test_trickled_answer_is_cut_at_the_total_deadline(
        emulator: Emulator, main_client: ClientSettings, part: str, interval: float) -> None:
    # each variant would take about 5 s to arrive in full; requests' per-read timeout of
    # 1 s never trips on it
    emulator.set_faults([{"mode": "trickle", "part": part, "interval": interval}])
    client = TokenClient(emulator.url, timeout=1)
    elapsed, err = timed_failure(client, main_client)
    assert elapsed < 1.5
    assert (err.error, err.status, err.retryable) == ("timeout", None, True)
    assert "timed out after 1s" in str(err)
    assert watchdogs() == []
    emulator.set_faults([])
    assert client.request_token(main_client, SCOPES).access_token  # the pool still works


def test_slow_but_timely_trickle_is_read_in_full(emulator: Emulator,
                                                 main_client: ClientSettings) -> None:
    emulator.set_faults([{"mode": "trickle", "part": "body", "interval": 0.002}])
    issued = TokenClient(emulator.url, timeout=5).request_token(main_client, SCOPES)
    assert issued.access_token == emulator.issued_tokens[-1]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def _no_ca_bundle_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_trickled_https_answer_is_cut_at_the_total_deadline(
        tls_files: tuple[Path, Path], main_client: ClientSettings) -> None:
    session = requests.Session()
    session.verify = str(tls_files[0])
    with Canned(body=trickle(GOOD, 0.05), tls=tls_files) as server:
        client = TokenClient(server.url, timeout=1, session=session)
        elapsed, err = timed_failure(client, main_client)
    assert elapsed < 1.5 and err.error == "timeout"
    assert watchdogs() == []


def test_https_answer_in_time_is_accepted(tls_files: tuple[Path, Path],
                                          main_client: ClientSettings) -> None:
    session = requests.Session()
    session.verify = str(tls_files[0])
    with Canned(body=GOOD, tls=tls_files) as server:
        client = TokenClient(server.url, timeout=2, session=session)
        assert client.request_token(main_client, SCOPES).access_token == "tok_ok"
        assert client.request_token(main_client, SCOPES).access_token == "tok_ok"


def test_body_cut_short_by_the_deadline_is_a_timeout_not_a_short_answer(
        main_client: ClientSettings) -> None:
    # no Content-Length: a socket shut down mid-body would otherwise read as a clean EOF
    with Canned(body=trickle(GOOD + b" " * 200, 0.02)) as server:
        elapsed, err = timed_failure(TokenClient(server.url, timeout=0.5), main_client)
    assert elapsed < 1.0 and err.error == "timeout"


def test_silent_server_is_cut_at_the_deadline(emulator: Emulator,
                                              main_client: ClientSettings) -> None:
    emulator.set_faults([{"mode": "latency", "seconds": 5}])
    elapsed, err = timed_failure(TokenClient(emulator.url, timeout=0.5), main_client)
    assert elapsed < 1.0 and err.error == "timeout"


def test_many_requests_leave_no_watchdog_thread(emulator: Emulator,
                                                main_client: ClientSettings) -> None:
    client = TokenClient(emulator.url, timeout=2)
    before = threading.active_count()
    for _ in range(20):
        client.request_token(main_client, SCOPES)
    assert watchdogs() == []
    assert threading.active_count() <= before + 2  # emulator keep-alive handlers at most


def test_a_deadline_on_a_shared_session_cuts_only_its_own_request(
        emulator: Emulator, main_client: ClientSettings) -> None:
    session = requests.Session()
    hasty = TokenClient(emulator.url, timeout=0.3, session=session)
    patient = TokenClient(emulator.url, timeout=3, session=session)
    emulator.set_faults([{"mode": "latency", "seconds": 0.6}])
    results: dict[str, Any] = {}

    def call(name: str, client: TokenClient) -> None:
        try:
            results[name] = client.request_token(main_client, SCOPES)
        except TokenRequestError as exc:
            results[name] = exc

    threads = [threading.Thread(target=call, args=(name, client)) for name, client in
               [("patient", patient), ("hasty", hasty), ("patient2", patient)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert isinstance(results["hasty"], TokenRequestError) and results["hasty"].error == "timeout"
    assert results["patient"].access_token and results["patient2"].access_token


def test_custom_adapter_is_kept_with_a_warning(emulator: Emulator, main_client: ClientSettings,
                                               caplog: pytest.LogCaptureFixture) -> None:
    class Mine(requests.adapters.HTTPAdapter):
        pass

    session = requests.Session()
    session.mount("http://", Mine())
    client = TokenClient(emulator.url, timeout=2, session=session)
    assert "deadline covers the body only" in caplog.text
    assert isinstance(session.get_adapter(emulator.url), Mine)
    assert client.request_token(main_client, SCOPES).access_token


# -- the capped body -----------------------------------------------------------------------

def endless() -> Iterator[bytes]:
    yield b'{"access_token": "' + b"a" * 1000
    for _ in range(5000):  # 80 MB if anyone read it all
        yield b"a" * 16384


@pytest.mark.parametrize("status", [200, 500, 400])
def test_endless_body_is_refused_after_the_cap(main_client: ClientSettings, status: int) -> None:
    with Canned(status, endless) as server:
        elapsed, err = timed_failure(TokenClient(server.url, timeout=5), main_client)
    assert elapsed < 2
    if status == 200:
        assert (err.error, err.retryable) == ("malformed_response", False)
        assert f"larger than {MAX_BODY_BYTES} bytes" in str(err)
    else:  # an error body over the cap is dropped; the status still speaks
        assert err.status == status and err.error in ("server_error", "http_400")
    assert "aaaa" not in str(err)


def test_declared_length_over_the_cap_is_refused_unread(main_client: ClientSettings) -> None:
    body = GOOD[:-1] + b', "pad": "' + b"p" * (MAX_BODY_BYTES + 10) + b'"}'
    with Canned(body=body) as server:
        _, err = timed_failure(TokenClient(server.url, timeout=5), main_client)
    assert err.error == "malformed_response" and "pppp" not in str(err)


def test_body_just_under_the_cap_is_accepted(main_client: ClientSettings) -> None:
    body = GOOD[:-1] + b', "pad": "' + b"p" * (MAX_BODY_BYTES - len(GOOD) - 20) + b'"}'
    assert len(body) <= MAX_BODY_BYTES
    with Canned(body=body) as server:
        assert TokenClient(server.url).request_token(main_client, SCOPES).access_token


def test_gzip_answer_is_decoded_but_a_gzip_bomb_is_refused(main_client: ClientSettings) -> None:
    with Canned(body=gzip.compress(GOOD), headers={"Content-Encoding": "gzip"}) as server:
        assert TokenClient(server.url).request_token(main_client, SCOPES).access_token
    bomb = gzip.compress(GOOD[:-1] + b', "pad": "' + b"p" * 50_000_000 + b'"}')
    assert len(bomb) < MAX_BODY_BYTES
    with Canned(body=bomb, headers={"Content-Encoding": "gzip"}) as server:
        elapsed, err = timed_failure(TokenClient(server.url), main_client)
    assert err.error == "malformed_response" and elapsed < 2


def test_unknown_content_encoding_is_malformed(main_client: ClientSettings) -> None:
    with Canned(body=GOOD, headers={"Content-Encoding": "br"}) as server:
        _, err = timed_failure(TokenClient(server.url), main_client)
    assert err.error == "malformed_response"


@pytest.mark.parametrize("status", [200, 400])
def test_deeply_nested_json_is_malformed_not_a_recursion_error(main_client: ClientSettings,
                                                               status: int) -> None:
    nested = b"[" * 30000 + b"]" * 30000
    with Canned(status, nested) as server:
        _, err = timed_failure(TokenClient(server.url), main_client)
    assert err.error == ("malformed_response" if status == 200 else "http_400")


# -- bounded, clean fields ------------------------------------------------------------------

def answer(body: dict[str, Any]) -> bytes:
    base = {"access_token": "tok_ok", "expires_in": 3600, "token_type": "Bearer",
            "scope": "client_paymentrequest"}
    return json.dumps({**base, **body}).encode()


@pytest.mark.parametrize("fields", [
    {"access_token": "tok_\r\nX-Injected: 1"}, {"access_token": "tok\n"},
    {"access_token": "tok\x00x"}, {"access_token": "tok\x7fx"}, {"access_token": "tök"},
    {"access_token": "tok en"}, {"access_token": "t" * 8193}, {"access_token": 12},
    {"token_type": "Bearer\r\n"}, {"token_type": "B" * 100000},
    {"scope": "client_paymentrequest\r\nx"}, {"scope": "client_paymentrequest " + "x" * 5000},
    {"scope": ["client_paymentrequest"]},
], ids=lambda f: repr(f)[:40])
def test_unclean_token_type_or_scope_is_malformed_and_not_echoed(
        main_client: ClientSettings, fields: dict[str, Any]) -> None:
    with Canned(body=answer(fields)) as server:
        with pytest.raises(TokenRequestError) as info:
            TokenClient(server.url, timeout=2).request_token(main_client, SCOPES)
    assert (info.value.error, info.value.retryable) == ("malformed_response", False)
    shown = str(info.value)
    assert "\n" not in shown and "tok_" not in shown and "tök" not in shown and "xxxx" not in shown


def test_longest_printable_token_is_accepted(main_client: ClientSettings) -> None:
    token = "t" * 8192
    with Canned(body=answer({"access_token": token})) as server:
        assert TokenClient(server.url, timeout=2).request_token(
            main_client, SCOPES).access_token == token
