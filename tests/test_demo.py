"""demo.py, demo_breaks.py, demo_view.py: which Redis the demo takes, the ``--break``
list, the key reader on a real pseudo-terminal and the log lines (the whole demo runs in
tests/integration/test_demo.py)."""

from __future__ import annotations

import os
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner

from token_worker.cli import cli
from token_worker.demo import DEMO_PREFIX, redis_choice
from token_worker.demo_breaks import BREAKS, KEYS, parse_breaks
from token_worker.demo_readers import Tally
from token_worker.demo_view import Keys, Snapshot, log_line, summary
from token_worker.testing.emulator import Emulator

from .support import RedisServer, free_port, write_config


def test_break_lists_keep_their_order_and_refuse_unknown_names() -> None:
    assert parse_breaks("outage, redis,kill,401") == ["outage", "redis", "kill", "401"]
    assert parse_breaks("401,401") == ["401", "401"]
    for bad in ("", ",", "outage,nope", "OUTAGE", "kill;rm", "\x1b[2J"):
        with pytest.raises(ValueError, match="outage, redis, kill, 401"):
            parse_breaks(bad)
    assert sorted(KEYS) == ["4", "k", "o", "r"] and set(KEYS.values()) == set(BREAKS)


def test_an_unknown_break_is_a_usage_error_before_anything_starts(
        config_path: Path, emulator: Emulator) -> None:
    out = CliRunner().invoke(cli, ["--config", str(config_path), "demo", "--break", "outage,x"])
    assert out.exit_code == 2, out.output
    assert "--break" in out.output and "expected a comma-separated list" in out.output
    # a lifetime the emulator would refuse is the option's error, not a traceback
    out = CliRunner().invoke(cli, ["--config", str(config_path), "demo", "--lifetime", "1e6"])
    assert out.exit_code == 2 and "--lifetime" in out.output, out.output
    assert emulator.calls == 0


def test_the_demo_takes_a_configured_redis_only_when_it_answers(
        tmp_path: Path, redis_server: RedisServer, emulator: Emulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKEN_WORKER_REDIS_URL", raising=False)
    monkeypatch.delenv("TOKEN_WORKER_BROKER_URL", raising=False)
    live = write_config(tmp_path / "live.toml", redis_url=redis_server.url,
                        token_url=emulator.url)
    url, _, _, why = redis_choice(str(live))
    assert url == redis_server.url and why == f"prefix {DEMO_PREFIX!r}"
    # --private-redis wins over a Redis that answers
    assert redis_choice(str(live), private_redis=True)[0] is None
    dead = f"redis://:hunter2-{free_port()}@127.0.0.1:{free_port()}/0"
    url, _, _, why = redis_choice(str(write_config(tmp_path / "dead.toml", redis_url=dead,
                                                   token_url=emulator.url)))
    assert url is None and why.startswith("none answered at redis://") and "hunter2" not in why
    # no config at all: a private redis-server of its own (restartable), not the default URL
    monkeypatch.chdir(tmp_path)
    assert redis_choice(None) == (None, None, {}, "no Redis configured")
    monkeypatch.setenv("TOKEN_WORKER_REDIS_URL", redis_server.url)
    assert redis_choice(None)[0] == redis_server.url


def test_keys_come_one_at_a_time_from_a_terminal_and_its_mode_is_restored() -> None:
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        with os.fdopen(os.dup(slave), "r") as stream, Keys(stream) as keys:
            assert keys.enabled
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # no Enter needed
            assert keys.read(0.05) == ""
            os.write(master, b"o")
            assert keys.read(1.0) == "o"
            os.write(master, b"r4")
            assert keys.read(1.0) == "r4"
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_without_a_terminal_there_are_no_keys_and_no_waiting(tmp_path: Path) -> None:
    with (tmp_path / "in").open("w+") as stream, Keys(stream) as keys:
        assert not keys.enabled and keys.read(5.0) == ""


def test_log_lines_count_what_payments_saw_and_show_fingerprints_only() -> None:
    tally = Tally(payments=120, reads=130, misses=0, healed=7, rejected=1, errors=0)
    line = log_line(Snapshot(rows=None, tally=tally, rate=61.4, calls=9,
                             served="0a4a8d6c1f9e", active="401"))
    assert line.split(" ", 1)[1] == ("reads/s=61 payments=120 misses=0 401s=8 healed=7 "
                                     "errors=0 calls=9 token=0a4a8d6c1f9e | redis=down | "
                                     "break=401")
    assert tally.minus(Tally(payments=20, reads=30)) == Tally(100, 100, 0, 7, 1, 0)
    assert summary(tally, 2.0, 8, ["kill failed"]) == (
        "demo summary: 8 payment tasks made 120 payments (65 reads/s), 0 misses, 8 401s "
        "(7 retried once with the replacement, 1 returned as 401), 0 errors; breaks: "
        "kill failed")
