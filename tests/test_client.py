"""client.py: the client-credentials POST against the emulator over real HTTP."""

from __future__ import annotations

import email.utils
import logging
import math
import pickle
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from token_worker import __version__
from token_worker.client import TokenClient, can_retry, parse_retry_after
from token_worker.config import ClientSettings, Config, load_config
from token_worker.exceptions import ConfigError, TokenRequestError
from token_worker.testing.emulator import Emulator

from .http_servers import Canned
from .support import CLIENT_ID, SECRET, free_port, write_config

SCOPES = ["client_paymentrequest"]


class Recorder:
    """Keeps every request a real session sent (a requests response hook, not a mock)."""

    def __init__(self, session: requests.Session) -> None:
        self.sent: list[requests.PreparedRequest] = []
        session.hooks["response"].append(self._hook)

    def _hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.sent.append(response.request)

    def form(self, i: int = -1) -> dict[str, list[str]]:
        body = self.sent[i].body
        assert isinstance(body, str)
        return parse_qs(body, keep_blank_values=True)


@pytest.fixture
def main_client(config: Config) -> ClientSettings:
    return config.client_for("payments")


@pytest.fixture
def session() -> requests.Session:
    s = requests.Session()
    yield s
    s.close()


@pytest.fixture
def client(emulator: Emulator, session: requests.Session) -> TokenClient:
    return TokenClient(emulator.url, timeout=2, session=session)


def fail_with(emulator: Emulator, client: TokenClient, main_client: ClientSettings,
              **fault: Any) -> TokenRequestError:
    emulator.set_faults([fault])
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, SCOPES)
    return info.value


# -- success ----------------------------------------------------------------------------

def test_success_returns_validated_token(emulator: Emulator, client: TokenClient,
                                         main_client: ClientSettings) -> None:
    issued = client.request_token(main_client, SCOPES)
    assert issued.access_token == emulator.issued_tokens[-1]
    assert issued.expires_in == 3600
    assert issued.token_type == "Bearer"
    assert issued.scopes == ("client_paymentrequest",)
    assert emulator.stats()["issued"] == 1


def test_form_is_exactly_the_client_credentials_grant(emulator: Emulator,
                                                      session: requests.Session,
                                                      client: TokenClient,
                                                      main_client: ClientSettings) -> None:
    recorder = Recorder(session)
    client.request_token(main_client, ["client_paymentrequest", "client_refund"])
    request = recorder.sent[-1]
    assert request.method == "POST" and request.url == emulator.url
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["User-Agent"].startswith(f"token_worker/{__version__}")
    assert recorder.form() == {
        "grant_type": ["client_credentials"],
        "client_id": [CLIENT_ID],
        "client_secret": [SECRET],
        "scope": ["client_paymentrequest client_refund"],  # space-separated
        "audience": [emulator.url],  # default: the token URL
    }
    assert emulator.stats()["by_scope"] == {"client_paymentrequest client_refund": 1}


def test_configured_audience_is_sent(emulator: Emulator, session: requests.Session,
                                     main_client: ClientSettings) -> None:
    recorder = Recorder(session)
    client = TokenClient(emulator.url, audience="https://aud.example/x", session=session)
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, SCOPES)
    assert recorder.form()["audience"] == ["https://aud.example/x"]
    assert info.value.error == "invalid_grant"  # the emulator wants its own URL, as Stitch


def test_one_pooled_session_is_reused(emulator: Emulator, session: requests.Session,
                                      client: TokenClient, main_client: ClientSettings) -> None:
    client.request_token(main_client, SCOPES)
    client.request_token(main_client, SCOPES)
    assert client.session is session
    assert emulator.stats()["issued"] == 2


def test_expires_in_sent_as_string_is_accepted(emulator: Emulator, client: TokenClient,
                                               main_client: ClientSettings) -> None:
    emulator.set_faults([{"mode": "expires_in_string"}])
    issued = client.request_token(main_client, SCOPES)
    assert issued.expires_in == 3600.0


def test_rotated_secret_is_sent_on_next_request(tmp_path: Path, emulator: Emulator,
                                                session: requests.Session,
                                                client: TokenClient, redis_url: str) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong-secret")
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        secret_file=secret_file)
    main = load_config(path).client_for("payments")
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main, SCOPES)
    assert info.value.error == "invalid_client"
    secret_file.write_text(SECRET)
    assert client.request_token(main, SCOPES).access_token


