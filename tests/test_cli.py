"""cli.py: commands, output and exit codes (CliRunner, plus the real console script)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from token_worker.cli import cli
from token_worker.config import load_config
from token_worker.reader import TokenReader
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator
from token_worker.tokens import fingerprint

from .support import REPO, SECRET, RedisServer, env_with, free_port, python, write_config

TOKEN_WORKER = str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "token-worker")
if not Path(TOKEN_WORKER).exists():
    TOKEN_WORKER = str(REPO / ".venv" / "bin" / "token-worker")


def run(config_path: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_path), *args], input=input)


def tw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, in its own process."""
    return subprocess.run([TOKEN_WORKER, *args], capture_output=True, text=True, timeout=60,
                          env=env or env_with(), cwd=REPO)


def one_line_error(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ")
    assert "Traceback" not in text
    return lines[0]


# -- status -----------------------------------------------------------------------------

def test_status_table_has_one_aligned_row_per_profile(config_path: Path,
                                                      refresher: Refresher) -> None:
    result = refresher.refresh_profile("payments")
    out = run(config_path, "status")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["PROFILE", "STATE", "EXPIRES"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["payments", "refunds"]
    assert rows["payments"].split()[1] == "valid"
    assert result.fingerprint is not None and result.fingerprint in rows["payments"]
    assert rows["refunds"].split()[1] == "missing"
    # columns line up: every column starts at the header's offset
    for column in ("STATE", "FINGERPRINT"):
        offset = lines[0].index(column)
        for line in lines[1:]:
            assert line[offset - 2:offset] == "  " and line[offset] != " "


def test_status_json_has_the_contract_fields(config_path: Path, refresher: Refresher,
                                             emulator: Emulator) -> None:
    ok = refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope"}])
    refresher.refresh_profile("refunds")
    out = run(config_path, "status", "--json")
    assert out.exit_code == 0
    rows = {row["profile"]: row for row in json.loads(out.stdout)}
    for row in rows.values():
        assert {"profile", "scopes", "state", "expires_in", "fingerprint", "last_success_at",
                "last_error"} <= set(row)
    payments, refunds = rows["payments"], rows["refunds"]
    assert payments["scopes"] == ["client_paymentrequest"]
    assert payments["state"] == "valid"
    assert 3590 < payments["expires_in"] <= 3600
    assert payments["fingerprint"] == ok.fingerprint == fingerprint(emulator.issued_tokens[-1])
    assert payments["last_success_at"] > 0 and payments["last_error"] is None
    assert refunds["state"] == "missing" and refunds["expires_in"] is None
    assert refunds["fingerprint"] is None and refunds["last_success_at"] is None
    assert "invalid_scope" in refunds["last_error"]
    assert emulator.issued_tokens[-1] not in out.output


def test_status_reports_refresh_due_and_expired_states(config_path: Path, refresher: Refresher,
                                                       emulator: Emulator) -> None:
    emulator.set_expires_in(2.0)  # margin 600 > lifetime: due at half life, 1 s
    refresher.refresh_profile("payments")
    time.sleep(1.05)  # a second for status to run before the token expires, even loaded
    states = {r["profile"]: r["state"] for r in json.loads(run(config_path, "status",
                                                                "--json").stdout)}
    assert states["payments"] == "refresh_due"
    time.sleep(1.0)
    states = {r["profile"]: r["state"] for r in json.loads(run(config_path, "status",
                                                                "--json").stdout)}
    # the key died with the token; fetched once, so expired rather than missing
    assert states["payments"] == "expired"
    assert states["refunds"] == "missing"


def test_status_and_check_need_no_secret(config_path: Path, refresher: Refresher) -> None:
    for name in ("payments", "refunds"):
        refresher.refresh_profile(name)
    env = env_with()
    env.pop("STITCH_CLIENT_SECRET")
    status = tw("--config", str(config_path), "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert [r["state"] for r in json.loads(status.stdout)] == ["valid", "valid"]
    check = tw("--config", str(config_path), "check", env=env)
    assert check.returncode == 0, check.stderr


# -- check ------------------------------------------------------------------------------

def test_check_passes_when_every_profile_has_enough_life(config_path: Path,
                                                         refresher: Refresher) -> None:
    for name in ("payments", "refunds"):
        refresher.refresh_profile(name)
    out = run(config_path, "check", "--min-ttl", "600")
    assert out.exit_code == 0 and out.stdout.startswith("OK")


def test_check_fails_naming_profiles_short_of_min_ttl(config_path: Path,
                                                      refresher: Refresher) -> None:
    for name in ("payments", "refunds"):
        refresher.refresh_profile(name)
    out = run(config_path, "check", "--min-ttl", "4000")
    assert out.exit_code == 1
    assert "FAIL payments" in out.stderr and "FAIL refunds" in out.stderr


def test_check_fails_for_a_missing_token_with_its_last_error(config_path: Path,
                                                             refresher: Refresher,
                                                             emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope"}])
    refresher.refresh_profile("refunds")
    out = run(config_path, "check")
    assert out.exit_code == 1
    assert "FAIL refunds: no token" in out.stderr and "invalid_scope" in out.stderr
    assert "payments" not in out.stderr


def test_check_exit_codes_from_the_console_script(config_path: Path,
                                                  refresher: Refresher) -> None:
    failing = tw("--config", str(config_path), "check")
    assert failing.returncode == 1 and "FAIL" in failing.stderr
    for name in ("payments", "refunds"):
        refresher.refresh_profile(name)
    passing = tw("--config", str(config_path), "check", "--min-ttl", "60")
    assert passing.returncode == 0
    negative = tw("--config", str(config_path), "check", "--min-ttl", "-1")
    assert negative.returncode == 2


# -- config check -----------------------------------------------------------------------

def test_config_check_passes_a_good_config(config_path: Path) -> None:
    out = run(config_path, "config", "check")
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("OK") and "2 profiles" in out.stdout


def test_config_check_lists_every_problem_and_exits_2(tmp_path: Path, redis_url: str,
                                                      emulator: Emulator) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        profiles={"refunds": []}, extra="\n[bogus]\nx = 1\n")
    out = run(path, "config", "check")
    assert out.exit_code == 2
    assert "profiles.refunds.scopes: must not be empty" in out.stderr
    assert "bogus: unknown key" in out.stderr
    assert "Traceback" not in out.output


def test_config_check_reports_an_unreadable_secret(config_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET")
    out = run(config_path, "config", "check")
    assert out.exit_code == 2
    assert "clients.main.client_secret_env" in one_line_error(out.stderr)


def test_config_check_warns_about_unknown_scopes_but_passes(tmp_path: Path, redis_url: str,
                                                            emulator: Emulator,
                                                            secret_env: str) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        profiles={"future": ["client_brandnew"]})
    out = run(path, "config", "check")
    assert out.exit_code == 0
    assert "warning: profiles.future.scopes[0]: unknown scope" in out.stderr


def test_config_check_exit_codes_from_the_console_script(tmp_path: Path, config_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[redis\n")
    refused = tw("--config", str(bad), "config", "check")
    assert refused.returncode == 2
    assert "not valid TOML" in one_line_error(refused.stderr)
    assert tw("--config", str(config_path), "config", "check").returncode == 0


def test_missing_config_file_is_exit_2_in_one_line(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.toml"), "status"])
    assert out.exit_code == 2
    assert "config file not found" in one_line_error(out.stderr)


def test_config_path_from_environment(config_path: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_WORKER_CONFIG", str(config_path))
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, ["config", "check"])
    assert out.exit_code == 0 and str(config_path) in out.stdout


# -- refresh ----------------------------------------------------------------------------

def test_refresh_local_publishes_and_exits_0(config_path: Path, emulator: Emulator,
                                             redis_url: str) -> None:
    out = run(config_path, "refresh", "payments", "--local")
    assert out.exit_code == 0, out.output
    assert "payments: refreshed fingerprint=" in out.stdout
    reader = TokenReader(redis_url)
    assert reader.get_access_token("payments") == emulator.issued_tokens[-1]
    reader.close()


def test_refresh_local_leaves_a_valid_token_unless_forced(config_path: Path,
                                                          emulator: Emulator) -> None:
    assert run(config_path, "refresh", "payments", "--local").exit_code == 0
    again = run(config_path, "refresh", "payments", "--local")
    assert again.exit_code == 0 and "payments: not_due" in again.stdout
    assert emulator.calls == 1
    forced = run(config_path, "refresh", "payments", "--local", "--force")
    assert forced.exit_code == 0 and "payments: refreshed" in forced.stdout
    assert emulator.calls == 2


def test_refresh_local_failure_exits_1_with_the_error(config_path: Path,
                                                      emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_client"}])
    out = run(config_path, "refresh", "--all", "--local")
    assert out.exit_code == 1
    assert "payments: failed" in out.stdout and "invalid_client" in out.stdout
    assert "Traceback" not in out.output


def test_refresh_usage_errors_exit_2(config_path: Path, emulator: Emulator) -> None:
    neither = run(config_path, "refresh", "--local")
    assert neither.exit_code == 2
    assert "--all" in one_line_error(neither.stderr)
    unknown = run(config_path, "refresh", "nope", "--local")
    assert unknown.exit_code == 2
    assert "nope" in one_line_error(unknown.stderr)
    assert emulator.calls == 0


def test_refresh_local_without_the_secret_is_exit_2(config_path: Path, emulator: Emulator,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET")
    out = run(config_path, "refresh", "--all", "--local")
    assert out.exit_code == 2
    # the key is named, never its value (it could be a secret pasted in the wrong place)
    assert "clients.main.client_secret_env" in one_line_error(out.stderr)
    assert emulator.calls == 0


def test_refresh_exit_codes_from_the_console_script(config_path: Path,
                                                    emulator: Emulator) -> None:
    ok = tw("--config", str(config_path), "refresh", "--all", "--local")
    assert ok.returncode == 0, ok.stderr
    assert "payments: refreshed" in ok.stdout and "refunds: refreshed" in ok.stdout
    assert tw("--config", str(config_path), "refresh").returncode == 2
    assert tw("--config", str(config_path), "refresh", "ghost", "--local").returncode == 2
    emulator.set_faults([{"mode": "http_error", "status": 503}])
    failed = tw("--config", str(config_path), "refresh", "payments", "--local", "--force")
    assert failed.returncode == 1 and "server_error" in failed.stdout
    assert "Traceback" not in failed.stderr


def test_token_refreshed_by_the_cli_is_read_by_another_process(config_path: Path,
                                                               emulator: Emulator) -> None:
    assert tw("--config", str(config_path), "refresh", "--all", "--local").returncode == 0
    env = env_with()
    env.pop("STITCH_CLIENT_SECRET")
    code = ("import sys; from token_worker import TokenReader; "
            "r = TokenReader.from_config(sys.argv[1]); print(r.get('refunds').scope)")
    read = subprocess.run([python(), "-c", code, str(config_path)], capture_output=True,
                          text=True, env=env, timeout=30)
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "client_refund"


# -- purge ------------------------------------------------------------------------------

def test_purge_yes_deletes_and_makes_due(config_path: Path, refresher: Refresher,
                                         rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    out = run(config_path, "purge", "payments", "--yes")
    assert out.exit_code == 0 and "token deleted" in out.stdout
    assert rds.exists("stitch:token:payments") == 0
    assert "payments" in refresher.due_profiles()


def test_purge_asks_first_and_declining_keeps_the_token(config_path: Path,
                                                        refresher: Refresher,
                                                        rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    out = run(config_path, "purge", "payments", input="n\n")
    assert out.exit_code == 1
    assert rds.exists("stitch:token:payments") == 1


def test_purge_unknown_profile_is_exit_2(config_path: Path) -> None:
    out = run(config_path, "purge", "ghost", "--yes")
    assert out.exit_code == 2 and "ghost" in one_line_error(out.stderr)


# -- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["status"], ["check"], ["purge", "payments", "--yes"]])
def test_unreachable_redis_is_exit_1_in_one_line(tmp_path: Path, emulator: Emulator,
                                                 command: list[str]) -> None:
    port = free_port()
    path = write_config(tmp_path / "c.toml", redis_url=f"redis://:pw-x9@127.0.0.1:{port}/0",
                        token_url=emulator.url)
    out = run(path, *command)
    assert out.exit_code == 1
    line = one_line_error(out.stderr)
    assert "Redis unreachable" in line and str(port) in line and "pw-x9" not in line


def test_unknown_command_is_exit_2(config_path: Path) -> None:
    assert run(config_path, "frobnicate").exit_code == 2


# -- the leak grep ----------------------------------------------------------------------

def test_secret_and_tokens_never_leak_to_redis_cli_output_or_logs(
        config_path: Path, config: object, emulator: Emulator, redis_server: RedisServer,
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []

    # library paths, logging at DEBUG into caplog
    refresher = Refresher.from_config(load_config(config_path))
    for name in ("payments", "refunds"):
        refresher.refresh_profile(name)
    emulator.set_faults([{"mode": "echo", "count": 3}])  # a server echoing the secret back
    refresher.refresh_profile("payments", force=True)
    emulator.set_faults([{"mode": "malformed_json", "count": 1}])
    refresher.refresh_profile("refunds", force=True)
    reader = TokenReader(redis_url)
    token = reader.get("payments")
    reader.report_rejected("payments", token)
    refresher.refresh_profile("payments")
    reader.get("payments", wait=2)
    reader.close()
    refresher.close()

    # the CLI in-process, at DEBUG (its log handler writes to the captured stderr)
    for args in (["refresh", "--all", "--local", "--force"], ["status"], ["status", "--json"],
                 ["check", "--min-ttl", "10"], ["config", "check"]):
        result = CliRunner().invoke(cli, ["--config", str(config_path), "--log-level", "DEBUG",
                                          *args])
        outputs += [result.stdout, result.stderr]
    emulator.set_faults([{"mode": "echo"}])
    result = run(config_path, "--log-level", "DEBUG", "refresh", "payments", "--local", "--force")
    outputs += [result.stdout, result.stderr]
    emulator.set_faults([])

    # and the console script in its own process
    for args in (["refresh", "--all", "--local", "--force"], ["status", "--json"]):
        proc = tw("--config", str(config_path), "--log-level", "DEBUG", *args)
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]

    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    cli_output = "\n".join(outputs)
    dump = redis_server.dump_all()
    assert "refresh profile=payments outcome=refreshed" in logs  # the logs were captured
    assert "outcome=refreshed" in cli_output
    assert len(emulator.issued_tokens) >= 8

    assert SECRET not in dump
    assert SECRET not in cli_output
    assert SECRET not in logs
    for issued in emulator.issued_tokens:
        assert issued not in cli_output
        assert issued not in logs
