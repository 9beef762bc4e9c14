"""The emulator's fault injection and its control API, over real HTTP. Split from
test_emulator.py to keep each file small."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from token_worker.testing.emulator import FAULT_MODES, Emulator

from .test_emulator import CLIENT_ID, SECRET, api, control, form, post


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(clients={CLIENT_ID: SECRET}) as emulator:
        yield emulator


# -- fault injection ---------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "status", "content_type", "check"), [
    ({"mode": "http_error", "status": 503}, 503, "application/json",
     lambda r: r.json() == {"error": "server_error"}),
    ({"mode": "http_error"}, 500, "application/json", lambda r: True),
    ({"mode": "rate_limit", "retry_after": 7}, 429, "application/json",
     lambda r: r.headers["Retry-After"] == "7" and r.json() == {"error": "rate_limited"}),
    ({"mode": "oauth_error", "error": "invalid_scope"}, 400, "application/json",
     lambda r: r.json() == {"error": "invalid_scope"}),
    ({"mode": "unauthorized"}, 401, "application/json",
     lambda r: r.json() == {"error": "invalid_client"}),
    ({"mode": "malformed_json"}, 200, "application/json",
     lambda r: r.text == '{"access_token": "x", '),
    ({"mode": "html"}, 200, "text/html; charset=utf-8", lambda r: "<html>" in r.text),
    ({"mode": "missing_token"}, 200, "application/json",
     lambda r: "access_token" not in r.json() and r.json()["token_type"] == "Bearer"),
    ({"mode": "bad_expires"}, 200, "application/json", lambda r: r.json()["expires_in"] == 0),
    ({"mode": "bad_expires", "value": -5}, 200, "application/json",
     lambda r: r.json()["expires_in"] == -5),
    ({"mode": "wrong_token_type"}, 200, "application/json",
     lambda r: r.json()["token_type"] == "mac"),
    ({"mode": "scope_not_granted"}, 200, "application/json",
     lambda r: r.json()["scope"] == "client_imageupload"),
    ({"mode": "scope_not_granted", "scope": ""}, 200, "application/json",
     lambda r: r.json()["scope"] == ""),
    ({"mode": "expires_in_string"}, 200, "application/json",
     lambda r: r.json()["expires_in"] == "3600"),
    ({"mode": "echo"}, 500, "text/html; charset=utf-8", lambda r: SECRET in r.text),
])
def test_fault_mode_answers(emu: Emulator, fault: dict[str, Any], status: int,
                            content_type: str, check: Any) -> None:
    emu.set_faults([fault])
    response = post(emu)
    assert response.status_code == status
    assert response.headers["Content-Type"] == content_type
    assert check(response)
    assert emu.stats()["failed"] + emu.stats()["issued"] == 1


def test_every_fault_mode_is_covered() -> None:
    assert FAULT_MODES == {
        "http_error", "rate_limit", "oauth_error", "unauthorized", "latency", "timeout",
        "malformed_json", "html", "missing_token", "bad_expires", "wrong_token_type",
        "scope_not_granted", "echo", "expires_in_string", "trickle",
        "same_token"}


def test_bent_success_still_hands_out_a_working_token(emu: Emulator) -> None:
    emu.set_faults([{"mode": "wrong_token_type", "count": 1}])
    token = post(emu).json()["access_token"]
    assert token in emu.issued_tokens
    assert api(emu, token).status_code == 200
    assert emu.stats()["issued"] == 1


def test_faults_replace_validation(emu: Emulator) -> None:
    emu.set_faults([{"mode": "http_error", "status": 502}])
    assert post(emu, client_secret="wrong").status_code == 502


def test_fault_count_runs_out_then_next_spec_applies(emu: Emulator) -> None:
    emu.set_faults([{"mode": "http_error", "status": 503, "count": 2},
                    {"mode": "rate_limit", "count": 1}])
    statuses = [post(emu).status_code for _ in range(4)]
    assert statuses == [503, 503, 429, 200]


def test_fault_count_zero_never_applies(emu: Emulator) -> None:
    emu.set_faults([{"mode": "http_error", "count": 0}])
    assert post(emu).status_code == 200


def test_fault_probability_zero_and_one(emu: Emulator) -> None:
    emu.set_faults([{"mode": "http_error", "probability": 0.0},
                    {"mode": "unauthorized", "probability": 1.0, "count": 3}])
    assert [post(emu).status_code for _ in range(4)] == [401, 401, 401, 200]


def test_clearing_faults_restores_normal_answers(emu: Emulator) -> None:
    emu.set_faults([{"mode": "http_error"}])
    assert post(emu).status_code == 500
    emu.set_faults([])
    assert post(emu).status_code == 200


def test_bad_fault_specs_are_refused(emu: Emulator) -> None:
    for spec in ({"mode": "teleport"}, {"status": 500}, {"mode": "html", "count": -1},
                 {"mode": "html", "probability": 2}):
        with pytest.raises(ValueError):
            emu.set_faults([spec])


def test_latency_fault_delays_then_answers_normally(emu: Emulator) -> None:
    emu.set_faults([{"mode": "latency", "seconds": 0.3, "count": 1}])
    started = time.monotonic()
    assert post(emu).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert emu.stats()["issued"] == 1


def test_latency_fault_still_validates(emu: Emulator) -> None:
    emu.set_faults([{"mode": "latency", "seconds": 0.01}])
    assert post(emu, client_secret="wrong").json() == {"error": "invalid_client"}


def test_timeout_fault_hangs_up_without_answer(emu: Emulator) -> None:
    emu.set_faults([{"mode": "timeout", "seconds": 0.2, "count": 1}])
    with pytest.raises(requests.ConnectionError):
        post(emu)
    assert post(emu).status_code == 200
    assert emu.stats() | {"by_client": None, "by_scope": None} == {
        "calls": 2, "issued": 1, "failed": 1, "by_client": None, "by_scope": None,
        "concurrent_max": 1}


def test_timeout_fault_outlasts_client_timeout_and_does_not_block_stop() -> None:
    emu = Emulator().start()
    emu.set_faults([{"mode": "timeout"}])
    with pytest.raises(requests.ReadTimeout):
        requests.post(emu.url, data=form(emu, client_secret="x"), timeout=0.2)
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2
    emu.stop()  # idempotent


# -- control API -------------------------------------------------------------------------

def test_control_api_over_http(emu: Emulator) -> None:
    control(emu, "faults", {"faults": [{"mode": "rate_limit", "retry_after": 3, "count": 1}]})
    assert post(emu).status_code == 429
    control(emu, "config", {"expires_in": 90, "latency": 0.05})
    assert post(emu).json()["expires_in"] == 90
    stats = requests.get(emu.base_url + "/_emulator/stats", timeout=5).json()
    assert stats["calls"] == 2 and stats["issued"] == 1 and stats["failed"] == 1
    assert not any(token in str(stats) for token in emu.issued_tokens)
    control(emu, "reset")
    assert emu.stats()["calls"] == 0


def test_control_api_refuses_bad_input(emu: Emulator) -> None:
    base = emu.base_url + "/_emulator/"
    bad_mode = requests.post(base + "faults", json={"faults": [{"mode": "nope"}]}, timeout=5)
    assert bad_mode.status_code == 400 and bad_mode.json()["error"] == "invalid_request"
    assert requests.post(base + "config", data=b"{oops", timeout=5).status_code == 400
    assert requests.post(base + "config", json=[1], timeout=5).status_code == 400
    assert requests.post(base + "stats", timeout=5).status_code == 405
    assert requests.get(base + "reset", timeout=5).status_code == 405
    assert requests.get(base + "tokens", timeout=5).status_code == 404
