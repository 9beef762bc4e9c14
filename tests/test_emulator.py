"""The Stitch emulator, exercised over real HTTP (faults and the control API are in
test_emulator_faults.py, bad input and trickle in test_emulator_limits.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from token_worker.testing.emulator import KNOWN_SCOPES, Emulator

CLIENT_ID = "test-7a1c"
SECRET = "s3cret-7a1c-do-not-leak"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(clients={CLIENT_ID: SECRET}) as emulator:
        yield emulator


def form(emu: Emulator, **changes: str | None) -> dict[str, str]:
    data: dict[str, str | None] = {
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET,
        "scope": "client_paymentrequest", "audience": emu.url,
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def post(emu: Emulator, **changes: str | None) -> requests.Response:
    return requests.post(emu.url, data=form(emu, **changes), timeout=5)


def api(emu: Emulator, token: str, path: str = "/api") -> requests.Response:
    return requests.post(emu.base_url + path, headers={"Authorization": f"Bearer {token}"},
                         timeout=5)


def control(emu: Emulator, action: str, body: dict[str, Any] | None = None) -> Any:
    response = requests.post(f"{emu.base_url}/_emulator/{action}", json=body or {}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


# -- success and validation --------------------------------------------------------------

def test_success_has_stitch_shape(emu: Emulator) -> None:
    response = post(emu)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "scope"}
    assert body["access_token"].startswith("emu_") and len(body["access_token"]) >= 36
    assert body["expires_in"] == 3600 and isinstance(body["expires_in"], int)
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "client_paymentrequest"
    assert emu.issued_tokens == [body["access_token"]]


def test_tokens_are_unique_and_multiple_scopes_are_granted(emu: Emulator) -> None:
    scope = "client_refund client_disbursement"
    first, second = post(emu, scope=scope).json(), post(emu, scope=scope).json()
    assert first["scope"] == scope
    assert first["access_token"] != second["access_token"]


def test_every_known_scope_is_accepted(emu: Emulator) -> None:
    assert len(KNOWN_SCOPES) == 9
    assert post(emu, scope=" ".join(KNOWN_SCOPES)).status_code == 200


@pytest.mark.parametrize(("changes", "error"), [
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({"grant_type": None}, "unsupported_grant_type"),
    ({"client_id": None}, "invalid_client"),
    ({"client_id": "test-unknown"}, "invalid_client"),
    ({"client_secret": None}, "invalid_client"),
    ({"client_secret": ""}, "invalid_client"),
    ({"client_secret": "wrong"}, "invalid_client"),
    ({"client_secret": SECRET + "x"}, "invalid_client"),
    ({"client_assertion": "eyJ.jwt.sig"}, "invalid_request"),
    ({"client_secret": None, "client_assertion": "eyJ.jwt.sig"}, "invalid_client"),
    ({"scope": None}, "invalid_scope"),
    ({"scope": "  "}, "invalid_scope"),
    ({"scope": "client_refund client_teleport"}, "invalid_scope"),
    ({"audience": None}, "invalid_request"),
    ({"audience": "https://secure.stitch.money/connect/token"}, "invalid_grant"),
])
def test_bad_request_gets_stitch_oauth_error(emu: Emulator, changes: dict[str, str | None],
                                             error: str) -> None:
    response = post(emu, **changes)
    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert emu.issued_tokens == []


def test_non_form_body_is_invalid_request(emu: Emulator) -> None:
    response = requests.post(emu.url, json=form(emu), timeout=5)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_request"})


def test_repeated_parameter_is_invalid_request(emu: Emulator) -> None:
    body = list(form(emu).items()) + [("scope", "client_refund")]
    response = requests.post(emu.url, data=body, timeout=5)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_request"})


def test_dev_mode_accepts_any_client_with_a_secret() -> None:
    with Emulator() as emu:
        assert post(emu, client_id="anyone", client_secret="anything").status_code == 200
        assert post(emu, client_id="anyone", client_secret="").json() == {
            "error": "invalid_client"}


def test_extra_scopes_and_explicit_audience() -> None:
    with Emulator(extra_scopes=("client_future",), audience="https://aud.example") as emu:
        assert post(emu, scope="client_future", audience="https://aud.example",
                     client_secret="x").status_code == 200
        assert post(emu, client_secret="x").json() == {"error": "invalid_grant"}


def test_default_audience_follows_the_host_the_client_used(emu: Emulator) -> None:
    audience = f"http://localhost:{emu.port}/connect/token"
    response = requests.post(emu.url, data=form(emu, audience=audience),
                             headers={"Host": f"localhost:{emu.port}"}, timeout=5)
    assert response.status_code == 200


def test_assertion_verifier_seam(emu: Emulator) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def verifier(client_id: str, fields: dict[str, str]) -> bool:
        seen.append((client_id, fields))
        return fields["client_assertion"] == "good"

    emu.assertion_verifier = verifier
    assert post(emu, client_secret=None, client_assertion="good").status_code == 200
    assert post(emu, client_secret=None, client_assertion="bad").json() == {
        "error": "invalid_client"}
    assert seen[0][0] == CLIENT_ID and seen[0][1]["scope"] == "client_paymentrequest"

    def broken(client_id: str, fields: dict[str, str]) -> bool:
        raise RuntimeError("boom")

    emu.assertion_verifier = broken
    assert post(emu, client_secret=None, client_assertion="good").json() == {
        "error": "invalid_client"}


def test_expires_in_is_int_when_whole_else_float(emu: Emulator) -> None:
    emu.set_expires_in(60.0)
    assert repr(post(emu).json()["expires_in"]) == "60"
    emu.set_expires_in(1.5)
    assert repr(post(emu).json()["expires_in"]) == "1.5"
    with Emulator(expires_in=2.0) as other:
        assert repr(post(other, client_secret="x").json()["expires_in"]) == "2"


def test_unknown_path_is_404_and_get_on_token_url_is_not_a_call(emu: Emulator) -> None:
    assert requests.get(emu.base_url + "/nope", timeout=5).status_code == 404
    response = requests.get(emu.url, timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert emu.calls == 0


# -- stats, latency, concurrency ---------------------------------------------------------

def test_stats_count_every_call(emu: Emulator) -> None:
    post(emu)
    post(emu, scope="client_refund client_disbursement")
    post(emu, client_secret="wrong")
    post(emu, client_id="other", scope="client_refund")
    emu.set_faults([{"mode": "http_error", "count": 1}])
    post(emu)
    assert emu.calls == 5
    assert emu.stats() == {
        "calls": 5, "issued": 2, "failed": 3,
        "by_client": {CLIENT_ID: 4, "other": 1},
        "by_scope": {"client_paymentrequest": 3, "client_refund client_disbursement": 1,
                     "client_refund": 1},
        "concurrent_max": 1,
    }


def test_concurrent_max_counts_overlapping_requests(emu: Emulator) -> None:
    emu.set_latency(0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: post(emu).status_code, range(4)))
    assert statuses == [200] * 4
    assert time.monotonic() - started < 1.0
    assert emu.stats()["concurrent_max"] == 4


def test_reset_clears_counters_faults_and_latency_but_keeps_tokens(emu: Emulator) -> None:
    emu.set_expires_in(120)
    token = post(emu).json()["access_token"]
    emu.set_faults([{"mode": "http_error"}])
    emu.set_latency(5)
    emu.reset()
    assert emu.stats()["calls"] == 0
    started = time.monotonic()
    assert post(emu).json()["expires_in"] == 120
    assert time.monotonic() - started < 1
    assert api(emu, token).status_code == 200


# -- fake API ----------------------------------------------------------------------------

def test_api_accepts_a_live_token(emu: Emulator) -> None:
    token = post(emu).json()["access_token"]
    for path in ("/api", "/graphql"):
        response = api(emu, token, path)
        assert response.json() == {"data": {"ok": True, "scope": "client_paymentrequest"}}
    get = requests.get(emu.base_url + "/api", headers={"Authorization": f"bearer {token}"},
                       timeout=5)
    assert get.status_code == 200


UNAUTHENTICATED = {"errors": [{"message": "UNAUTHENTICATED: Token is expired or malformed"}]}


def test_api_refuses_foreign_missing_and_revoked_tokens(emu: Emulator) -> None:
    token = post(emu).json()["access_token"]
    assert api(emu, "emu_forged").status_code == 401
    assert requests.get(emu.base_url + "/api", timeout=5).status_code == 401
    emu.revoke(token)
    response = api(emu, token)
    assert response.status_code == 401
    assert response.json() == UNAUTHENTICATED
    emu.revoke("never-issued")  # harmless


def test_api_refuses_expired_token(emu: Emulator) -> None:
    emu.set_expires_in(0.3)
    token = post(emu).json()["access_token"]
    assert api(emu, token).status_code == 200
    time.sleep(0.4)
    response = api(emu, token)
    assert (response.status_code, response.json()) == (401, UNAUTHENTICATED)


def test_logs_name_clients_but_never_secrets_or_tokens(
        emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="token_worker.emulator")
    token = post(emu).json()["access_token"]
    api(emu, token)
    emu.set_faults([{"mode": "echo"}])
    post(emu)
    requests.post(emu.url + f"?client_secret={SECRET}", data=form(emu), timeout=5)
    assert CLIENT_ID in caplog.text
    assert SECRET not in caplog.text
    assert not any(issued in caplog.text for issued in emu.issued_tokens)


# -- lifecycle ---------------------------------------------------------------------------

def test_start_resolves_port_zero_and_refuses_second_start() -> None:
    emu = Emulator()
    assert emu.port == 0
    with emu:
        assert emu.port > 0
        assert emu.url == f"http://127.0.0.1:{emu.port}/connect/token"
        assert emu.base_url == f"http://127.0.0.1:{emu.port}"
        with pytest.raises(RuntimeError):
            emu.start()


@contextmanager
def serving(clients: dict[str, str] | None, expires_in: float) -> Iterator[subprocess.Popen[str]]:
    """`serve()` in a child process, as `token-worker emulator` runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    code = ("from token_worker.testing.emulator import serve; "
            f"serve('127.0.0.1', 0, clients={clients!r}, expires_in={expires_in!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_serve_runs_until_sigterm_then_exits_cleanly() -> None:
    with serving({"cli": "pw"}, 60) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("Stitch emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert url.endswith("/connect/token")
        response = requests.post(url, timeout=5, data={
            "grant_type": "client_credentials", "client_id": "cli", "client_secret": "pw",
            "scope": "client_refund", "audience": url})
        assert response.json()["expires_in"] == 60
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert "Traceback" not in proc.stderr.read()


def test_serve_stops_on_ctrl_c() -> None:
    with serving(None, 5) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("Stitch emulator listening on")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        assert "Traceback" not in proc.stderr.read()


def test_stop_without_start_is_harmless() -> None:
    Emulator().stop()