def test_empty_scopes_are_refused_before_any_call(emulator: Emulator, client: TokenClient,
                                                  main_client: ClientSettings) -> None:
    with pytest.raises(ConfigError):
        client.request_token(main_client, [])
    assert emulator.calls == 0


def test_unreadable_secret_is_a_config_error_not_a_call(emulator: Emulator, client: TokenClient,
                                                        main_client: ClientSettings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET")
    with pytest.raises(ConfigError) as info:
        client.request_token(main_client, SCOPES)
    assert "client_secret_env" in str(info.value)  # the key is named, its value is not quoted
    assert emulator.calls == 0


# -- OAuth errors: not retryable --------------------------------------------------------

@pytest.mark.parametrize("code", ["invalid_client", "invalid_scope", "invalid_grant"])
def test_oauth_400_errors_are_not_retryable(emulator: Emulator, client: TokenClient,
                                            main_client: ClientSettings, code: str) -> None:
    err = fail_with(emulator, client, main_client, mode="oauth_error", error=code)
    assert (err.error, err.status, err.retryable) == (code, 400, False)
    assert code in str(err) and "400" in str(err)


def test_wrong_secret_is_invalid_client(emulator: Emulator, client: TokenClient,
                                        monkeypatch: pytest.MonkeyPatch,
                                        main_client: ClientSettings) -> None:
    monkeypatch.setenv("STITCH_CLIENT_SECRET", "not-the-secret")
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, SCOPES)
    assert (info.value.error, info.value.status, info.value.retryable) == \
        ("invalid_client", 400, False)


def test_unknown_scope_is_invalid_scope(client: TokenClient, main_client: ClientSettings) -> None:
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, ["client_nosuchscope"])
    assert (info.value.error, info.value.retryable) == ("invalid_scope", False)


def test_401_is_not_retryable(emulator: Emulator, client: TokenClient,
                              main_client: ClientSettings) -> None:
    err = fail_with(emulator, client, main_client, mode="unauthorized")
    assert err.status == 401 and err.retryable is False


# -- transient failures: retryable ------------------------------------------------------

@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(emulator: Emulator, client: TokenClient,
                          main_client: ClientSettings, status: int) -> None:
    err = fail_with(emulator, client, main_client, mode="http_error", status=status)
    assert (err.status, err.retryable) == (status, True)
    assert err.error == "server_error"


def test_429_is_retryable_and_carries_retry_after(emulator: Emulator, client: TokenClient,
                                                  main_client: ClientSettings) -> None:
    err = fail_with(emulator, client, main_client, mode="rate_limit", retry_after=7)
    assert (err.status, err.retryable, err.retry_after) == (429, True, 7.0)


def test_timeout_is_retryable(emulator: Emulator, session: requests.Session,
                              main_client: ClientSettings) -> None:
    client = TokenClient(emulator.url, timeout=0.3, session=session)
    emulator.set_faults([{"mode": "timeout", "seconds": 2, "count": 1}])
    started = time.monotonic()
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, SCOPES)
    assert time.monotonic() - started < 1.5
    assert (info.value.error, info.value.status, info.value.retryable) == \
        ("timeout", None, True)


def test_connection_refused_is_retryable(main_client: ClientSettings) -> None:
    url = f"http://127.0.0.1:{free_port()}/connect/token"
    client = TokenClient(url, timeout=2)
    with pytest.raises(TokenRequestError) as info:
        client.request_token(main_client, SCOPES)
    assert (info.value.error, info.value.status, info.value.retryable) == \
        ("connection_error", None, True)
    assert url in str(info.value)


# -- malformed 200s: never retryable, never accepted ------------------------------------

@pytest.mark.parametrize(
    "fault",
    [
        {"mode": "malformed_json"},
        {"mode": "html"},
        {"mode": "missing_token"},
        {"mode": "bad_expires"},
        {"mode": "bad_expires", "value": -30},
        {"mode": "bad_expires", "value": "soon"},
        {"mode": "bad_expires", "value": None},
        {"mode": "bad_expires", "value": True},
        {"mode": "wrong_token_type"},
        {"mode": "scope_not_granted"},
    ],
    ids=lambda f: "-".join(str(v) for v in f.values()),
)
def test_malformed_success_is_a_non_retryable_error(emulator: Emulator, client: TokenClient,
                                                    main_client: ClientSettings,
                                                    fault: dict[str, Any]) -> None:
    err = fail_with(emulator, client, main_client, **fault)
    assert (err.error, err.status, err.retryable) == ("malformed_response", 200, False)
    for token in emulator.issued_tokens:
        assert token not in str(err)


