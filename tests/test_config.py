"""config.py: the TOML contract, every problem reported at once, credentials read late."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from token_worker.config import (
    Config,
    config_warnings,
    credential_problems,
    load_config,
    parse_config,
)
from token_worker.exceptions import ConfigError, TokenWorkerError

from .support import CLIENT_ID, SECRET_CLIENT, config_data, config_problems, write_config

base = config_data
problems_of = config_problems


pytestmark = pytest.mark.usefixtures("no_env_overrides")


# -- the contract's example and defaults -------------------------------------------------

CONTRACT_TOML = """
[redis]
url = "redis://127.0.0.1:6379/0"
prefix = "stitch"

[celery]
broker_url = "redis://127.0.0.1:6379/1"
queue = "tokens"

[stitch]
token_url = "https://secure.stitch.money/connect/token"
audience = "https://secure.stitch.money/connect/token"
timeout_seconds = 10

[refresh]
margin_seconds = 600
interval_seconds = 30

[clients.main]
client_id = "test-7a1c"
client_secret_env = "STITCH_CLIENT_SECRET"

[clients.certified]
client_id = "test-9b2e"
certificate_file = "/run/secrets/stitch-cert.pem"

[profiles.payments]
client = "main"
scopes = ["client_paymentrequest"]

[profiles.refunds]
client = "main"
scopes = ["client_refund"]
margin_seconds = 900

