"""Nothing secret in a repr, a str or an exception message (unit level)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from token_worker import TokenReader
from token_worker.client import IssuedToken, TokenClient
from token_worker.config import ClientSettings, load_config, parse_config, redact_url
from token_worker.credentials import build_assertion, load_certificate
from token_worker.crypto import AesGcmCodec, generate_key, parse_keys
from token_worker.emulator import Emulator
from token_worker.exceptions import TokenRequestError
from token_worker.refresh import Refresher
from token_worker.store import TokenStore, connect_redis
from token_worker.tokens import Token

from . import pki
from .support import CLIENT_ID, SECRET, write_config

REDIS_PW = "redis-pw-Hq83"
BROKER_PW = "broker-pw-Vx51"
ACCESS_TOKEN = "tok_" + "Jr5" * 12


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return pki.rsa_key()


@pytest.fixture
def pem(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    return pki.write(tmp_path / "cert.pem", pki.key_pem(key), pki.cert_pem(pki.certificate(key)))


def key_material(key: rsa.RSAPrivateKey) -> list[str]:
    numbers = key.private_numbers()
    body = pki.key_pem(key).decode().splitlines()[1:-1]
    return [str(numbers.d), str(numbers.p), format(numbers.d, "x")[:32], *body[:3]]


def assert_clean(text: str, *needles: str) -> None:
    for needle in needles:
        assert needle not in text, f"{needle[:12]}... leaked"


def test_config_reprs_hide_redis_and_broker_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STITCH_CLIENT_SECRET", SECRET)
    config = parse_config({
        "redis": {"url": f"rediss://refresher:{REDIS_PW}@10.0.0.1:6380/0"},
        "celery": {"broker_url": f"redis://10.0.0.2:6379/1?password={BROKER_PW}"},
        "clients": {"main": {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"}},
        "profiles": {"payments": {"scopes": ["client_paymentrequest"]}},
    })
    secret = config.client_for("payments").read_secret()
    shown = " ".join([repr(config), str(config), repr(config.redis), repr(config.celery),
                      repr(config.clients), repr(config.client_for("payments")),
                      str(config.client_for("payments")), repr(secret), str(secret)])
    assert_clean(shown, REDIS_PW, BROKER_PW, SECRET)
    assert "rediss://refresher:***@10.0.0.1:6380/0" in shown
    assert "password=***" in shown


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{REDIS_PW}@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
    (f"redis://h/0?db=1&Password={REDIS_PW}", "redis://h/0?db=1&Password=***"),
    (f"redis://:{REDIS_PW}@h:notaport/0", "redis://:***@h:notaport/0"),
])
def test_redact_url_edge_cases(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_token_and_issued_token_reprs_show_a_fingerprint_only() -> None:
    token = Token(access_token=ACCESS_TOKEN, token_type="Bearer", scopes=("client_refund",),
                  issued_at=1.0, expires_at=2.0, refresh_at=1.5)
    issued = IssuedToken(access_token=ACCESS_TOKEN, expires_in=60, token_type="Bearer",
                         scopes=("client_refund",))
    assert_clean(repr(token) + str(token) + repr(issued) + str(issued), ACCESS_TOKEN)
    assert token.fingerprint in repr(token)


def test_certificate_and_assertion_hide_the_private_key(pem: Path,
                                                        key: rsa.RSAPrivateKey) -> None:
    cert = load_certificate(str(pem))
    client = ClientSettings(client_id=CLIENT_ID, certificate_file=str(pem))
    shown = repr(cert) + str(cert) + repr(client)
    assert_clean(shown, *key_material(key))
    assert "PRIVATE" not in shown
    assertion = build_assertion(CLIENT_ID, "https://example/connect/token", cert)
    assert_clean(assertion, *key_material(key))


def test_codec_repr_shows_key_ids_only() -> None:
    entries = [generate_key("k1"), generate_key("k2")]
    codec = AesGcmCodec(parse_keys(",".join(entries)))
    assert_clean(repr(codec) + str(codec), *(e.split(":")[1] for e in entries))
    assert repr(codec) == "AesGcmCodec(kids=['k1', 'k2'])"


def test_client_store_and_reader_reprs_hide_passwords() -> None:
    url = f"redis://reader:{REDIS_PW}@127.0.0.1:1/0"
    store = TokenStore(connect_redis(url))
    reader = TokenReader(url)
    endpoint = TokenClient("http://127.0.0.1:1/connect/token")
    assert_clean(repr(store) + repr(reader) + repr(endpoint) + repr(reader.auth("p")), REDIS_PW)


@pytest.mark.parametrize("mode", ["echo", "http_error", "oauth_error", "malformed_json",
                                  "html", "unauthorized"])
def test_token_request_errors_never_carry_the_credential(
        emulator: Emulator, pem: Path, key: rsa.RSAPrivateKey, secret_env: str,
        mode: str) -> None:
    # "echo" is a server that reflects the request body, secret and assertion included
    endpoint = TokenClient(emulator.url)
    clients = [ClientSettings(client_id=CLIENT_ID, client_secret_env="STITCH_CLIENT_SECRET"),
               ClientSettings(client_id="test-9b2e", certificate_file=str(pem))]
    try:
        for client in clients:
            emulator.set_faults([{"mode": mode, "count": 1}])
            with pytest.raises(TokenRequestError) as info:
                endpoint.request_token(client, ["client_paymentrequest"])
            exc: Any = info.value
            shown = f"{exc} {exc!r} {exc.args} {exc.__reduce__()}"
            assert_clean(shown, SECRET, "client_assertion", "eyJ", *key_material(key))
            # a chained JSONDecodeError would carry the body (.doc): never shown in tracebacks
            assert exc.__cause__ is None
            assert exc.__context__ is None or exc.__suppress_context__
    finally:
        endpoint.close()


def test_refresh_failure_status_holds_no_credential(
        tmp_path: Path, redis_url: str, emulator: Emulator, secret_env: str,
        redis_server: Any) -> None:
    path = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emulator.url)
    refresher = Refresher.from_config(load_config(path))
    try:
        emulator.set_faults([{"mode": "echo"}])
        result = refresher.refresh_profile("payments", force=True)
    finally:
        refresher.close()
    assert result.outcome == "failed"
    assert_clean(repr(result) + str(result.to_dict()) + redis_server.dump_all(), SECRET)
