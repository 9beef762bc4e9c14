"""reader_config.py: ``from_config()`` reads the reader's part of the config without
pydantic, and refuses exactly what ``load_config`` refuses there, naming the same key."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from token_worker.config import load_config, parse_config
from token_worker.crypto import AesGcmCodec, generate_key, parse_keys
from token_worker.exceptions import ConfigError
from token_worker.reader_config import (
    gapless_min_ttl,
    load_reader_config,
    parse_reader_config,
)
from token_worker.store import TokenStore, connect_redis

from .support import config_data, env_with, make_token, python, write_config

pytestmark = pytest.mark.usefixtures("no_env_overrides")

MARK = "SeCrEt"  # in every hostile string value: no message may repeat it
HEAVY = ("pydantic", "token_worker.config", "token_worker.client", "token_worker.refresh",
         "token_worker.tasks", "requests", "celery", "kombu")


# -- a reader host loads neither pydantic nor the token client ------------------------------

_PROBE = textwrap.dedent("""
    import asyncio, json, sys
    from token_worker import TokenReader
    reader = TokenReader.from_config(sys.argv[1])
    token = reader.get("payments")
    if sys.argv[2] == "async":
        from token_worker.aio import AsyncTokenReader

        async def first_get():
            async with AsyncTokenReader.from_config(sys.argv[1]) as areader:
                return (await areader.get("payments")).access_token
        assert asyncio.run(first_get()) == token.access_token
    heavy = [m for m in sys.argv[3].split(",") if m in sys.modules]
    print(json.dumps({"heavy": heavy, "token": token.access_token,
                      "min_ttl": reader.min_ttl_for("payments")}))