[profiles.disbursements]
client = "certified"
scopes = ["client_disbursement"]
"""


def test_contract_example_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "token_worker.toml"
    path.write_text(CONTRACT_TOML)
    config = load_config(path)
    assert sorted(config.profiles) == ["disbursements", "payments", "refunds"]
    assert config.client_for("refunds").client_id == "test-7a1c"
    assert config.client_for("disbursements").auth_method == "certificate"
    assert config.margin_for("refunds") == 900
    assert config.margin_for("payments") == 600
    assert config.broker_url == "redis://127.0.0.1:6379/1"
    assert config.path == str(path)


def test_defaults_follow_the_contract() -> None:
    config = parse_config(base(redis={"url": "redis://h:1/0"}))
    assert config.redis.prefix == "stitch"
    assert config.broker_url == "redis://h:1/0"  # default: redis.url
    assert config.celery.queue == "tokens"
    assert config.stitch.token_url == "https://secure.stitch.money/connect/token"
    assert config.stitch.effective_audience == config.stitch.token_url
    assert config.refresh.margin_seconds == 600
    assert config.refresh.interval_seconds == 30


def test_profile_may_omit_client_when_exactly_one_is_configured() -> None:
    config = parse_config(base())
    assert config.client_for("payments").client_id == CLIENT_ID


def test_lock_outlives_one_whole_attempt() -> None:
    config = parse_config(base(stitch={"timeout_seconds": 10}))
    calls = config.refresh.retries + 1
    assert config.lock_ttl_seconds > calls * config.stitch.timeout_seconds


# -- every structural problem ------------------------------------------------------------

@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"redis": {"url": "redis://h/0", "urll": "x"}}, "redis.urll: unknown key"),
        ({"celery": {"queue": "q", "brokr_url": "x"}}, "celery.brokr_url: unknown key"),
        ({"stitch": {"tokenurl": "x"}}, "stitch.tokenurl: unknown key"),
        ({"refresh": {"margin": 5}}, "refresh.margin: unknown key"),
        ({"clients": {"main": {**SECRET_CLIENT, "secret": "x"}}},
         "clients.main.secret: unknown key"),
        ({"profiles": {"payments": {"scopes": ["client_refund"], "scope": "x"}}},
         "profiles.payments.scope: unknown key"),
    ],
)
def test_unknown_key_is_refused_at_every_level(changes: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(base(**changes))


def test_empty_scopes_is_refused_naming_the_key_path() -> None:
    problems = problems_of(base(profiles={"refunds": {"scopes": []}}))
    assert problems == ["profiles.refunds.scopes: must not be empty"]


def test_missing_scopes_is_refused() -> None:
    assert problems_of(base(profiles={"refunds": {}})) == ["profiles.refunds.scopes: required"]


def test_scope_with_whitespace_or_duplicate_is_refused() -> None:
    problems = problems_of(base(profiles={"p": {"scopes": ["a b", "x", "x"]}}))
    assert any(p.startswith("profiles.p.scopes[0]: not a scope name") for p in problems)
    assert not any("a b" in p for p in problems)  # the value is never quoted
    assert "profiles.p.scopes: lists a scope twice" in problems


def test_profile_naming_a_missing_client_is_refused() -> None:
    problems = problems_of(base(profiles={"p": {"client": "nope", "scopes": ["client_refund"]}}))
    assert problems == ["profiles.p.client: names no client in [clients]"]


def test_client_must_be_named_when_two_clients_are_configured() -> None:
    clients = {"a": dict(SECRET_CLIENT), "b": {**SECRET_CLIENT, "client_id": "other"}}
    problems = problems_of(base(clients=clients))
    assert problems == ["profiles.payments.client: required when 2 clients are configured"]


def test_client_without_any_credential_is_refused() -> None:
    problems = problems_of(base(clients={"main": {"client_id": CLIENT_ID}}))
    assert len(problems) == 1
    assert problems[0].startswith("clients.main: set exactly one of client_secret_env, "
                                  "client_secret_file, certificate_file")
    assert "none" in problems[0]


def test_client_with_two_credential_kinds_is_refused() -> None:
    client = {**SECRET_CLIENT, "certificate_file": "/run/secrets/cert.pem"}
    problems = problems_of(base(clients={"main": client}))
    assert len(problems) == 1 and problems[0].startswith("clients.main: set exactly one of")
    assert "found 2" in problems[0]


def test_client_without_client_id_is_refused() -> None:
    problems = problems_of(base(clients={"main": {"client_secret_env": "X"}}))
    assert "clients.main.client_id: required" in problems


def test_no_clients_is_refused_once_under_clients() -> None:
    assert problems_of(base(clients={})) == ["clients: at least one client is required"]


def test_no_profiles_is_refused() -> None:
    assert "profiles: at least one profile is required" in problems_of(base(profiles={}))


def test_profile_name_unsafe_for_redis_keys_is_refused() -> None:
    problems = problems_of(base(profiles={"pay ments": {"scopes": ["client_refund"]}}))
    assert any(p.startswith("profiles.pay ments: name must match") for p in problems)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stitch": {"timeout_seconds": 0}}, "stitch.timeout_seconds:"),
        ({"refresh": {"margin_seconds": -1}}, "refresh.margin_seconds:"),
        ({"refresh": {"interval_seconds": 0}}, "refresh.interval_seconds:"),
        ({"redis": {"prefix": "a b"}}, "redis.prefix:"),
        ({"profiles": {"p": {"scopes": ["client_refund"], "margin_seconds": -5}}},
         "profiles.p.margin_seconds:"),
        ({"profiles": {"p": {"scopes": "client_refund"}}}, "profiles.p.scopes:"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(changes: dict[str, Any],
                                                        expected: str) -> None:
    problems = problems_of(base(**changes))
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    data = base(
        bogus=True,
        redis={"url": "redis://h/0", "colour": "red"},
        clients={"main": dict(SECRET_CLIENT), "spare": {"client_id": "x"}},
        profiles={
            "refunds": {"client": "main", "scopes": []},
            "payments": {"client": "ghost", "scopes": ["client_paymentrequest"]},
            "orphans": {"scopes": ["client_refund"]},
        },
    )
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    problems = info.value.problems
    expected = [
        "bogus: unknown key",
        "redis.colour: unknown key",
        "profiles.refunds.scopes: must not be empty",
        "profiles.payments.client: names no client in [clients]",
        "profiles.orphans.client: required when 2 clients are configured",
    ]
    for line in expected:
        assert line in problems
    assert any(p.startswith("clients.spare: set exactly one of") for p in problems)
    assert all("\n" not in p for p in problems)
    # the message shows them all, one per line
    lines = [line.strip() for line in str(info.value).splitlines()]
    assert lines[0] == "invalid config:"
    assert all(line in lines for line in expected)
    assert isinstance(info.value, TokenWorkerError)


# -- the file ---------------------------------------------------------------------------

def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    assert str(path) in info.value.problems[0] and "not found" in info.value.problems[0]


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[redis\nurl = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid TOML" in info.value.problems[0]
    assert str(path) in info.value.problems[0]


def test_path_comes_from_env_when_not_given(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "elsewhere.toml", redis_url="redis://h:1/0",
                        token_url="http://127.0.0.1:1/connect/token")
    monkeypatch.setenv("TOKEN_WORKER_CONFIG", str(path))
    assert load_config().path == str(path)


def test_default_path_is_token_worker_toml_in_cwd(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "token_worker.toml", redis_url="redis://cwd:1/0",
                 token_url="http://127.0.0.1:1/connect/token")
    monkeypatch.chdir(tmp_path)
    assert load_config().redis.url == "redis://cwd:1/0"


def test_env_overrides_redis_and_broker_urls(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "c.toml", redis_url="redis://file:1/0",
                        broker_url="redis://file:1/1",
                        token_url="http://127.0.0.1:1/connect/token")
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", "redis://env-redis:6380/3")
    monkeypatch.setenv("TOKEN_WORKER_BROKER_URL", "amqp://guest@env-broker//")
    config = load_config(path)
    assert config.redis.url == "redis://env-redis:6380/3"
    assert config.broker_url == "amqp://guest@env-broker//"
    assert config.redis.prefix == "stitch"  # the rest of the section is kept


def test_redis_env_override_also_moves_default_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", "redis://env:1/0")
    config = parse_config(base())
    assert config.redis.url == "redis://env:1/0"
    assert config.broker_url == "redis://env:1/0"


# -- credentials ------------------------------------------------------------------------

def test_structure_loads_without_any_secret_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET", raising=False)
    config = parse_config(base())  # readers load the same file without a secret
    assert credential_problems(config) == [
        "clients.main.client_secret_env: the environment variable it names is not set or empty"
    ]


def test_unreadable_secret_file_is_a_credential_problem(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    config = parse_config(base(clients={"main": {"client_id": CLIENT_ID,
                                                 "client_secret_file": str(missing)}}))
    problems = credential_problems(config)
    assert len(problems) == 1
    assert problems[0].startswith("clients.main.client_secret_file: file cannot be read")
    assert str(missing) not in problems[0]  # the key is named, the value never quoted


def test_empty_secret_file_is_a_credential_problem(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    config = parse_config(base(clients={"main": {"client_id": CLIENT_ID,
                                                 "client_secret_file": str(empty)}}))
    assert credential_problems(config) == ["clients.main.client_secret_file: file is empty"]


def test_unreadable_certificate_is_a_credential_problem(tmp_path: Path) -> None:
    config = parse_config(base(clients={"main": {"client_id": CLIENT_ID,
                                                 "certificate_file": str(tmp_path / "x.pem")}}))
    problems = credential_problems(config)
    assert len(problems) == 1 and problems[0].startswith("clients.main.certificate_file:")


def test_credential_problems_lists_every_client(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    clients = {
        "a": {"client_id": "a", "client_secret_env": "NOT_SET_ANYWHERE"},
        "b": {"client_id": "b", "client_secret_file": str(tmp_path / "gone")},
    }
    config = parse_config(base(clients=clients,
                               profiles={"p": {"client": "a", "scopes": ["client_refund"]}}))
    problems = credential_problems(config)
    assert [p.split(".")[1] for p in problems] == ["a", "b"]


def test_rotated_secret_file_is_picked_up_without_reload(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("first-secret\n")
    config = parse_config(base(clients={"main": {"client_id": CLIENT_ID,
                                                 "client_secret_file": str(secret_file)}}))
    client = config.client_for("payments")
    assert client.read_secret().get_secret_value() == "first-secret"
    secret_file.write_text("rotated-secret\n")
    assert client.read_secret().get_secret_value() == "rotated-secret"


def test_secret_env_is_read_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STITCH_CLIENT_SECRET", "one")
    config = parse_config(base())
    monkeypatch.setenv("STITCH_CLIENT_SECRET", "two")
    assert config.client_for("payments").read_secret().get_secret_value() == "two"


# -- warnings ---------------------------------------------------------------------------

def test_unknown_scope_is_a_warning_not_an_error() -> None:
    config = parse_config(base(profiles={"p": {"scopes": ["client_newthing"]}}))
    warnings = config_warnings(config)
    assert any(w.startswith("profiles.p.scopes[0]: unknown scope") for w in warnings)
    assert not any("client_newthing" in w for w in warnings)  # not our name: not quoted


def test_known_scopes_and_sane_margins_give_no_warnings() -> None:
    config = parse_config(base())
    assert config_warnings(config) == []


# -- nothing secret in a repr -----------------------------------------------------------

def test_config_is_immutable() -> None:
    config = parse_config(base())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        config.redis = config.redis  # type: ignore[misc]
    assert isinstance(config, Config)