@pytest.mark.parametrize("value", [1e12, 1e300, 604800.5, 0, -1, math.nan, math.inf, -math.inf,
                                   True, False, "nan", "inf", "1_000", "0x10", "3600s", "",
                                   "1" * 400, 10**400, [3600], {"s": 1}])
def test_expires_in_outside_a_week_or_not_a_number_is_malformed(
        emulator: Emulator, client: TokenClient, main_client: ClientSettings, value: Any) -> None:
    err = fail_with(emulator, client, main_client, mode="bad_expires", value=value)
    assert (err.error, err.retryable) == ("malformed_response", False)
    assert "expires_in" in str(err)


@pytest.mark.parametrize("value", [604800, 0.5, "7200", "90.5", "3.6e3"])
def test_expires_in_up_to_a_week_is_accepted(emulator: Emulator, client: TokenClient,
                                             main_client: ClientSettings, value: Any) -> None:
    emulator.set_faults([{"mode": "bad_expires", "value": value}])
    assert client.request_token(main_client, SCOPES).expires_in == float(value)


def test_error_code_with_trailing_newline_is_not_echoed(emulator: Emulator, client: TokenClient,
                                                        main_client: ClientSettings) -> None:
    err = fail_with(emulator, client, main_client, mode="oauth_error", error="invalid_grant\n")
    assert (err.error, err.status) == ("http_400", 400)
    assert "\n" not in str(err) and "invalid_grant" not in str(err)


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -1])
def test_timeout_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(ValueError):
        TokenClient("http://127.0.0.1:1/connect/token", timeout=timeout)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_refused_and_the_form_never_reaches_its_target(
        main_client: ClientSettings, status: int) -> None:
    with Canned(body=b"{}") as target:
        with Canned(status, b"", {"Location": target.url}) as endpoint:
            with pytest.raises(TokenRequestError) as info:
                TokenClient(endpoint.url, timeout=2).request_token(main_client, SCOPES)
            assert len(endpoint.received) == 1
        assert target.received == []
    err = info.value
    assert (err.status, err.retryable, err.error) == (status, False, "redirect_refused")
    assert f"HTTP {status} redirect refused" in str(err)
    assert str(target.port) not in str(err) and "Location" not in str(err)


# -- nothing secret escapes -------------------------------------------------------------

def test_echoed_request_body_never_reaches_the_exception(emulator: Emulator, client: TokenClient,
                                                         main_client: ClientSettings,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    err = fail_with(emulator, client, main_client, mode="echo")
    assert err.status == 500 and err.retryable
    shown = " ".join([str(err), repr(err), repr(err.args), err.error, caplog.text])
    assert SECRET not in shown
    assert "client_secret" not in shown


def test_error_survives_pickling_for_celery_results(emulator: Emulator, client: TokenClient,
                                                    main_client: ClientSettings) -> None:
    err = fail_with(emulator, client, main_client, mode="rate_limit", retry_after=3)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.error, copy.status, copy.retryable, copy.retry_after, str(copy)) == \
        (err.error, err.status, err.retryable, err.retry_after, str(err))


def test_reprs_hold_no_token_or_secret(emulator: Emulator, client: TokenClient,
                                       main_client: ClientSettings) -> None:
    issued = client.request_token(main_client, SCOPES)
    shown = repr(issued) + repr(client) + repr(main_client)
    assert issued.access_token not in shown
    assert SECRET not in shown


def test_logs_hold_no_token_or_secret(emulator: Emulator, client: TokenClient,
                                      main_client: ClientSettings,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    issued = client.request_token(main_client, SCOPES)
    assert "token endpoint answered" in caplog.text  # the debug line is there ...
    assert issued.access_token not in caplog.text  # ... without the token
    assert SECRET not in caplog.text


# -- the retry decision and Retry-After on their own ------------------------------------

@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (None, "timeout", True),
        (None, "connection_error", True),
        (None, "malformed_response", False),
        (500, "server_error", True),
        (503, "temporarily_unavailable", True),
        (429, "rate_limited", True),
        (503, "invalid_client", False),
        (400, "invalid_client", False),
        (400, "invalid_scope", False),
        (400, "invalid_grant", False),
        (400, "temporarily_unavailable", True),
        (401, "unauthorized", False),
        (200, "malformed_response", False),
    ],
)
def test_can_retry_decision(status: int | None, error: str, retryable: bool) -> None:
    assert can_retry(status, error) is retryable


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (parse_retry_after(in_a_minute) or 0) <= 61
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert parse_retry_after(past) == 0.0