""")


@pytest.mark.parametrize(("encrypted", "flavour"), [(False, "sync"), (True, "async")])
def test_from_config_and_a_first_get_load_no_pydantic_config_or_client(
        tmp_path: Path, redis_url: str, encrypted: bool, flavour: str) -> None:
    keys = generate_key("k1")
    path = write_config(tmp_path / "token_worker.toml", redis_url=redis_url,
                        token_url="http://127.0.0.1:1/connect/token", margin=30, interval=10,
                        timeout=17, redis={"encryption_keys_env": "TW_KEYS"} if encrypted
                        else None)
    codec = AesGcmCodec(parse_keys(keys)) if encrypted else None
    store = TokenStore(connect_redis(redis_url), "stitch", codec=codec)
    try:
        store.publish("payments", make_token(store, 300, access="tok-light"))
    finally:
        store.redis.close()
    proc = subprocess.run([python(), "-c", _PROBE, str(path), flavour, ",".join(HEAVY)],
                          capture_output=True, text=True, timeout=60,
                          env=env_with(TW_KEYS=keys))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"heavy": [], "token": "tok-light", "min_ttl": 3.0}  # 30 - 10 - 17


# -- the light path and load_config agree -----------------------------------------------------

def _keys(problems: list[str]) -> set[str]:
    return {p.split(": ", 1)[0] for p in problems}


def _full(data: dict[str, Any]) -> tuple[str, Any]:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        return "refused", exc.problems
    return "ok", (config.redis.model_dump(),
                  {name: gapless_min_ttl(config, name) for name in config.profiles})


def _light(data: dict[str, Any]) -> tuple[str, Any]:
    try:
        config = parse_reader_config(data)
    except ConfigError as exc:
        return "refused", exc.problems
    return "ok", (config.redis, config.min_ttls)


def assert_agree(data: dict[str, Any]) -> tuple[str, Any]:
    full, light = _full(data), _light(data)
    assert full[0] == light[0], (full, light)
    if full[0] == "ok":
        assert full == light
        return full
    assert _keys(full[1]) == _keys(light[1]), (full[1], light[1])
    # a [redis] key is judged by one rule: the very same words on both paths
    full_redis = sorted(p for p in full[1] if p.startswith("redis."))
    assert full_redis == sorted(p for p in light[1] if p.startswith("redis.")), full[1]
    for problems in (full[1], light[1]):
        shown = "\n".join(problems)
        assert MARK not in shown and MARK.lower() not in shown.lower(), problems
        assert all(p.isprintable() for p in problems), problems
    return full


ENC = "k1:" + "A" * 43 + "="
VALID_REDIS: list[dict[str, Any]] = [
    {},
    {"url": "redis://cache.internal:6380/2", "prefix": "acme.pay-1_x"},
    {"url": "rediss://h:6380/0", "tls_ca_file": "/etc/ca.pem", "tls_cert_file": "/c.pem",
     "tls_key_file": "/k.pem", "socket_timeout_seconds": 0.5},
    {"url": "unix:///run/redis.sock", "socket_timeout_seconds": 7},  # an int: 7.0
    {"url": "redis+sentinel://:pw@s1:26379,s2/mymaster/3", "sentinel_password_env": "S_PW"},
    {"url": "redis://:p%2Fw%40rd@h:6379/0"},  # a / and an @ in the password, encoded
    {"url": "redis://user:" + "x" * 5000 + "@h/0"},  # a huge password
    {"wait_replicas": 16, "wait_timeout_ms": 10_000},
    {"wait_replicas": 0, "wait_timeout_ms": 1},
    {"encryption_keys_env": "TW_KEYS"},
    {"encryption_keys_file": "/run/secrets/keys"},
    {"tls_ca_file": "/odd\x00path"},  # only a pasted key is refused in a path
    {"url": "rediss://h/0?ssl_cert_reqs=none"},  # replaced by the env override below
]
BAD_REDIS: list[dict[str, Any]] = [
    {"wait_timeout_ms": float("nan")}, {"wait_timeout_ms": float("inf")},
    {"wait_timeout_ms": float("-inf")}, {"wait_timeout_ms": -1}, {"wait_timeout_ms": 0},
    {"wait_timeout_ms": 10_001}, {"wait_timeout_ms": 2**70}, {"wait_timeout_ms": 100.0},
    {"wait_timeout_ms": True}, {"wait_timeout_ms": "100"}, {"wait_timeout_ms": None},
    {"wait_replicas": 17}, {"wait_replicas": -1}, {"wait_replicas": 1.5},
    {"socket_timeout_seconds": float("nan")}, {"socket_timeout_seconds": 0},
    {"socket_timeout_seconds": 1e308}, {"socket_timeout_seconds": -2**80},
    {"socket_timeout_seconds": False}, {"socket_timeout_seconds": "5"},
    {"url": f"redis://:pa/{MARK}@h:6379/0"},  # a raw / in the password
    {"url": f"redis://:{MARK}@h:6379/0\n"}, {"url": f"redis://{MARK}\x00h/0"},
    {"url": f"redis://:{MARK}\x1b[2J@h/0"}, {"url": ""}, {"url": 6379}, {"url": None},
    {"url": f"http://:{MARK}@h/0"}, {"url": f"redis://:{MARK}@h:99999/0"},
    {"url": f"rediss://:{MARK}@h/0?ssl_cert_reqs=none"},
    {"url": f"rediss://:{MARK}@h/0?ssl_check_hostname=false"},
    {"url": f"rediss+sentinel://:{MARK}@s1/m?ssl_cert_reqs=none"},
    {"url": f"redis+sentinel://:{MARK}@s1/"}, {"url": f"redis+cluster://:{MARK}@n1/3"},
    {"url": f"redis://:{MARK}@h/notadb"}, {"url": "redis://" + "h" * 100_000 + ":x/0"},
    {"prefix": f"{MARK}\n"}, {"prefix": ""}, {"prefix": f"a {MARK}"}, {"prefix": 5},
    {"prefix": f"ü{MARK}"}, {"prefix": "{stitch}"},
    {"tls_key_file": f"-----BEGIN PRIVATE KEY-----\n{MARK}\n-----END PRIVATE KEY-----"},
    {"tls_key_file": 5}, {"tls_ca_file": ["a"]},
    {"encryption_keys_env": f"k1:{MARK}=="}, {"encryption_keys_file": f"k1:{MARK}\nk2:x"},
    {"encryption_keys_env": "TW_KEYS", "encryption_keys_file": "/keys"},
    {"sentinel_password_env": f"pa ss{MARK}"}, {"sentinel_password_env": f"9{MARK}"},
    {"passwrd": MARK}, {"URL": MARK}, {"url\n": MARK}, {"\x1b[31m": MARK},
    {"password": MARK, "wait_timeout_ms": float("nan"), "prefix": MARK + "/"},
]


@pytest.mark.parametrize("redis", VALID_REDIS, ids=lambda r: str(sorted(r))[:60])
def test_a_valid_redis_section_gives_the_same_settings(redis: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if "ssl_cert_reqs" in str(redis):
        monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", "rediss://other:6390/1")
    assert assert_agree(config_data(redis=redis))[0] == "ok"


@pytest.mark.parametrize("redis", BAD_REDIS, ids=lambda r: repr(sorted(r))[:60])
def test_a_bad_redis_section_is_refused_naming_the_same_key(redis: dict[str, Any]) -> None:
    problems = assert_agree(config_data(redis=redis))[1]
    assert any(p.startswith("redis") for p in problems), problems


@pytest.mark.parametrize("data", [
    config_data(redis="redis://h/0"), config_data(redis=None),
    config_data(redsi={"url": "redis://h/0"}),  # a typo'd table: never the default Redis
    config_data(redis={"url": "redis+cluster://n1/"}),  # needs celery.broker_url
    config_data(refresh={"margin_seconds": float("nan")}),
    config_data(refresh={"interval_seconds": 0.05, "margin_seconds": -1}),
    config_data(stitch={"timeout_seconds": float("inf")}), config_data(stitch=[]),
    config_data(profiles={"p": {"scopes": ["s"], "margin_seconds": 604801}}),
    config_data(profiles={"p": {"scopes": ["s"], "margin_seconds": True}}),
    config_data(profiles={"p\n": {"scopes": ["s"]}}), config_data(profiles={"p": "x"}),
    config_data(profiles={}), config_data(clients={}),
])
def test_the_keys_that_pick_min_ttl_and_the_tables_are_refused_alike(
        data: dict[str, Any]) -> None:
    assert assert_agree(data)[0] == "refused"


@pytest.mark.parametrize("changes", [
    {"refresh": {"margin_seconds": 5, "interval_seconds": 1},
     "stitch": {"timeout_seconds": 1},
     "profiles": {"a": {"scopes": ["s"]}, "b": {"scopes": ["s"], "margin_seconds": 900},
                  "c": {"scopes": ["s"], "margin_seconds": 1.5},
                  "d": {"scopes": ["s"], "margin_seconds": None}}},
    {"refresh": {"margin_seconds": 0, "interval_seconds": 3600}},
    {"refresh": {"margin_seconds": 604800}, "stitch": {"timeout_seconds": 300}},
])
def test_min_ttls_are_the_same_on_both_paths(changes: dict[str, Any]) -> None:
    assert assert_agree(config_data(**changes))[0] == "ok"


def test_a_bad_env_override_is_named_as_the_variable_on_both_paths(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", f"redis://:{MARK}@h/0\x07")
    problems = assert_agree(config_data())[1]
    assert problems[0].startswith("redis.url (from $TOKEN_WORKER_REDIS_URL): "), problems
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", "redis://from-env:6390/4")
    assert assert_agree(config_data(redis={"url": "redis://file/0"}))[1][0]["url"] == \
        "redis://from-env:6390/4"


def test_the_same_file_is_found_and_refused_alike(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def prefix_of_both(path: str | None) -> tuple[str, str]:
        return load_config(path).redis.prefix, load_reader_config(path).redis["prefix"]

    for name in ("cwd", "env", "flag"):
        (tmp_path / name).mkdir()
        write_config(tmp_path / name / "token_worker.toml", redis_url="redis://h/0",
                     token_url="http://127.0.0.1:1/t", prefix=name)
    monkeypatch.chdir(tmp_path / "cwd")
    assert prefix_of_both(None) == ("cwd", "cwd")
    monkeypatch.setenv("TOKEN_WORKER_CONFIG", str(tmp_path / "env" / "token_worker.toml"))
    assert prefix_of_both(None) == ("env", "env")
    assert prefix_of_both(str(tmp_path / "flag" / "token_worker.toml")) == ("flag", "flag")
    (tmp_path / "bad.toml").write_text(f'[redis]\nurl = "{MARK}\n')
    for path in (str(tmp_path / "bad.toml"), str(tmp_path / "missing.toml")):
        with pytest.raises(ConfigError) as full:
            load_config(path)
        with pytest.raises(ConfigError) as light:
            load_reader_config(path)
        assert full.value.problems == light.value.problems
    monkeypatch.setenv("TOKEN_WORKER_CONFIG", "")
    assert os.environ["TOKEN_WORKER_CONFIG"] == ""
    assert prefix_of_both(None) == ("cwd", "cwd")  # an empty variable is no path
