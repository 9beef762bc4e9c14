"""status.py and what follows from it (status, metrics, refresh --wait): a token the API
rejected (a 401 was reported) is refresh_due, never valid; under the shipped ACL users too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from token_worker import TokenReader, metrics
from token_worker.cli import cli
from token_worker.config import Config, load_config
from token_worker.refresh import Refresher
from token_worker.status import read_statuses
from token_worker.store import TokenStore
from token_worker.testing.emulator import Emulator
from token_worker.tokens import TokenState
from token_worker.waiting import wait_for_refresh

from .acl_support import AclRedis, start_acl_redis
from .support import write_config


def report(redis_url: str, profile: str = "payments") -> str:
    """A reader reports the current token rejected; its fingerprint."""
    reader = TokenReader(redis_url)
    try:
        token = reader.get(profile)
        assert reader.report_rejected(profile, token)
        return token.fingerprint
    finally:
        reader.close()


def states(config: Config, store: TokenStore) -> dict[str, TokenState]:
    return {r.profile: r.state for r in read_statuses(config, store)}


def test_a_rejected_token_is_refresh_due_until_replaced(
        redis_url: str, config: Config, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    refresher.refresh_profile("refunds")
    assert states(config, refresher.store) == {"payments": TokenState.VALID,
                                               "refunds": TokenState.VALID}
    report(redis_url)
    rows = {r.profile: r for r in read_statuses(config, refresher.store)}
    assert rows["payments"].state is TokenState.REFRESH_DUE and rows["payments"].rejected
    assert rows["refunds"].state is TokenState.VALID and not rows["refunds"].rejected
    refresher.refresh_profile("payments", force=True)  # the replacement is valid again
    assert states(config, refresher.store)["payments"] is TokenState.VALID


def test_status_json_shows_a_rejected_token_as_refresh_due(
        redis_url: str, config_path: Path, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    report(redis_url)
    out = CliRunner().invoke(cli, ["--config", str(config_path), "status", "--json"])
    assert out.exit_code == 0, out.output
    row = next(r for r in json.loads(out.stdout) if r["profile"] == "payments")
    assert row["state"] == "refresh_due" and row["rejected"] is True


def test_metrics_show_a_rejected_token_as_refresh_due(
        redis_url: str, config: Config, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    report(redis_url)
    text = generate_latest(metrics.status_registry(config, refresher.store)).decode()
    samples = {(s.labels.get("profile"), s.labels.get("state")): s.value
               for f in text_string_to_metric_families(text) if f.name == "token_worker_token_state"
               for s in f.samples}
    assert samples[("payments", "refresh_due")] == 1
    assert samples[("payments", "valid")] == 0
    assert samples[("refunds", "missing")] == 1


def test_non_forced_wait_is_not_satisfied_by_a_rejected_token(
        redis_url: str, config: Config, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    store = refresher.store
    now = store.time()
    assert wait_for_refresh(config, store, ["payments"], force=False, requested_at=now,
                            timeout=1) == {}
    report(redis_url)
    started = time.monotonic()
    problems = wait_for_refresh(config, store, ["payments"], force=False,
                                requested_at=store.time(), timeout=1)
    assert list(problems) == ["payments"]
    assert time.monotonic() - started >= 1  # waited for the deadline, not satisfied at once


def test_refresh_wait_through_the_cli_exits_1_while_the_token_is_rejected(
        redis_url: str, config_path: Path, refresher: Refresher, emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    args = ["--config", str(config_path), "refresh", "payments", "--wait", "1"]
    ok = CliRunner().invoke(cli, args)  # no worker: the message waits in the broker
    assert ok.exit_code == 0, ok.output
    report(redis_url)
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 1, out.output
    assert "payments: FAILED" in out.stderr
    assert emulator.issued_tokens[-1] not in out.output


# -- under the shipped ACL users ----------------------------------------------------------

@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    server = start_acl_redis(tmp_path_factory.mktemp("acl"))
    yield server
    server.stop()


def test_reader_and_observer_users_see_a_rejected_token_as_refresh_due(
        tmp_path: Path, acl_server: AclRedis, emulator: Emulator, secret_env: str) -> None:
    redis.Redis.from_url(acl_server.url_for("admin")).flushall()

    def config_as(user: str) -> Path:
        return write_config(tmp_path / f"{user}.toml", redis_url=acl_server.url_for(user),
                            token_url=emulator.url,
                            profiles={"payments": ["client_paymentrequest"]})

    refresher = Refresher.from_config(load_config(config_as("refresher")))
    try:
        refresher.sync_profiles()  # loads the read function where the ACL lets it
        refresher.refresh_profile("payments")
    finally:
        refresher.close()
    reader = TokenReader.from_config(str(config_as("reader")))
    try:
        token = reader.get("payments")
        assert reader.report_rejected("payments", token) is True
        assert reader.report_rejected("payments", token) is False  # once per token
    finally:
        reader.close()
    observer_path = config_as("observer")
    out = CliRunner().invoke(cli, ["--config", str(observer_path), "status", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["state"] == "refresh_due"
    config = load_config(observer_path)
    text = generate_latest(metrics.status_registry(config)).decode()
    assert 'token_worker_token_state{profile="payments",state="refresh_due"} 1.0' in text
