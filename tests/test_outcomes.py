"""Every outcome says which case it was: a reason in the result, the log and the status."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from token_worker.config import Config
from token_worker.outcomes import Outcome, Reason, RefreshResult
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator
from token_worker.testing.helpers import wait_until


def _recorded(refresher: Refresher) -> tuple[str | None, str | None]:
    rec = refresher.store.status("payments")
    return rec.last_outcome, rec.last_reason


def test_not_due_says_the_token_is_valid(refresher: Refresher, emulator: Emulator) -> None:
    assert refresher.refresh_profile("payments").reason is None  # refreshed: no reason
    result = refresher.refresh_profile("payments")
    assert (result.outcome, result.reason) == (Outcome.NOT_DUE, Reason.TOKEN_VALID)
    assert _recorded(refresher) == ("not_due", "token_valid")
    assert result.to_dict()["reason"] == "token_valid"


def test_a_held_lock_is_lock_held(refresher: Refresher, emulator: Emulator) -> None:
    refresher.store.acquire_lock("payments", 30)
    result = refresher.refresh_profile("payments")
    assert (result.outcome, result.reason) == (Outcome.DONE_ELSEWHERE, Reason.LOCK_HELD)
    assert _recorded(refresher) == ("done_elsewhere", "lock_held")
    assert emulator.calls == 0


def test_a_forced_refresh_answered_by_a_newer_token_is_satisfied(refresher: Refresher,
                                                                 emulator: Emulator) -> None:
    before = refresher.store.time()
    refresher.refresh_profile("payments", force=True)
    result = refresher.refresh_profile("payments", force=True, requested_at=before)
    assert (result.outcome, result.reason) == (Outcome.DONE_ELSEWHERE, Reason.SATISFIED)
    assert emulator.calls == 1


def test_a_forced_refresh_that_gives_up_is_lock_busy(refresher: Refresher) -> None:
    refresher.store.acquire_lock("payments", 30)
    result = refresher.refresh_profile("payments", force=True, wait_seconds=0.2)
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.LOCK_BUSY)


def test_a_scheduled_message_behind_a_backoff_is_stale(refresher: Refresher,
                                                       emulator: Emulator) -> None:
    now = refresher.store.time()
    assert refresher.store.record_failure("payments", now, "HTTP 503", "server_error", now + 60)
    result = refresher.refresh_profile("payments", scheduled=True)
    assert (result.outcome, result.reason) == (Outcome.DONE_ELSEWHERE, Reason.STALE_MESSAGE)
    assert emulator.calls == 0


def test_an_unscheduled_refresh_of_a_missing_token_runs_through_a_backoff(
        refresher: Refresher, emulator: Emulator) -> None:
    # the backoff holds the schedule (beat, the listener); an operator's refresh still runs
    now = refresher.store.time()
    refresher.store.record_failure("payments", now, "HTTP 503", "server_error", now + 60)
    result = refresher.refresh_profile("payments")
    assert (result.outcome, result.reason) == (Outcome.REFRESHED, None)
    assert emulator.calls == 1


def test_a_failed_request_is_request_failed_in_result_and_log(
        refresher: Refresher, emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_client", "count": 1}])
    with caplog.at_level(logging.INFO, logger="token_worker.refresh"):
        result = refresher.refresh_profile("payments")
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.REQUEST_FAILED)
    record = next(r for r in caplog.records if "outcome=failed" in r.getMessage())
    assert getattr(record, "reason", None) == "request_failed"


def _slow_refresh(config: Config, emulator: Emulator, rds: redis.Redis,
                  meanwhile: str) -> RefreshResult:
    """A's call is slow; meanwhile its lock is lost (``superseded``: another holder has
    it) or a newer token is published (``newer``)."""
    emulator.set_faults([{"mode": "latency", "seconds": 1.0, "count": 1}])
    a, b = Refresher.from_config(config), Refresher.from_config(config)
    try:
        results: list[RefreshResult] = []
        slow = threading.Thread(target=lambda: results.append(a.refresh_profile("payments")))
        slow.start()
        assert wait_until(lambda: rds.exists("stitch:lock:payments"), 2)
        time.sleep(0.2)
        rds.delete("stitch:lock:payments")  # as if A's lock had expired
        assert b.refresh_profile("payments").outcome is Outcome.REFRESHED
        if meanwhile == "superseded":
            rds.set("stitch:lock:payments", "another-holder", px=10_000)
        slow.join(5)
        return results[0]
    finally:
        a.close()
        b.close()


def test_a_late_answer_after_a_newer_publish_is_newer_token(
        config: Config, emulator: Emulator, rds: redis.Redis) -> None:
    result = _slow_refresh(config, emulator, rds, "newer")
    assert (result.outcome, result.reason) == (Outcome.DONE_ELSEWHERE, Reason.NEWER_TOKEN)


def test_a_late_answer_under_another_holders_lock_is_superseded(
        config: Config, emulator: Emulator, rds: redis.Redis) -> None:
    result = _slow_refresh(config, emulator, rds, "superseded")
    assert (result.outcome, result.reason) == (Outcome.DONE_ELSEWHERE, Reason.SUPERSEDED)
    assert rds.hget("stitch:status:payments", "last_reason") == "superseded"


def test_status_json_carries_outcome_and_reason(refresher: Refresher, config: Config) -> None:
    from token_worker.status import read_statuses

    refresher.refresh_profile("payments")
    refresher.refresh_profile("payments")
    row = next(r for r in read_statuses(config, refresher.store) if r.profile == "payments")
    data = row.to_dict()
    assert (data["last_outcome"], data["last_reason"]) == ("not_due", "token_valid")
    assert "lock_ttl" not in data and "now" not in data
