"""store_claims.py: beat's claims on due refreshes, against a real redis-server."""

from __future__ import annotations

import threading
import time

import redis

from token_worker.keys import Keys
from token_worker.store import REJECTED_COOLDOWN_SECONDS, TokenStore, connect_redis

from .support import make_token


def claim(store: TokenStore, names: list[str], horizon: float = 5.0, hold: float = 60.0
          ) -> dict[str, tuple[float, bool]]:
    _, claims = store.claim_due(names, horizon=horizon, hold=hold,
                                cooldown=REJECTED_COOLDOWN_SECONDS)
    return {c.profile: (c.runs_at, c.lapsed) for c in claims}


def test_claims_key_lives_under_the_prefix_and_in_the_cluster_slot() -> None:
    assert Keys("stitch").claims() == "stitch:claims"
    assert Keys("stitch", hash_tag=True).claims() == "{stitch}:claims"


def test_a_missing_token_is_claimed_once_to_run_now(store: TokenStore) -> None:
    now = store.time()
    got = claim(store, ["payments", "refunds"])
    assert set(got) == {"payments", "refunds"}
    for runs_at, lapsed in got.values():
        assert abs(runs_at - now) < 1.0 and not lapsed
    # every later tick (or a second beat) finds them claimed: nothing is sent twice
    assert claim(store, ["payments", "refunds"]) == {}
    assert set(store.claims()) == {"payments", "refunds"}


def test_only_what_is_due_within_the_horizon_is_claimed_at_its_due_time(
        store: TokenStore) -> None:
    soon = make_token(store, 60.0, refresh_in=2.0)
    later = make_token(store, 60.0, access="tok-B", refresh_in=30.0)
    store.publish("payments", soon)
    store.publish("refunds", later)
    got = claim(store, ["payments", "refunds"], horizon=5.0)
    assert list(got) == ["payments"]
    assert abs(got["payments"][0] - soon.refresh_at) < 1e-3  # runs when due, not now
    assert abs(claim(store, ["refunds"], horizon=40.0)["refunds"][0] - later.refresh_at) < 1e-5


def test_a_short_lived_token_is_claimed_for_half_its_life_left_a_long_one_in_full(
        store: TokenStore) -> None:
    """A lost message must be re-sent while the token it replaces is still valid."""
    short = make_token(store, 10.0, refresh_in=2.0)  # 8 s left when it runs
    long = make_token(store, 3600.0, access="tok-B", refresh_in=2.0)
    store.publish("payments", short)
    store.publish("refunds", long)
    got = claim(store, ["payments", "refunds", "disbursements"], horizon=3.0, hold=61.0)
    assert set(got) == {"payments", "refunds", "disbursements"}
    until = store.claims()
    assert abs(until["payments"] - (short.refresh_at + 4.0)) < 0.1  # (10 - 2) / 2
    assert abs(until["refunds"] - (long.refresh_at + 61.0)) < 1e-3
    # no token at all: the whole hold, so a backlog of first fetches is never re-sent
    assert abs(until["disbursements"] - (got["disbursements"][0] + 61.0)) < 1e-3


def test_a_nearly_expired_token_is_held_at_least_a_tick(store: TokenStore) -> None:
    store.publish("payments", make_token(store, 1.0, refresh_in=0.0))
    got = claim(store, ["payments"], horizon=5.0, hold=61.0)
    assert abs(store.claims()["payments"] - (got["payments"][0] + 5.0)) < 0.1


def test_a_released_claim_can_be_claimed_again(store: TokenStore) -> None:
    assert "payments" in claim(store, ["payments"])
    store.release_claim("payments")
    assert "payments" in claim(store, ["payments"])


def test_a_claim_never_released_lapses_and_says_so(store: TokenStore) -> None:
    first = claim(store, ["payments"], hold=0.2)
    assert list(first) == ["payments"] and first["payments"][1] is False
    assert claim(store, ["payments"], hold=0.2) == {}
    time.sleep(0.3)
    _, lapsed = claim(store, ["payments"])["payments"]
    assert lapsed  # its message was lost: beat re-sends it alone


def test_concurrent_claimers_never_both_claim_a_profile(redis_url: str,
                                                        store: TokenStore) -> None:
    names = [f"p{i}" for i in range(200)]
    won: list[list[str]] = [[] for _ in range(4)]

    def beat(i: int) -> None:
        own = TokenStore(connect_redis(redis_url), "stitch")
        for _ in range(5):
            won[i].extend(claim(own, names))
        own.redis.close()

    threads = [threading.Thread(target=beat, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [p for w in won for p in w]
    assert sorted(every) == sorted(names)  # each exactly once across four beats


def test_a_wrong_typed_claims_key_is_rebuilt(store: TokenStore, rds: redis.Redis) -> None:
    rds.set("stitch:claims", "junk")
    assert "payments" in claim(store, ["payments"])
    assert rds.type("stitch:claims") == "zset"


def test_forget_and_clear_drop_the_claim(store: TokenStore) -> None:
    claim(store, ["payments", "refunds"])
    store.forget("payments")
    assert set(store.claims()) == {"refunds"}
    store.clear(["refunds"])
    assert store.claims() == {}


def test_other_configs_profiles_are_never_claimed(store: TokenStore) -> None:
    # a worker of another config: its profiles are not ours to send
    assert set(claim(store, ["payments"])) == {"payments"}
    assert "refunds" not in store.claims()


def test_a_running_refresh_shortens_its_claim_to_the_lock_and_makes_none(
        store: TokenStore) -> None:
    claim(store, ["payments"], hold=600.0)
    now = store.time()
    store.hold_claim("payments", now + 5.0)
    assert abs(store.claims()["payments"] - (now + 5.0)) < 1e-3
    store.hold_claim("refunds", now + 5.0)  # never claimed (a CLI or listener refresh)
    assert "refunds" not in store.claims()


def test_a_claim_no_beat_could_have_made_does_not_block_the_profile(
        store: TokenStore, rds: redis.Redis) -> None:
    for until in ("+inf", str(store.time() + 1e9)):
        rds.zadd("stitch:claims", {"payments": until})
        got = claim(store, ["payments"], horizon=5.0, hold=60.0)
        assert got["payments"][1] is True  # treated as lapsed: sent again, alone
        store.release_claim("payments")
