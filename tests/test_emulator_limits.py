"""The emulator against bad input (raw sockets, NaN in the control API) and its trickle
fault. Split from test_emulator.py to keep each file small."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from token_worker.testing.emulator import Emulator

from .test_emulator import CLIENT_ID, REPO, SECRET, form, post


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(clients={CLIENT_ID: SECRET}) as emulator:
        yield emulator


def raw_post(emu: Emulator, headers: str, body: bytes = b"") -> tuple[bytes, float]:
    """Send a hand-made request; (first bytes of the answer, seconds it took)."""
    request = (f"POST /connect/token HTTP/1.1\r\nHost: 127.0.0.1:{emu.port}\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n"
               f"{headers}\r\n").encode() + body
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", emu.port), timeout=3) as sock:
        sock.sendall(request)
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            answer = b""
    return answer, time.monotonic() - started


@pytest.mark.parametrize("length", ["-1", "abc", "99999999999", "1e3", "+5", "1_0", " ",
                                    "5\r\nContent-Length: 7"])
def test_bad_content_length_is_answered_400_at_once(emu: Emulator, length: str) -> None:
    answer, elapsed = raw_post(emu, f"Content-Length: {length}\r\n", b"grant_type=x")
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert elapsed < 1
    assert emu.calls == 0
    assert post(emu).status_code == 200  # the server is still serving


def test_sane_content_length_still_works_over_a_raw_socket(emu: Emulator) -> None:
    body = "&".join(f"{k}={v}" for k, v in form(emu).items()).encode()
    answer, _ = raw_post(emu, f"Content-Length: {len(body)}\r\n", body)
    assert answer.split(b"\r\n")[0].endswith(b"200 OK")


@pytest.mark.parametrize("config", [
    b'{"expires_in": NaN}', b'{"expires_in": Infinity}', b'{"expires_in": -Infinity}',
    b'{"expires_in": 0}', b'{"expires_in": -5}', b'{"expires_in": 1e12}',
    b'{"expires_in": true}', b'{"expires_in": "soon"}', b'{"expires_in": null}',
    b'{"latency": NaN}', b'{"latency": Infinity}', b'{"latency": -1}', b'{"latency": 1e9}',
    b'{"latency": "x"}',
])
def test_control_api_refuses_non_finite_and_out_of_range_numbers(emu: Emulator,
                                                                 config: bytes) -> None:
    response = requests.post(emu.base_url + "/_emulator/config", data=config, timeout=5)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    started = time.monotonic()
    assert post(emu).json()["expires_in"] == 3600  # nothing was changed
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("spec", [
    {"mode": "latency", "seconds": math.nan}, {"mode": "timeout", "seconds": math.inf},
    {"mode": "latency", "seconds": -1}, {"mode": "http_error", "status": math.nan},
    {"mode": "http_error", "status": 42}, {"mode": "rate_limit", "retry_after": math.inf},
    {"mode": "trickle", "interval": math.nan}, {"mode": "trickle", "part": "tail"},
])
def test_fault_specs_with_bad_numbers_are_refused(emu: Emulator, spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        emu.set_faults([spec])
    body = '{"faults": [' + str(spec).replace("'", '"').replace("nan", "NaN").replace(
        "inf", "Infinity") + "]}"
    response = requests.post(emu.base_url + "/_emulator/faults", data=body, timeout=5)
    assert response.status_code == 400


def test_setters_refuse_nan_and_keep_the_old_value(emu: Emulator) -> None:
    for setter in (emu.set_expires_in, emu.set_latency):
        with pytest.raises(ValueError):
            setter(math.nan)
    emu.set_expires_in(604800)
    assert post(emu).json()["expires_in"] == 604800


@pytest.mark.parametrize("expires_in", [math.nan, math.inf, -math.inf, 0, -5, 0.0,
                                        604800.5, 1e12, 1e300, True, "soon", None])
def test_constructor_refuses_what_set_expires_in_refuses(expires_in: Any) -> None:
    # the whole message is fixed text: the refused value is never echoed
    with pytest.raises(ValueError, match=r"^expires_in must be (a number|a finite number in "
                                         r"\(0, 604800\])$"):
        Emulator(expires_in=expires_in)
    with pytest.raises(ValueError):
        Emulator().set_expires_in(expires_in)  # the same bounds


def test_constructor_accepts_the_bounds_of_set_expires_in() -> None:
    with Emulator(clients={CLIENT_ID: SECRET}, expires_in=604800) as longest:
        assert post(longest).json()["expires_in"] == 604800
    with Emulator(clients={CLIENT_ID: SECRET}, expires_in=0.5) as shortest:
        assert post(shortest).json()["expires_in"] == 0.5


def test_emulator_command_names_the_option_when_expires_in_is_beyond_a_week() -> None:
    # the constructor's refusal would otherwise surface as a "--certificate" error; a child
    # process with a timeout, since a command that accepted it would serve until killed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "token_worker", "emulator", "--port", "0",
                             "--expires-in", "604801"], capture_output=True, text=True,
                            env=env, timeout=20)
    assert result.returncode == 2
    assert "--expires-in: at most 604800 seconds" in result.stderr
    assert "--certificate" not in result.stderr


# -- trickle ------------------------------------------------------------------------------

def test_trickle_sends_a_normal_answer_one_byte_at_a_time(emu: Emulator) -> None:
    emu.set_faults([{"mode": "trickle", "interval": 0.002, "count": 1}])
    started = time.monotonic()
    response = post(emu)
    assert time.monotonic() - started > 0.3  # hundreds of bytes, 2 ms each
    assert response.status_code == 200 and response.json()["access_token"] in emu.issued_tokens
    assert emu.stats()["issued"] == 1


@pytest.mark.parametrize(("part", "slow_headers"), [("headers", True), ("body", False)])
def test_trickle_part_chooses_headers_or_body(emu: Emulator, part: str,
                                              slow_headers: bool) -> None:
    emu.set_faults([{"mode": "trickle", "part": part, "interval": 0.004}])
    started = time.monotonic()
    response = requests.post(emu.url, data=form(emu), timeout=5, stream=True)
    headers_took = time.monotonic() - started
    body = response.raw.read()
    body_took = time.monotonic() - started - headers_took
    assert (headers_took > 0.3) is slow_headers
    assert (body_took > 0.3) is not slow_headers
    assert b"access_token" in body


def test_stop_interrupts_a_trickle(emu: Emulator) -> None:
    emu.set_faults([{"mode": "trickle", "interval": 5}])
    with socket.create_connection(("127.0.0.1", emu.port), timeout=3) as sock:
        body = "&".join(f"{k}={v}" for k, v in form(emu).items()).encode()
        sock.sendall(f"POST /connect/token HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                     "\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
                     + body)
        assert sock.recv(1) == b"H"
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2
