"""refresh.py: when and how a profile is refreshed, against real Redis and the emulator."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis

from token_worker.backoff import BACKOFF_MAX_SECONDS, BACKOFF_MAX_WITHOUT_TOKEN
from token_worker.config import Config, load_config
from token_worker.exceptions import ConfigError, StoreUnavailable
from token_worker.reader import TokenReader
from token_worker.refresh import Outcome, Refresher, RefreshResult
from token_worker.store import TokenStore
from token_worker.testing.emulator import Emulator
from token_worker.tokens import Token

from .support import REPO, env_with, free_port, make_token, python, wait_until, write_config


def stored(rds: redis.Redis, profile: str = "payments") -> dict | None:
    raw = rds.get(f"stitch:token:{profile}")
    return None if raw is None else json.loads(raw)


def status(rds: redis.Redis, profile: str = "payments") -> dict[str, str]:
    return rds.hgetall(f"stitch:status:{profile}")


# -- due or not -------------------------------------------------------------------------

def test_missing_token_is_due_and_one_call_publishes_it(refresher: Refresher,
                                                        emulator: Emulator,
                                                        rds: redis.Redis) -> None:
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.REFRESHED and result.calls == 1
    assert emulator.calls == 1
    data = stored(rds)
    assert data is not None and data["access_token"] == emulator.issued_tokens[-1]
    assert data["scope"] == "client_paymentrequest"
    assert result.fingerprint == Token.from_dict(data).fingerprint
    assert 3590_000 < rds.pttl("stitch:token:payments") <= 3600_000


def test_valid_token_is_not_due_and_makes_no_call(refresher: Refresher,
                                                  emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.NOT_DUE
    assert emulator.calls == 1


def test_token_within_its_margin_is_refreshed(refresher: Refresher, emulator: Emulator,
                                              rds: redis.Redis) -> None:
    emulator.set_expires_in(1.0)  # margin 600 > lifetime: due at half life, 0.5s
    first = refresher.refresh_profile("payments")
    assert refresher.refresh_profile("payments").outcome is Outcome.NOT_DUE
    time.sleep(0.55)
    second = refresher.refresh_profile("payments")
    assert second.outcome is Outcome.REFRESHED
    assert second.fingerprint != first.fingerprint
    assert emulator.calls == 2


def test_per_profile_margin_overrides_the_default(tmp_path: Path, redis_url: str,
                                                  emulator: Emulator, secret_env: str) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        margin=10,
                        extra='\n[profiles.refunds]\nscopes = ["client_refund"]\n'
                              'margin_seconds = 3599\n')
    refresher = Refresher.from_config(load_config(path))
    try:
        refresher.refresh_profile("payments")
        refresher.refresh_profile("refunds")
        token = refresher.store.get_token("refunds")
        assert token is not None
        # margin 3599 of 3600: a lead of one second; a first token takes its profile's
        # phase somewhere within the lead
        assert 0 <= token.refresh_at - token.issued_at <= 1.0
        payments = refresher.store.get_token("payments")
        # margin 10: a lead of 3590 s
        assert payments is not None and 0 <= payments.refresh_at - payments.issued_at < 3590
        # the rotation after it keeps to the margin itself: due after one second, minus
        # at most 2% jitter
        time.sleep(max(0.0, token.refresh_at - refresher.store.time()) + 0.05)
        assert refresher.refresh_profile("refunds").outcome is Outcome.REFRESHED
        rotated = refresher.store.get_token("refunds")
        assert rotated is not None
        assert 0.97 <= rotated.refresh_at - rotated.issued_at <= 1.0
    finally:
        refresher.close()


def test_issued_at_is_when_the_request_was_sent(refresher: Refresher, emulator: Emulator,
                                                rds: redis.Redis) -> None:
    emulator.set_latency(0.4)
    before = refresher.store.time()
    refresher.refresh_profile("payments")
    after = refresher.store.time()
    data = stored(rds)
    assert data is not None
    assert before <= data["issued_at"] <= after - 0.35  # not when the answer came
    assert data["expires_at"] == pytest.approx(data["issued_at"] + 3600)


def test_status_record_has_the_contract_fields(refresher: Refresher, rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    record = status(rds)
    assert {"last_success_at", "last_attempt_at", "last_error", "consecutive_failures"} <= \
        set(record)
    assert float(record["last_attempt_at"]) <= float(record["last_success_at"]) + 1


def test_every_outcome_is_recorded_in_status(refresher: Refresher, emulator: Emulator,
                                             rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    assert status(rds)["last_outcome"] == "refreshed"
    refresher.refresh_profile("payments")
    assert status(rds)["last_outcome"] == "not_due"
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_grant", "count": 1}])
    refresher.refresh_profile("payments", force=True)
    assert status(rds)["last_outcome"] == "failed"
    requested_at = refresher.store.time()
    refresher.refresh_profile("payments", force=True)
    refresher.refresh_profile("payments", force=True, requested_at=requested_at)
    assert status(rds)["last_outcome"] == "done_elsewhere"


def test_unknown_profile_is_a_config_error(refresher: Refresher, emulator: Emulator) -> None:
    with pytest.raises(ConfigError, match="nope"):
        refresher.refresh_profile("nope")
    assert emulator.calls == 0


def test_due_profiles_comes_from_the_shared_schedule(refresher: Refresher) -> None:
    assert sorted(refresher.due_profiles()) == ["payments", "refunds"]
    for name in ("payments", "refunds"):
        refresher.refresh_profile(name)
    assert refresher.due_profiles() == []
    refresher.store.purge("refunds")
    assert refresher.due_profiles() == ["refunds"]


def test_profiles_share_nothing_even_with_the_same_scopes(tmp_path: Path, redis_url: str,
                                                          emulator: Emulator,
                                                          secret_env: str) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=redis_url, token_url=emulator.url,
                        profiles={"a": ["client_refund"], "b": ["client_refund"]})
    refresher = Refresher.from_config(load_config(path))
    try:
        a = refresher.refresh_profile("a")
        b = refresher.refresh_profile("b")
        assert a.outcome is b.outcome is Outcome.REFRESHED
        assert a.fingerprint != b.fingerprint
        assert emulator.calls == 2
    finally:
        refresher.close()


# -- forced refresh ---------------------------------------------------------------------

def test_forced_refresh_replaces_a_valid_token(refresher: Refresher, emulator: Emulator) -> None:
    first = refresher.refresh_profile("payments")
    forced = refresher.refresh_profile("payments", force=True)
    assert forced.outcome is Outcome.REFRESHED
    assert forced.fingerprint != first.fingerprint
    assert emulator.calls == 2


def test_forced_refresh_is_satisfied_by_a_token_issued_after_the_request(
        refresher: Refresher, emulator: Emulator) -> None:
    requested_at = refresher.store.time()
    first = refresher.refresh_profile("payments")  # issued after requested_at
    again = refresher.refresh_profile("payments", force=True, requested_at=requested_at)
    assert again.outcome is Outcome.DONE_ELSEWHERE
    assert again.fingerprint == first.fingerprint
    assert emulator.calls == 1


def test_two_threads_forcing_one_profile_make_one_call(refresher: Refresher,
                                                       config: Config,
                                                       emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    emulator.reset()
    emulator.set_latency(0.3)
    other = Refresher.from_config(config)
    requested_at = refresher.store.time()
    barrier = threading.Barrier(2)
    results: list[RefreshResult] = []

    def force(r: Refresher) -> None:
        barrier.wait()
        results.append(r.refresh_profile("payments", force=True, requested_at=requested_at))

    threads = [threading.Thread(target=force, args=(r,)) for r in (refresher, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    other.close()
    assert emulator.calls == 1
    assert sorted(r.outcome for r in results) == [Outcome.DONE_ELSEWHERE, Outcome.REFRESHED]
    assert results[0].fingerprint == results[1].fingerprint  # both got the same new token


FORCE_SCRIPT = textwrap.dedent("""
    import json, sys
    from token_worker.config import load_config
    from token_worker.refresh import Refresher
    r = Refresher.from_config(load_config(sys.argv[1]))
    r.store.time()  # connected
    print("ready", flush=True)
    sys.stdin.readline()
    res = r.refresh_profile("payments", force=True, requested_at=float(sys.argv[2]))
    print(json.dumps(res.to_dict()), flush=True)
