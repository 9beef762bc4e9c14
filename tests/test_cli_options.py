"""cli.py: every seconds option refuses nan, inf and negatives (exit 2); ``forget``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from token_worker.cli import cli
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import RedisServer, write_config

BAD = ["nan", "NaN", "inf", "-inf", "1e400", "-1", "-0.5", "soon"]
# every float option of the command line, with the arguments it needs around it
SECONDS_OPTIONS = [
    ("check", "--min-ttl"),
    ("refresh payments", "--wait"),
    ("refresh payments --local", "--wait"),
    ("emulator --port 0", "--expires-in"),
    ("demo", "--lifetime"),
    ("demo", "--duration"),
]


def run(config_path: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_path), *args], input=input)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(("command", "option"), SECONDS_OPTIONS)
def test_seconds_options_refuse_non_finite_and_negative_values(
        config_path: Path, emulator: Emulator, redis_server: RedisServer, rds: redis.Redis,
        command: str, option: str, value: str) -> None:
    out = run(config_path, *command.split(), f"{option}={value}")
    assert out.exit_code == 2, out.output
    assert option in out.stderr and "Traceback" not in out.output
    assert emulator.calls == 0
    assert rds.dbsize() == 0
    assert redis_server.client(db=1).dbsize() == 0  # nothing sent to the broker either


def test_seconds_options_still_take_finite_values(config_path: Path,
                                                  refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    refresher.refresh_profile("refunds")
    assert run(config_path, "check", "--min-ttl", "1.5").exit_code == 0
    assert run(config_path, "check", "--min-ttl", "0").exit_code == 0
    assert run(config_path, "refresh", "payments", "--local", "--wait", "2.5").exit_code == 0


# -- forget -------------------------------------------------------------------------------

def _keys(rds: redis.Redis, profile: str) -> dict[str, bool]:
    return {"token": bool(rds.exists(f"stitch:token:{profile}")),
            "status": bool(rds.exists(f"stitch:status:{profile}")),
            "schedule": rds.zscore("stitch:schedule", profile) is not None,
            "registry": bool(rds.hexists("stitch:profiles", profile))}


@pytest.fixture
def dropped(tmp_path: Path, redis_url: str, emulator: Emulator, refresher: Refresher) -> Path:
    """Both profiles in the fleet; a new config that no longer has ``refunds``."""
    refresher.sync_profiles()
    refresher.refresh_profile("payments")
    refresher.refresh_profile("refunds")
    return write_config(tmp_path / "new.toml", redis_url=redis_url, token_url=emulator.url,
                        profiles={"payments": ["client_paymentrequest"]})


def test_forget_removes_a_dropped_profile_from_the_fleet(dropped: Path,
                                                         rds: redis.Redis) -> None:
    assert all(_keys(rds, "refunds").values())
    out = run(dropped, "forget", "refunds", "--yes")
    assert out.exit_code == 0, out.output
    assert "refunds: forgotten" in out.stdout
    assert not any(_keys(rds, "refunds").values())
    assert all(_keys(rds, "payments").values())  # the others are left alone
    again = run(dropped, "forget", "refunds", "--yes")
    assert again.exit_code == 0 and "not registered" in again.stdout


def test_forget_asks_first_and_declining_keeps_everything(dropped: Path,
                                                          rds: redis.Redis) -> None:
    out = run(dropped, "forget", "refunds", input="n\n")
    assert out.exit_code == 1
    assert all(_keys(rds, "refunds").values())
    out = run(dropped, "forget", "refunds", input="y\n")
    assert out.exit_code == 0, out.output
    assert not any(_keys(rds, "refunds").values())


def test_forget_refuses_a_profile_this_config_still_has(dropped: Path, config_path: Path,
                                                        rds: redis.Redis) -> None:
    out = run(config_path, "forget", "refunds", "--yes")
    assert out.exit_code == 2
    assert "still configured" in out.stderr
    assert all(_keys(rds, "refunds").values())
    assert run(config_path, "forget").exit_code == 2  # PROFILE is required
