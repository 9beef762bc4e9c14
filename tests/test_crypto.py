"""Encryption at rest: what lands in Redis, who can read it, and key rotation."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from token_worker import TokenReader, TokenUnavailable
from token_worker.cli import cli
from token_worker.config import load_config, parse_config
from token_worker.crypto import AesGcmCodec, generate_key, parse_keys
from token_worker.exceptions import ConfigError
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import RedisServer, write_config

ENV = "TW_TEST_KEYS"
K1 = generate_key("k1")
K2 = generate_key("k2")


@pytest.fixture
def path(tmp_path: Path, redis_url: str, emulator: Emulator, secret_env: str,
         monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, K1)
    config = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emulator.url,
                          profiles={"payments": ["client_paymentrequest"],
                                    "refunds": ["client_refund"]})
    config.write_text(config.read_text().replace(
        "[redis]\n", f'[redis]\nencryption_keys_env = "{ENV}"\n', 1))
    return config


def refresh(path: Path, profile: str = "payments") -> None:
    refresher = Refresher.from_config(load_config(path))
    try:
        assert refresher.refresh_profile(profile, force=True).outcome == "refreshed"
    finally:
        refresher.close()


@pytest.fixture
def reader(path: Path) -> Iterator[TokenReader]:
    r = TokenReader.from_config(str(path), cache=False)
    yield r
    r.close()


def unavailable(reader: TokenReader, profile: str = "payments") -> TokenUnavailable:
    with pytest.raises(TokenUnavailable) as info:
        reader.get(profile)
    return info.value


def test_redis_holds_ciphertext_and_no_token(path: Path, rds: redis.Redis,
                                             redis_server: RedisServer,
                                             emulator: Emulator) -> None:
    refresh(path)
    token = emulator.issued_tokens[-1]
    raw = rds.get("stitch:token:payments")
    assert re.fullmatch(r"enc:v1:k1:[A-Za-z0-9+/=]+", raw)
    assert "access_token" not in raw and "Bearer" not in raw
    assert token not in redis_server.dump_all()  # nor in status, schedule or profiles


def test_reader_with_the_keys_decrypts(path: Path, reader: TokenReader,
                                       emulator: Emulator) -> None:
    refresh(path)
    assert reader.get("payments").access_token == emulator.issued_tokens[-1]


def test_reader_without_keys_is_told_the_token_is_encrypted(path: Path, redis_url: str,
                                                            emulator: Emulator) -> None:
    refresh(path)
    bare = TokenReader(redis_url, cache=False)
    try:
        exc = unavailable(bare)
    finally:
        bare.close()
    assert exc.reason == "encrypted"
    assert "encrypted" in str(exc) and "payments" in str(exc)
    assert "enc:v1" not in str(exc) and emulator.issued_tokens[-1] not in str(exc)


def test_rotation_new_key_first_keeps_old_ciphertext_readable(
        path: Path, rds: redis.Redis, emulator: Emulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    refresh(path)
    old_token = emulator.issued_tokens[-1]
    monkeypatch.setenv(ENV, f"{K2},{K1}")  # step 2 of the rotation: new key first
    both = TokenReader.from_config(str(path), cache=False)
    assert both.get("payments").access_token == old_token  # still under k1
    refresh(path)
    assert rds.get("stitch:token:payments").startswith("enc:v1:k2:")
    assert both.get("payments").access_token == emulator.issued_tokens[-1] != old_token
    both.close()
    monkeypatch.setenv(ENV, K1)  # a reader that missed the rollout
    lagging = TokenReader.from_config(str(path), cache=False)
    exc = unavailable(lagging)
    lagging.close()
    assert exc.reason == "encrypted" and "'k2'" in str(exc)
    monkeypatch.setenv(ENV, K2)  # step 3: old key dropped
    new_only = TokenReader.from_config(str(path), cache=False)
    assert new_only.get("payments").access_token == emulator.issued_tokens[-1]
    new_only.close()


def test_ciphertext_copied_to_another_profile_does_not_decrypt(
        path: Path, rds: redis.Redis, reader: TokenReader, emulator: Emulator) -> None:
    refresh(path)
    rds.set("stitch:token:refunds", rds.get("stitch:token:payments"), px=60_000)
    exc = unavailable(reader, "refunds")
    assert exc.reason == "unreadable" and "moved from another profile" in str(exc)
    assert emulator.issued_tokens[-1] not in str(exc)


def test_tampered_ciphertext_does_not_decrypt(path: Path, rds: redis.Redis,
                                              reader: TokenReader) -> None:
    refresh(path)
    raw = rds.get("stitch:token:payments")
    head, body = raw[:len("enc:v1:k1:")], base64.b64decode(raw[len("enc:v1:k1:"):])
    flipped = body[:20] + bytes([body[20] ^ 1]) + body[21:]
    rds.set("stitch:token:payments", head + base64.b64encode(flipped).decode(), px=60_000)
    assert unavailable(reader).reason == "unreadable"


def test_plaintext_token_is_refused_when_encryption_is_on(rds: redis.Redis,
                                                          reader: TokenReader) -> None:
    # a Redis writer must not be able to plant a token of its own choosing
    planted = {"access_token": "planted", "token_type": "Bearer", "scope": "x",
               "issued_at": 1.0, "expires_at": 9e9}
    rds.set("stitch:token:payments", json.dumps(planted), px=60_000)
    assert unavailable(reader).reason == "encrypted"


def test_codec_round_trip_and_repr_hides_keys() -> None:
    codec = AesGcmCodec(parse_keys(f"{K1},{K2}"))
    sealed = codec.encode("payments", '{"access_token": "abc"}')
    assert codec.decode("payments", sealed) == '{"access_token": "abc"}'
    assert codec.encode("payments", "x") != codec.encode("payments", "x")  # fresh nonce
    for key in (K1, K2):
        assert key.split(":")[1] not in repr(codec)


# -- configuration -----------------------------------------------------------------------

def test_env_and_file_together_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"redis": {"encryption_keys_env": "X", "encryption_keys_file": "/k"},
                      "clients": {"main": {"client_id": "c", "client_secret_env": "S"}},
                      "profiles": {"p": {"scopes": ["client_refund"]}}})
    assert info.value.problems == [
        "redis: set at most one of encryption_keys_env, encryption_keys_file"]


@pytest.mark.parametrize(("spec", "message"), [
    (f"{K1},k2:bm90LWEta2V5", "entry 2 is not 'kid:base64 of 32 bytes'"),
    (f"{K1},{K1.replace('k1', 'k2')[:-4]}", "entry 2 is not"),
    (f"{K1},{generate_key('k1')}", "entry 2 repeats the key id of an earlier entry"),
    (f"bad:kid:{K1.split(':')[1]}", "entry 1 is not"),
    (" , ", "no keys listed"),
], ids=["not-kid-base64", "short-key", "repeated-kid", "kid-with-colon", "no-keys"])
def test_config_check_names_the_bad_key_entry_never_the_key(
        path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str) -> None:
    monkeypatch.setenv(ENV, spec)
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    for entry in spec.split(","):
        secret_part = entry.split(":")[-1].strip()
        if len(secret_part) > 8:
            assert secret_part not in result.output


def test_config_check_fails_when_the_key_variable_is_unset(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert "redis.encryption_keys_env: the environment variable it names is not set" \
        in result.stderr
    assert ENV not in result.stderr  # a configured value is never quoted


def test_keys_file_is_read_and_config_check_passes(path: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{K2}\n{K1}\n")  # one per line works too
    path.write_text(path.read_text().replace(f'encryption_keys_env = "{ENV}"',
                                             f'encryption_keys_file = "{keys}"'))
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 0, result.output
    reader = TokenReader.from_config(str(path))
    codec: Any = reader.store.codec
    reader.close()
    assert repr(codec) == "AesGcmCodec(kids=['k2', 'k1'])"


def test_keygen_prints_a_fresh_usable_key_entry() -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["keygen", "--kid", "2026-q1"])
    second = runner.invoke(cli, ["keygen", "--kid", "2026-q1"])
    assert first.exit_code == second.exit_code == 0
    entry = first.stdout.strip()
    assert re.fullmatch(r"2026-q1:[A-Za-z0-9+/]{43}=", entry)
    assert entry != second.stdout.strip()
    assert parse_keys(entry)[0][0] == "2026-q1"
    default = runner.invoke(cli, ["keygen"])
    assert re.fullmatch(r"k\d{8}:\S{44}", default.stdout.strip())


@pytest.mark.parametrize("kid", ["a:b", "a,b", "", "x" * 33, "k1\n", "k1\r"])
def test_keygen_refuses_an_unusable_kid(kid: str) -> None:
    result = CliRunner().invoke(cli, ["keygen", "--kid", kid])
    assert result.exit_code == 2
    assert "--kid" in result.stderr
