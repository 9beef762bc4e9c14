"""Certificate (private_key_jwt) clients: the assertion we send, the one the emulator takes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from token_worker import TokenReader
from token_worker.cli import cli
from token_worker.client import TokenClient
from token_worker.config import ClientSettings
from token_worker.credentials import (
    ASSERTION_TYPE,
    certificate_not_after,
    certificate_problems,
    load_certificate,
)
from token_worker.exceptions import ConfigError
from token_worker.testing import write_config as write_base_config
from token_worker.testing.emulator import Emulator

from . import pki
from .support import CLIENT_ID, SECRET

CERT_CLIENT_ID = "test-9b2e"
SCOPE = "client_disbursement"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return pki.rsa_key()


@pytest.fixture(scope="module")
def cert(key: rsa.RSAPrivateKey) -> Any:
    return pki.certificate(key)


@pytest.fixture
def pem_file(tmp_path: Path, key: rsa.RSAPrivateKey, cert: Any) -> Path:
    """What Stitch hands out: the private key and its certificate in one PEM."""
    return pki.write(tmp_path / "stitch-cert.pem", pki.key_pem(key), pki.cert_pem(cert))


@pytest.fixture(scope="module")
def emu(cert: Any) -> Iterator[Emulator]:
    with Emulator(clients={CLIENT_ID: SECRET},
                  certificates={CERT_CLIENT_ID: pki.cert_pem(cert)}) as emulator:
        yield emulator


def write_config(path: Path, *, redis_url: str, token_url: str, certificate_file: Path) -> Path:
    return write_base_config(
        path, redis_url=redis_url, token_url=token_url,
        clients={"main": {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"},
                 "certified": {"client_id": CERT_CLIENT_ID,
                               "certificate_file": str(certificate_file)}},
        profiles={"payments": {"client": "main", "scopes": ["client_paymentrequest"]},
                  "disbursements": {"client": "certified", "scopes": [SCOPE]}})


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": CERT_CLIENT_ID, "sub": CERT_CLIENT_ID, "jti": str(uuid.uuid4()),
                            "iat": now, "nbf": now, "exp": now + 120}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def post_assertion(emu: Emulator, assertion: str, **extra: str) -> requests.Response:
    form = {"grant_type": "client_credentials", "client_id": CERT_CLIENT_ID, "scope": SCOPE,
            "audience": emu.url, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, **extra}
    return requests.post(emu.url, data=form, timeout=5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- what the client sends ---------------------------------------------------------------

def test_each_request_carries_a_fresh_signed_assertion_with_the_contract_claims(
        emu: Emulator, pem_file: Path, cert: Any, key: rsa.RSAPrivateKey) -> None:
    forms: list[dict[str, str]] = []

    def spy(client_id: str, form: dict[str, str]) -> bool:
        forms.append(dict(form))
        return emu.verify_assertion(client_id, form)

    emu.assertion_verifier = spy
    client = ClientSettings(client_id=CERT_CLIENT_ID, certificate_file=str(pem_file))
    endpoint = TokenClient(emu.url)
    try:
        before = time.time()
        for _ in range(2):
            assert endpoint.request_token(client, [SCOPE]).access_token.startswith("emu_")
    finally:
        endpoint.close()
        emu.assertion_verifier = emu.verify_assertion
    assert len(forms) == 2
    seen_jti = set()
    for form in forms:
        assert "client_secret" not in form
        assert form["client_assertion_type"] == ASSERTION_TYPE
        header = jwt.get_unverified_header(form["client_assertion"])
        assert header["alg"] == "RS256"
        assert header["kid"] == pki.thumbprint(cert)  # x5t of the certificate in the PEM
        body = jwt.decode(form["client_assertion"], key.public_key(), algorithms=["RS256"],
                          audience=emu.url)
        assert body["iss"] == body["sub"] == CERT_CLIENT_ID
        assert body["aud"] == emu.url
        assert before - 1 <= body["iat"] <= time.time() + 1
        assert body["nbf"] <= body["iat"] + 1
        assert 0 < body["exp"] - body["iat"] <= 300
        seen_jti.add(body["jti"])
    assert len(seen_jti) == 2
    assert forms[0]["client_assertion"] != forms[1]["client_assertion"]


def test_certificate_repr_never_shows_the_private_key(pem_file: Path, cert: Any) -> None:
    loaded = load_certificate(str(pem_file))
    assert loaded.kid == pki.thumbprint(cert)
    assert "PRIVATE" not in repr(loaded) and "RSAPrivateKey" not in repr(loaded)


def test_refresh_local_works_for_a_certificate_client(
        tmp_path: Path, emu: Emulator, pem_file: Path, redis_url: str, secret_env: str) -> None:
    path = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emu.url,
                        certificate_file=pem_file)
    result = run("--config", str(path), "refresh", "--local", "disbursements")
    assert result.exit_code == 0, result.output
    assert "disbursements: refreshed" in result.stdout
    reader = TokenReader.from_config(str(path), cache=False)
    try:
        token = reader.get("disbursements")
    finally:
        reader.close()
    assert token.access_token == emu.issued_tokens[-1]
    assert token.scopes == (SCOPE,)


# -- what the emulator refuses -----------------------------------------------------------

def test_a_hand_built_assertion_is_accepted_once(emu: Emulator, key: rsa.RSAPrivateKey,
                                                 cert: Any) -> None:
    assertion = jwt.encode(claims(aud=emu.url), key, algorithm="RS256",
                           headers={"kid": pki.thumbprint(cert)})
    assert post_assertion(emu, assertion).status_code == 200
    replay = post_assertion(emu, assertion)  # same jti
    assert (replay.status_code, replay.json()) == (400, {"error": "invalid_client"})


def _hs256_with_public_key(emu: Emulator, key: rsa.RSAPrivateKey) -> str:
    # the classic algorithm-confusion forgery: HMAC keyed with the public key PEM
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(aud=emu.url)).encode())
    mac = hmac.new(pki.public_pem(key), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


BAD_ASSERTIONS: dict[str, Any] = {
    "wrong_aud": lambda emu, key: jwt.encode(
        claims(aud="https://secure.stitch.money/connect/token"), key, algorithm="RS256"),
    "expired": lambda emu, key: jwt.encode(
        claims(aud=emu.url, iat=int(time.time()) - 400, nbf=int(time.time()) - 400,
               exp=int(time.time()) - 120), key, algorithm="RS256"),
    "wrong_key": lambda emu, key: jwt.encode(claims(aud=emu.url), pki.rsa_key(),
                                             algorithm="RS256"),
    "wrong_iss": lambda emu, key: jwt.encode(claims(aud=emu.url, iss="test-other"), key,
                                             algorithm="RS256"),
    "wrong_sub": lambda emu, key: jwt.encode(claims(aud=emu.url, sub="test-other"), key,
                                             algorithm="RS256"),
    "no_jti": lambda emu, key: jwt.encode(claims(aud=emu.url, jti=None), key,
                                          algorithm="RS256"),
    "not_yet_valid": lambda emu, key: jwt.encode(
        claims(aud=emu.url, nbf=int(time.time()) + 600, exp=int(time.time()) + 700), key,
        algorithm="RS256"),
    "issued_in_future": lambda emu, key: jwt.encode(
        claims(aud=emu.url, iat=int(time.time()) + 600), key, algorithm="RS256"),
    "lives_too_long": lambda emu, key: jwt.encode(
        claims(aud=emu.url, exp=int(time.time()) + 3600), key, algorithm="RS256"),
    "kid_of_another_certificate": lambda emu, key: jwt.encode(
        claims(aud=emu.url), key, algorithm="RS256", headers={"kid": "bm90LXRoaXMtb25l"}),
    "alg_none": lambda emu, key: jwt.encode(claims(aud=emu.url), None, algorithm="none"),
    "hs256_with_public_key": _hs256_with_public_key,
    "garbage": lambda emu, key: "eyJ.not.a-jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_ASSERTIONS))
def test_bad_assertion_is_invalid_client(emu: Emulator, key: rsa.RSAPrivateKey,
                                         kind: str) -> None:
    response = post_assertion(emu, BAD_ASSERTIONS[kind](emu, key))
    assert (response.status_code, response.json()) == (400, {"error": "invalid_client"})


def test_wrong_assertion_type_is_invalid_client(emu: Emulator, key: rsa.RSAPrivateKey) -> None:
    assertion = jwt.encode(claims(aud=emu.url), key, algorithm="RS256")
    response = post_assertion(emu, assertion, client_assertion_type="urn:example:saml")
    assert (response.status_code, response.json()) == (400, {"error": "invalid_client"})


def test_secret_and_assertion_together_is_invalid_request(emu: Emulator,
                                                          key: rsa.RSAPrivateKey) -> None:
    assertion = jwt.encode(claims(aud=emu.url), key, algorithm="RS256")
    response = post_assertion(emu, assertion, client_secret=SECRET)
    assert (response.status_code, response.json()) == (400, {"error": "invalid_request"})


def test_emulator_accepts_a_bare_public_key(key: rsa.RSAPrivateKey) -> None:
    with Emulator(certificates={CERT_CLIENT_ID: pki.public_pem(key)}) as emu:
        assertion = jwt.encode(claims(aud=emu.url), key, algorithm="RS256")
        assert post_assertion(emu, assertion).status_code == 200


# -- config check and status ---------------------------------------------------------------

@pytest.fixture
def check_config(tmp_path: Path, secret_env: str) -> Any:
    def check(certificate_file: Path) -> Any:
        path = write_config(tmp_path / "tw.toml", redis_url="redis://127.0.0.1:1/0",
                            token_url="http://127.0.0.1:1/connect/token",
                            certificate_file=certificate_file)
        return run("--config", str(path), "config", "check")
    return check


def test_config_check_passes_a_good_certificate(check_config: Any, pem_file: Path) -> None:
    result = check_config(pem_file)
    assert result.exit_code == 0, result.output
    assert "certificate" not in result.stderr


def test_config_check_warns_when_the_certificate_expires_within_30_days(
        check_config: Any, tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    soon = pki.write(tmp_path / "soon.pem", pki.key_pem(key),
                     pki.cert_pem(pki.certificate(key, days=10)))
    result = check_config(soon)
    assert result.exit_code == 0, result.output
    assert "clients.certified.certificate_file: certificate expires in 9 days" in result.stderr


def test_config_check_warns_about_a_private_key_others_can_read(
        check_config: Any, pem_file: Path) -> None:
    pem_file.chmod(0o644)
    result = check_config(pem_file)
    assert result.exit_code == 0
    assert "accessible by group or others (mode 0644)" in result.stderr


@pytest.mark.parametrize(("kind", "message"), [
    ("expired", "certificate expired on"),
    ("no_rsa_key", "holds no RSA private key"),
    ("ec_key", "holds no RSA private key"),
    ("missing", "file cannot be read"),
    ("directory", "file cannot be read"),
    ("mismatched", "no certificate in"),
    ("truncated", "cannot be loaded"),
])
def test_config_check_fails_on_an_unusable_certificate(
        check_config: Any, tmp_path: Path, key: rsa.RSAPrivateKey, cert: Any, kind: str,
        message: str) -> None:
    path = tmp_path / f"{kind}.pem"
    if kind == "expired":
        pki.write(path, pki.key_pem(key),
                  pki.cert_pem(pki.certificate(key, days=-1, not_before_days=-30)))
    elif kind == "no_rsa_key":
        pki.write(path, pki.cert_pem(cert))
    elif kind == "ec_key":
        ec = pki.ec_key()
        pki.write(path, pki.key_pem(ec), pki.cert_pem(pki.certificate(ec)))
    elif kind == "directory":
        path.mkdir()
    elif kind == "mismatched":
        pki.write(path, pki.key_pem(key), pki.cert_pem(pki.certificate(pki.rsa_key())))
    elif kind == "truncated":
        pki.write(path, pki.key_pem(key)[:-20])
    result = check_config(path)
    assert result.exit_code == 2, result.output
    assert "clients.certified.certificate_file: " in result.stderr
    assert message in result.stderr
    assert "BEGIN" not in result.output


def test_a_mismatched_certificate_fails_the_token_request_before_sending(
        tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    path = pki.write(tmp_path / "m.pem", pki.key_pem(key),
                     pki.cert_pem(pki.certificate(pki.rsa_key())))
    with pytest.raises(ConfigError, match="matches its private key"):
        load_certificate(str(path))


def test_status_shows_the_certificate_expiry(
        tmp_path: Path, emu: Emulator, pem_file: Path, cert: Any, redis_url: str,
        secret_env: str) -> None:
    path = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emu.url,
                        certificate_file=pem_file)
    result = run("--config", str(path), "status", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["profile"]: row for row in json.loads(result.stdout)}
    assert rows["disbursements"]["certificate_expires_at"] == pytest.approx(
        cert.not_valid_after_utc.timestamp())
    assert "certificate_expires_at" not in rows["payments"]  # a secret client
    text = run("--config", str(path), "status")
    assert text.exit_code == 0, text.output
    day = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    assert f"certificate clients.certified: expires {day}" in text.stdout
    assert "[disbursements]" in text.stdout


def test_status_works_on_a_host_without_the_certificate(
        tmp_path: Path, emu: Emulator, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET", raising=False)  # a reader host: no credentials
    path = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emu.url,
                        certificate_file=tmp_path / "absent.pem")
    result = run("--config", str(path), "status", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["profile"]: row for row in json.loads(result.stdout)}
    assert rows["disbursements"]["certificate_expires_at"] is None
    text = run("--config", str(path), "status")
    assert text.exit_code == 0, text.output
    assert "certificate clients.certified: expiry unknown" in text.stdout


def test_emulator_command_refuses_an_unreadable_certificate(tmp_path: Path) -> None:
    result = run("emulator", "--port", "0", "--certificate",
                 f"{CERT_CLIENT_ID}={tmp_path / 'absent.pem'}")
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


# -- the expiry shown is the certificate of the key (issue 10, item 13) --------------------

def test_certificate_expiry_is_the_leaf_even_when_the_ca_comes_first(
        tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    ca_key = pki.rsa_key()
    ca = pki.certificate(ca_key, "Stitch test CA", ca=True, days=3650)
    leaf = pki.certificate(key, issuer=(ca, ca_key), days=100)
    bundle = pki.write(tmp_path / "bundle.pem", pki.cert_pem(ca), pki.cert_pem(leaf),
                       pki.key_pem(key))
    assert certificate_not_after(str(bundle)) == leaf.not_valid_after_utc
    assert load_certificate(str(bundle)).kid == pki.thumbprint(leaf)
    # no certificate of this key: no expiry, rather than the CA's
    other = pki.write(tmp_path / "other.pem", pki.cert_pem(ca), pki.key_pem(key))
    assert certificate_not_after(str(other)) is None
    lone = pki.write(tmp_path / "lone.pem", pki.cert_pem(leaf))  # a certificate, no key
    assert certificate_not_after(str(lone)) == leaf.not_valid_after_utc
    assert certificate_not_after(str(tmp_path / "absent.pem")) is None


def test_certificate_messages_name_the_key_never_the_path(tmp_path: Path,
                                                          key: rsa.RSAPrivateKey) -> None:
    where = tmp_path / "sk_live_Qp4Vn8Rz2Lk6"
    for blocks in ([], [pki.cert_pem(pki.certificate(key))],
                   [pki.key_pem(key), pki.cert_pem(pki.certificate(pki.rsa_key()))]):
        if blocks:
            pki.write(where, *blocks)
        problems, warnings = certificate_problems("certified", str(where))
        assert problems and all(p.startswith("clients.certified.certificate_file: ")
                                for p in problems)
        assert "Qp4Vn8Rz2Lk6" not in " ".join(problems + warnings)
    pki.write(where, pki.key_pem(key)).chmod(0o644)
    problems, warnings = certificate_problems("certified", str(where))
    assert warnings and "Qp4Vn8Rz2Lk6" not in " ".join(problems + warnings)
