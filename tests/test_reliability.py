"""Failure handling, one process at a time: real Redis, the real emulator, no mocks.

The fleet-level scenarios (workers, beat, SIGKILL, Redis restarts) are in
``tests/integration/test_reliability.py``; these pin the decisions they rely on.
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from freezegun import freeze_time

from token_worker import TokenReader, TokenUnavailable
from token_worker.backoff import BACKOFF_MAX_WITHOUT_TOKEN, RETRY_SLEEP_CAP, next_attempt_delay
from token_worker.config import load_config
from token_worker.refresh import Outcome, Refresher
from token_worker.store import TokenStore
from token_worker.testing.emulator import Emulator
from token_worker.tokens import Token

from .support import REPO, env_with, python, raw_status, write_config

# answers that must never be published; all but html and malformed_json carry a real token
MALFORMED = ["html", "malformed_json", "missing_token", "bad_expires", "wrong_token_type",
             "scope_not_granted"]


def next_attempt_in(refresher: Refresher, profile: str = "payments") -> float:
    return float(raw_status(refresher.store, profile)["next_attempt_at"]) - refresher.store.time()


# -- retry and backoff ------------------------------------------------------------------

def test_backoff_steps_keep_an_outage_to_a_few_calls() -> None:
    # each step waits at least half its ceiling: after failures 1, 2, 3 at least 1, 2 and
    # 4 s, so ten seconds of failures hold the first attempt and at most three more
    for seed in range(200):
        rng = random.Random(seed)
        steps = [next_attempt_delay(n, True, None, 1, rng=rng) for n in (1, 2, 3)]
        assert [s >= 2 ** (n - 1) for n, s in enumerate(steps, 1)] == [True] * 3
        assert sum(steps) <= 14
    spread = {round(next_attempt_delay(3, True, 3600, 1, rng=random.Random(s)), 1)
              for s in range(50)}
    assert len(spread) > 10  # still jittered: profiles do not move in lockstep


def test_revoked_secret_logs_error_once_per_change_and_retries_slowly(
        refresher: Refresher, emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="token_worker.refresh")

    def attempt() -> tuple[str, int]:
        caplog.clear()
        result = refresher.refresh_profile("payments")
        failed = [r for r in caplog.records if "outcome=failed" in r.getMessage()]
        assert result.outcome is Outcome.FAILED and len(failed) == 1
        return f"{result.error_code} {failed[0].levelname}", result.calls

    monkeypatch.setenv("STITCH_CLIENT_SECRET", "revoked-" + "x" * 20)
    assert attempt() == ("invalid_client ERROR", 1)  # not retried within the attempt
    assert BACKOFF_MAX_WITHOUT_TOKEN - 2 <= next_attempt_in(refresher) \
        <= BACKOFF_MAX_WITHOUT_TOKEN
    assert "payments" not in refresher.due_profiles()
    assert attempt() == ("invalid_client WARNING", 1)  # the same error again
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope"}])
    assert attempt() == ("invalid_scope ERROR", 1)  # a change
    assert attempt() == ("invalid_scope WARNING", 1)
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_client"}])
    assert attempt() == ("invalid_client ERROR", 1)
    assert raw_status(refresher.store)["consecutive_failures"] == "5"
    assert emulator.calls == 5


def test_retry_after_is_honoured_up_to_the_cap(tmp_path: Path, redis_url: str,
                                               emulator: Emulator, secret_env: str) -> None:
    path = write_config(tmp_path / "tw.toml", redis_url=redis_url, token_url=emulator.url,
                        interval=1)
    refresher = Refresher.from_config(load_config(path))
    # a short Retry-After is waited out within the attempt
    emulator.set_faults([{"mode": "rate_limit", "retry_after": 1, "count": 1}])
    started = time.monotonic()
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.REFRESHED and result.calls == 2
    assert time.monotonic() - started >= 1
    # a longer one moves the next attempt: well past the first backoff step (1-2 s)...
    emulator.set_faults([{"mode": "rate_limit", "retry_after": 30}])
    result = refresher.refresh_profile("payments", force=True)
    assert result.calls == 1 and 29 <= next_attempt_in(refresher) <= 30
    # ...but never past the cap: with 20 s of life left, a quarter of it
    emulator.set_faults([])
    emulator.set_expires_in(20)
    refresher.store.purge("payments")
    refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "rate_limit", "retry_after": 3600}])
    refresher.refresh_profile("payments", force=True)
    assert 3.5 <= next_attempt_in(refresher) <= 5.0
    assert RETRY_SLEEP_CAP < 30  # so both were left to the schedule, not slept through
    refresher.close()


def test_a_refresh_queued_behind_a_failed_attempt_leaves_the_retry_to_the_backoff(
        refresher: Refresher, emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "http_error", "status": 503}])
    assert refresher.refresh_profile("payments", scheduled=True).outcome is Outcome.FAILED
    calls = emulator.calls
    # a second fan-out of the same tick, run after the failure was recorded
    late = refresher.refresh_profile("payments", scheduled=True)
    assert late.outcome is Outcome.DONE_ELSEWHERE and emulator.calls == calls
    # an operator's refresh is not a schedule's: it tries now
    assert refresher.refresh_profile("payments").calls == 1
    assert emulator.calls == calls + 1


# -- serve through outages --------------------------------------------------------------

@pytest.mark.parametrize("mode", MALFORMED)
def test_malformed_answer_is_never_published(refresher: Refresher, emulator: Emulator,
                                             rds: redis.Redis, mode: str) -> None:
    good = refresher.refresh_profile("payments")
    issued = len(emulator.issued_tokens)
    events = rds.pubsub(ignore_subscribe_messages=True)
    events.subscribe("stitch:events")
    emulator.set_faults([{"mode": mode}])
    result = refresher.refresh_profile("payments", force=True)
    assert result.outcome is Outcome.FAILED and result.error_code == "malformed_response"
    assert result.calls == 1  # permanent until Stitch changes: not retried at once
    current = refresher.store.get_token("payments")
    assert current is not None and current.fingerprint == good.fingerprint
    assert events.get_message(timeout=0.2) is None  # nothing announced
    events.close()
    stored = json.dumps(rds.hgetall("stitch:status:payments")) + str(rds.get(
        "stitch:token:payments"))
    assert not [t for t in emulator.issued_tokens[issued:] if t in stored]


# -- clock skew -------------------------------------------------------------------------

def _publish(store: TokenStore, seconds: float, name: str = "tok-skew") -> Token:
    now = store.time()
    token = Token(access_token=name, token_type="Bearer", scopes=("a",), issued_at=now,
                  expires_at=now + seconds, refresh_at=now + seconds / 2)
    assert store.publish("payments", token) == 1
    return token


def test_a_token_read_under_a_fake_clock_is_not_served_past_its_expiry(
        redis_url: str) -> None:
    store = TokenStore(redis.Redis.from_url(redis_url, decode_responses=True))
    _publish(store, 1.5)
    reader = TokenReader(redis_url, min_ttl=0.2)
    with freeze_time(datetime.now(UTC) - timedelta(minutes=5), tick=True):
        # cached, with deadlines on freezegun's monotonic clock (its fake Unix time)
        assert reader.get("payments").access_token == "tok-skew"
        assert reader.get("payments").access_token == "tok-skew"
    # back on the real monotonic clock, far "before" the cached deadlines
    assert 0 < reader.get("payments").expires_in <= 1.5
    time.sleep(1.6)
    with pytest.raises(TokenUnavailable):
        reader.get("payments")
    reader.close()


def test_expired_message_ages_come_from_the_fleet_clock(refresher: Refresher,
                                                        emulator: Emulator,
                                                        redis_url: str) -> None:
    emulator.set_expires_in(1)
    refresher.refresh_profile("payments")
    time.sleep(1.1)
    reader = TokenReader(redis_url)
    for shift in (-300, 300):
        with freeze_time(datetime.now(UTC) + timedelta(seconds=shift), tick=True):
            with pytest.raises(TokenUnavailable) as info:
                reader.get("payments")
        age = re.search(r"last successful refresh (-?\d+)s ago", str(info.value))
        assert info.value.reason == "expired" and age is not None
        assert 0 <= int(age[1]) <= 5, str(info.value)
    reader.close()


# -- Redis faults -----------------------------------------------------------------------

def test_worker_celery_settings_reconnect_to_the_broker_forever(config_path: Path) -> None:
    out = subprocess.run(
        [python(), "-c", "import celeryconfig as c; print(c.broker_connection_retry, "
                         "c.broker_connection_retry_on_startup, "
                         "c.broker_connection_max_retries)"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env=env_with(TOKEN_WORKER_CONFIG=str(config_path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "None"]