""")


def test_two_processes_forcing_one_profile_make_one_call(refresher: Refresher,
                                                         config_path: Path,
                                                         emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    emulator.reset()
    emulator.set_latency(0.4)
    requested_at = refresher.store.time()
    procs = [subprocess.Popen([python(), "-c", FORCE_SCRIPT, str(config_path), repr(requested_at)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env=env_with())
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # both released at the same moment
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=20)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert emulator.calls == 1
    assert sorted(r["outcome"] for r in results) == ["done_elsewhere", "refreshed"]
    assert results[0]["fingerprint"] == results[1]["fingerprint"]


def test_concurrent_unforced_refreshes_of_a_due_profile_make_one_call(
        refresher: Refresher, config: Config, emulator: Emulator) -> None:
    emulator.set_latency(0.3)
    others = [Refresher.from_config(config) for _ in range(3)]
    barrier = threading.Barrier(4)
    results: list[RefreshResult] = []

    def run(r: Refresher) -> None:
        barrier.wait()
        results.append(r.refresh_profile("payments"))

    threads = [threading.Thread(target=run, args=(r,)) for r in [refresher, *others]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for r in others:
        r.close()
    assert emulator.calls == 1
    assert [r.outcome for r in results].count(Outcome.REFRESHED) == 1


def test_forced_refresh_waits_out_a_crashed_holders_lock(refresher: Refresher,
                                                         emulator: Emulator) -> None:
    assert refresher.store.acquire_lock("payments", 0.5) is not None  # holder then dies
    started = time.monotonic()
    result = refresher.refresh_profile("payments", force=True)
    assert result.outcome is Outcome.REFRESHED and emulator.calls == 1
    assert 0.4 <= time.monotonic() - started < 3


def test_forced_refresh_gives_up_at_its_deadline_when_the_lock_stays_held(
        refresher: Refresher, emulator: Emulator) -> None:
    refresher.store.acquire_lock("payments", 30)
    result = refresher.refresh_profile("payments", force=True, wait_seconds=0.3)
    assert result.outcome is Outcome.FAILED and result.error_code == "lock_busy"
    assert emulator.calls == 0


def test_unforced_refresh_leaves_a_held_lock_to_its_holder(refresher: Refresher,
                                                           emulator: Emulator) -> None:
    refresher.store.acquire_lock("payments", 30)
    assert refresher.refresh_profile("payments").outcome is Outcome.DONE_ELSEWHERE
    assert emulator.calls == 0


def test_lock_is_released_after_a_refresh(refresher: Refresher, rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    emulator_failure = refresher.refresh_profile("payments", force=True)
    assert emulator_failure.outcome is Outcome.REFRESHED
    assert rds.exists("stitch:lock:payments") == 0


def test_forced_replacement_wins_even_when_it_expires_sooner(refresher: Refresher,
                                                            emulator: Emulator) -> None:
    # item 6 of the trust review: the never-shorter rule threw this token away and kept
    # serving the one the operator wanted gone, spending a call every tick
    refresher.refresh_profile("payments")  # expires in 3600s
    old = refresher.store.get_token("payments")
    emulator.set_expires_in(60)
    result = refresher.refresh_profile("payments", force=True)
    assert result.outcome is Outcome.REFRESHED
    got = refresher.store.get_token("payments")
    assert got is not None and got.fingerprint != old.fingerprint  # type: ignore[union-attr]
    assert got.access_token == emulator.issued_tokens[-1] and got.expires_in <= 60
    assert refresher.refresh_profile("payments").outcome is Outcome.NOT_DUE
    assert emulator.calls == 2


def test_slow_refresher_cannot_replace_a_newer_token(config: Config, emulator: Emulator,
                                                     rds: redis.Redis) -> None:
    # A's lock lapses during a slow call (it was paused); B refreshes meanwhile. A's late
    # answer, issued before B's, is fenced out and B's token stays
    emulator.set_faults([{"mode": "latency", "seconds": 1.5, "count": 1}])
    a, b = Refresher.from_config(config), Refresher.from_config(config)
    try:
        results: list[RefreshResult] = []
        slow = threading.Thread(target=lambda: results.append(a.refresh_profile("payments")))
        slow.start()
        assert wait_until(lambda: rds.exists("stitch:lock:payments"), 2)
        time.sleep(0.2)
        rds.delete("stitch:lock:payments")  # as if A's lock had expired
        assert b.refresh_profile("payments").outcome is Outcome.REFRESHED
        b_token = b.store.get_token("payments")
        slow.join(5)
        assert results[0].outcome is Outcome.DONE_ELSEWHERE
        assert a.store.get_token("payments") == b_token
    finally:
        a.close()
        b.close()


def test_server_that_returns_its_cached_token_is_backed_off(refresher: Refresher,
                                                            emulator: Emulator,
                                                            rds: redis.Redis) -> None:
    # some OAuth servers answer a new request with the token they already issued
    emulator.set_expires_in(100)
    refresher.refresh_profile("payments")
    first = refresher.store.get_token("payments")
    emulator.set_faults([{"mode": "same_token", "count": 5}])
    rds.zadd("stitch:schedule", {"payments": 0})
    result = refresher.refresh_profile("payments", force=True)
    assert result.outcome is Outcome.FAILED and result.error_code == "token_unchanged"
    record = status(rds)
    assert record["last_error_code"] == "token_unchanged"
    assert "no newer token" in record["last_error"]
    next_at = float(record["next_attempt_at"])
    assert next_at > refresher.store.time() + 0.5  # backed off, not every tick
    assert "payments" not in refresher.due_profiles()
    assert refresher.store.get_token("payments") == first  # still served


# -- failures ---------------------------------------------------------------------------

def test_unreadable_longer_lived_value_is_replaced(refresher: Refresher, emulator: Emulator,
                                                  rds: redis.Redis) -> None:
    # garbage (or a value under a key nobody has) that outlives the new token must not win
    rds.set("stitch:token:payments", "enc:v1:gone:AAAA", px=7200_000)
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.REFRESHED
    data = stored(rds)
    assert data is not None and data["access_token"] == emulator.issued_tokens[-1]


def test_failure_is_recorded_and_success_clears_it(refresher: Refresher, emulator: Emulator,
                                                   rds: redis.Redis) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope", "count": 2}])
    first = refresher.refresh_profile("payments")
    assert first.outcome is Outcome.FAILED and first.error_code == "invalid_scope"
    record = status(rds)
    assert record["consecutive_failures"] == "1"
    assert "invalid_scope" in record["last_error"]
    assert record["last_error_code"] == "invalid_scope"
    assert float(record["last_attempt_at"]) > 0
    refresher.refresh_profile("payments")
    assert status(rds)["consecutive_failures"] == "2"
    ok = refresher.refresh_profile("payments")
    assert ok.outcome is Outcome.REFRESHED
    record = status(rds)
    assert record["consecutive_failures"] == "0"
    assert record["last_error"] == ""
    assert float(record["last_success_at"]) == pytest.approx(refresher.store.time(), abs=5)
    assert record["fingerprint"] == ok.fingerprint


def test_outage_keeps_serving_valid_token(refresher: Refresher, emulator: Emulator,
                                          redis_url: str) -> None:
    good = refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "http_error", "status": 503}])
    failed = refresher.refresh_profile("payments", force=True)
    assert failed.outcome is Outcome.FAILED and failed.error_code == "server_error"
    reader = TokenReader(redis_url, cache=False)
    assert reader.get("payments").fingerprint == good.fingerprint
    reader.close()


def test_malformed_answer_is_never_published(refresher: Refresher, emulator: Emulator,
                                             rds: redis.Redis) -> None:
    emulator.set_faults([{"mode": "wrong_token_type"}])
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.FAILED and result.error_code == "malformed_response"
    assert result.calls == 1  # not retryable: no retry within the attempt
    assert rds.exists("stitch:token:payments") == 0
    assert status(rds)["last_error_code"] == "malformed_response"


def test_malformed_answer_leaves_the_current_token_in_place(refresher: Refresher,
                                                            emulator: Emulator) -> None:
    good = refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "scope_not_granted"}])
    assert refresher.refresh_profile("payments", force=True).outcome is Outcome.FAILED
    current = refresher.store.get_token("payments")
    assert current is not None and current.fingerprint == good.fingerprint


def test_healthy_profile_retries_transient_errors_within_one_attempt(
        refresher: Refresher, emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "http_error", "status": 503, "count": 1}])
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.REFRESHED and result.calls == 2
    assert emulator.calls == 2


def test_a_refresh_that_succeeds_soon_after_a_failed_attempt_keeps_its_rotation(
        refresher: Refresher, emulator: Emulator) -> None:
    """Only a late (or first, forced, rejected) token takes its profile's slot: a slot
    early in the lead after every brief failure cost the first profile an extra call per
    failure (the soak counted 28 tokens where 26.7 were due)."""
    store = refresher.store
    store.publish("payments", make_token(store, 100.0, refresh_in=0.0))  # due now, not late
    emulator.set_expires_in(100.0)
    emulator.set_faults([{"mode": "http_error", "status": 503}])
    assert refresher.refresh_profile("payments").outcome is Outcome.FAILED
    emulator.set_faults([])
    assert refresher.refresh_profile("payments").outcome is Outcome.REFRESHED
    token = store.get_token("payments")
    assert token is not None
    lead = (token.expires_at - token.issued_at) / 2  # margin 600 > lifetime: half life
    # its rotation (the lead, less at most the 2% jitter), not its slot (a tenth of it)
    assert token.refresh_at - token.issued_at >= 0.97 * lead


def test_healthy_profile_gives_up_after_its_retries(refresher: Refresher, config: Config,
                                                    emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "http_error", "status": 502}])
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.FAILED
    assert result.calls == emulator.calls == config.refresh.retries + 1


def test_failing_profile_makes_one_call_per_attempt(refresher: Refresher,
                                                    emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "http_error", "status": 503, "count": 1}])
    refresher.refresh_profile("payments", force=True)  # one retry spent here, then success
    emulator.reset()
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_grant", "count": 1}])
    assert refresher.refresh_profile("payments", force=True).outcome is Outcome.FAILED
    emulator.reset()
    emulator.set_faults([{"mode": "http_error", "status": 503, "count": 1}])
    result = refresher.refresh_profile("payments", force=True)
    # already failing: the shared schedule decides, not an in-attempt retry
    assert result.outcome is Outcome.FAILED and result.calls == 1
    assert emulator.calls == 1


def test_non_retryable_errors_are_not_retried(refresher: Refresher, emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_client"}])
    assert refresher.refresh_profile("payments").calls == 1
    assert emulator.calls == 1


def test_backoff_without_a_token_is_written_to_the_schedule(refresher: Refresher,
                                                            emulator: Emulator,
                                                            rds: redis.Redis) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope"}])
    now = refresher.store.time()
    refresher.refresh_profile("payments")
    next_at = float(status(rds)["next_attempt_at"])
    assert next_at == pytest.approx(now + BACKOFF_MAX_WITHOUT_TOKEN, abs=2)
    assert rds.zscore("stitch:schedule", "payments") == pytest.approx(next_at)
    assert "payments" not in refresher.due_profiles()


def test_backoff_with_a_valid_token_is_capped_by_time_left(refresher: Refresher,
                                                           emulator: Emulator,
                                                           rds: redis.Redis) -> None:
    refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_grant"}])
    now = refresher.store.time()
    refresher.refresh_profile("payments", force=True)
    # 3600s left: a permanent error waits the maximum, well before expiry
    assert float(status(rds)["next_attempt_at"]) == \
        pytest.approx(now + BACKOFF_MAX_SECONDS, abs=2)


def test_retry_after_is_honoured_across_attempts(refresher: Refresher, emulator: Emulator,
                                                 rds: redis.Redis) -> None:
    emulator.set_faults([{"mode": "rate_limit", "retry_after": 7}])
    now = refresher.store.time()
    result = refresher.refresh_profile("payments")
    # longer than an in-attempt pause: no retry now, the schedule waits instead
    assert result.outcome is Outcome.FAILED and result.calls == 1
    assert float(status(rds)["next_attempt_at"]) >= now + 7


def test_missing_secret_fails_without_a_call(refresher: Refresher, emulator: Emulator,
                                             monkeypatch: pytest.MonkeyPatch,
                                             rds: redis.Redis) -> None:
    monkeypatch.delenv("STITCH_CLIENT_SECRET")
    result = refresher.refresh_profile("payments")
    assert result.outcome is Outcome.FAILED and result.error_code == "config_error"
    assert "clients.main.client_secret_env" in status(rds)["last_error"]
    assert emulator.calls == 0


def test_unreachable_redis_raises_before_any_call(tmp_path: Path, emulator: Emulator,
                                                  secret_env: str) -> None:
    path = write_config(tmp_path / "c.toml", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        token_url=emulator.url)
    refresher = Refresher.from_config(load_config(path))
    with pytest.raises(StoreUnavailable):
        refresher.refresh_profile("payments")
    refresher.close()
    assert emulator.calls == 0


def test_result_and_status_hold_no_token(refresher: Refresher, emulator: Emulator,
                                         rds: redis.Redis) -> None:
    result = refresher.refresh_profile("payments")
    token = emulator.issued_tokens[-1]
    assert token not in json.dumps(result.to_dict())
    assert token not in repr(result)
    assert token not in json.dumps(status(rds))


def test_sync_profiles_publishes_names_and_scopes_only(refresher: Refresher,
                                                       rds: redis.Redis) -> None:
    refresher.sync_profiles()
    registry = {k: json.loads(v) for k, v in rds.hgetall("stitch:profiles").items()}
    assert sorted(registry) == ["payments", "refunds"]
    assert registry["refunds"]["scopes"] == ["client_refund"]
    assert "client_id" not in json.dumps(registry)


def test_store_is_the_one_passed_in(config: Config, redis_url: str) -> None:
    r = Refresher.from_config(config)
    assert isinstance(r.store, TokenStore)
    assert "127.0.0.1" in repr(r.store)
    r.close()


def test_lock_is_kept_while_its_holder_works(refresher: Refresher, rds: redis.Redis) -> None:
    from token_worker.lock_keeper import LockKeeper

    owner = refresher.store.acquire_lock("payments", 0.6)
    assert owner is not None
    keeper = LockKeeper(refresher.store, "payments", owner, 0.6)
    try:
        time.sleep(1.5)  # well past the TTL it was taken with
        assert rds.get("stitch:lock:payments") == owner
    finally:
        keeper.stop()
    time.sleep(0.8)
    assert rds.exists("stitch:lock:payments") == 0  # stopped: it lapses as before


def test_forced_wait_on_a_lock_without_expiry_does_not_spin(refresher: Refresher,
                                                            rds: redis.Redis) -> None:
    rds.set("stitch:lock:payments", "set-by-hand")  # PTTL -1
    rds.config_resetstat()
    result = refresher.refresh_profile("payments", force=True, wait_seconds=1.5)
    assert result.outcome is Outcome.FAILED and result.error_code == "lock_busy"
    commands = sum(v["calls"] for k, v in rds.info("commandstats").items())
    assert commands < 60, commands  # a spin issues thousands of PTTLs in 1.5 s
    assert rds.pttl("stitch:lock:payments") > 0  # and the lock can now expire
