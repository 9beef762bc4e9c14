"""Nothing secret in a repr, a str or an exception message (unit level)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from token_worker import TokenReader, TokenUnavailable
from token_worker.cli import cli
from token_worker.client import IssuedToken, TokenClient
from token_worker.config import (
    ClientSettings,
    config_warnings,
    credential_problems,
    load_config,
    parse_config,
    redact_url,
)
from token_worker.credentials import build_assertion, load_certificate
from token_worker.crypto import AesGcmCodec, generate_key, parse_keys
from token_worker.exceptions import ConfigError, TokenRequestError
from token_worker.refresh import Refresher
from token_worker.store import TokenStore, connect_redis
from token_worker.testing.emulator import Emulator
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


def test_reprs_never_show_the_secret_or_redis_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STITCH_CLIENT_SECRET", SECRET)
    config = parse_config({
        "redis": {"url": "redis://:hunter2-pw@10.0.0.1:6379/0"},
        "celery": {"broker_url": "redis://user:broker-pw@10.0.0.2:6379/1"},
        "clients": {"main": {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"}},
        "profiles": {"payments": {"scopes": ["client_paymentrequest"]}},
    })
    secret = config.client_for("payments").read_secret()
    shown = " ".join([repr(config), str(config), repr(config.redis), repr(config.celery),
                      repr(config.clients), repr(secret), str(secret)])
    for needle in (SECRET, "hunter2-pw", "broker-pw"):
        assert needle not in shown
    assert "redis://:***@10.0.0.1:6379/0" in shown
    assert secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h/2", "rediss://user:***@h/2"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("amqp://guest:pw@h//", "amqp://guest:***@h//"),
        # bare user info may be a password (redis-py and kombu read it differently): hidden
        ("amqp://guest@h//", "amqp://***@h//"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- a secret pasted into any key is never quoted back (issue 10, item 4) -------------------

PASTED = "sk_live_" + "Tz8Qm3Vx9Lp2" * 2  # shaped like an env var name and a file name


def pasted_config(path: Path, section: str, key: str, value: Any) -> Path:
    """The test config with ``[section] key = value`` set (sections may be dotted)."""
    data: dict[str, dict[str, Any]] = {
        "redis": {"url": "redis://127.0.0.1:1/0"},
        "stitch": {"token_url": "http://127.0.0.1:1/connect/token"},
        "clients.main": {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"},
        "profiles.payments": {"scopes": ["client_paymentrequest"]},
    }
    if key in ("client_secret_file", "certificate_file"):
        del data["clients.main"]["client_secret_env"]
    data.setdefault(section, {})[key] = value
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("section", "key", "value"), [
    ("redis", "url", PASTED), ("redis", "url", f"redis://{PASTED}@h:x/0"),
    ("redis", "url", f"rediss://h/0?ssl_keyfile={PASTED}"), ("redis", "prefix", PASTED + " x"),
    ("redis", "tls_ca_file", PASTED), ("redis", "tls_cert_file", PASTED),
    ("redis", "tls_key_file", PASTED), ("redis", "encryption_keys_env", PASTED),
    ("redis", "encryption_keys_file", PASTED), ("redis", "socket_timeout_seconds", PASTED),
    ("celery", "broker_url", PASTED), ("celery", "broker_url", f"gopher://{PASTED}"),
    ("celery", "queue", PASTED), ("stitch", "token_url", PASTED),
    ("stitch", "token_url", f"http://{PASTED}.example/t"), ("stitch", "audience", PASTED),
    ("stitch", "timeout_seconds", PASTED), ("refresh", "margin_seconds", PASTED),
    ("refresh", "interval_seconds", PASTED), ("refresh", "retries", PASTED),
    ("metrics", "host", PASTED), ("metrics", "port", PASTED),
    ("clients.main", "client_id", PASTED), ("clients.main", "client_secret_env", PASTED),
    ("clients.main", "client_secret_env", PASTED + "-with-dashes"),
    ("clients.main", "client_secret_file", PASTED), ("clients.main", "certificate_file", PASTED),
    ("profiles.payments", "client", PASTED), ("profiles.payments", "scopes", [PASTED]),
    ("profiles.payments", "scopes", ["client_refund", PASTED + " x"]),
    ("profiles.payments", "margin_seconds", PASTED),
])
def test_a_secret_pasted_into_any_key_is_never_echoed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str,
        value: Any) -> None:
    monkeypatch.setenv("STITCH_CLIENT_SECRET", SECRET)
    monkeypatch.delenv(PASTED, raising=False)
    path = pasted_config(tmp_path / "tw.toml", section, key, value)
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert "Traceback" not in result.output
    shown = result.output
    try:
        config = load_config(path)
    except ConfigError as exc:
        shown += f"{exc} {exc!r} {exc.problems}"
    else:
        shown += " ".join(credential_problems(config) + config_warnings(config))
        if key.endswith(("_env", "_file")):  # where pasted credentials sit: not in a repr either
            shown += repr(config) + str(config)
    assert_clean(shown, PASTED, PASTED[8:20])


@pytest.mark.parametrize("key", ["client_secret_file", "client_secret_env"])
def test_a_pasted_secret_never_reaches_last_error_or_a_reader(
        tmp_path: Path, redis_url: str, emulator: Emulator, redis_server: Any,
        monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.delenv(PASTED, raising=False)
    path = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emulator.url)
    path.write_text(path.read_text().replace('client_secret_env = "STITCH_CLIENT_SECRET"',
                                             f'{key} = "{PASTED}"'))
    refresher = Refresher.from_config(load_config(path))
    try:
        result = refresher.refresh_profile("payments", force=True)
    finally:
        refresher.close()
    assert result.outcome == "failed"
    reader = TokenReader.from_config(str(path))
    try:
        with pytest.raises(TokenUnavailable) as info:
            reader.get("payments")
    finally:
        reader.close()
    status = CliRunner().invoke(cli, ["--config", str(path), "status", "--json"])
    assert f"clients.main.{key}" in status.stdout  # the key is named...
    assert_clean(repr(result) + str(result.to_dict()) + redis_server.dump_all() + str(info.value)
                 + status.output, PASTED, PASTED[8:20])  # ...the value never


# -- a password with / (and the rest) in a Redis URL (issue 10, item 5) ---------------------

SLASHED_PW = "Kq7Wz/Rt4Xp+Mn2=Lb9?Hv3"


def test_describe_and_reprs_hide_a_percent_encoded_password_with_a_slash() -> None:
    url = "redis://reader:" + SLASHED_PW.replace("/", "%2F").replace("+", "%2B") \
        .replace("=", "%3D").replace("?", "%3F") + "@127.0.0.1:1/0"
    store = TokenStore(connect_redis(url))
    reader = TokenReader(url)
    shown = repr(store) + repr(reader) + redact_url(url)
    try:
        reader.get("payments")
    except TokenUnavailable as exc:
        shown += str(exc)
    for piece in ("Kq7Wz", "Rt4Xp", "Mn2", "Lb9", "Hv3", "%2F"):
        assert piece not in shown
