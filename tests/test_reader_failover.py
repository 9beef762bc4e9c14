"""A publish lost in a failover (or a restart) never makes a reader drop a newer token."""

from __future__ import annotations

import pytest

from token_worker import TokenReader, TokenUnavailable
from token_worker.store import TokenStore
from token_worker.testing.helpers import wait_until

from .support import make_token


def _reader(redis_url: str) -> TokenReader:
    return TokenReader(redis_url, min_ttl=1, cache=False)


def test_an_older_token_after_a_lost_publish_does_not_replace_the_newer_one(
        store: TokenStore, redis_url: str) -> None:
    older = make_token(store, 300, access="tok-old", issued_ago=60)
    newer = make_token(store, 600, access="tok-new")
    store.publish("payments", older)
    reader = _reader(redis_url)
    try:
        assert reader.get("payments") == older
        store.publish("payments", newer)
        assert reader.get("payments") == newer
        # the new primary never had the newer publish: value and status are the older ones
        store.redis.set(store.keys.token("payments"), older.to_json(), ex=300)
        store.redis.hset(store.keys.status("payments"), mapping={
            "fingerprint": older.fingerprint, "issued_at": repr(older.issued_at)})
        assert reader.get("payments") == newer
        # once the fleet publishes again (issued later still), that one wins
        latest = make_token(store, 900, access="tok-latest")
        store.publish("payments", latest)
        assert reader.get("payments") == latest
    finally:
        reader.close()


def test_a_redis_restarted_empty_leaves_readers_their_token(store: TokenStore,
                                                            redis_url: str) -> None:
    token = make_token(store, 300)
    store.publish("payments", token)
    reader = _reader(redis_url)
    try:
        assert reader.get("payments") == token
        store.redis.flushall()  # as if restarted empty, or failed over to an empty replica
        assert reader.get("payments") == token
    finally:
        reader.close()


def test_a_purged_token_is_not_served_even_by_a_reader_that_held_it(
        store: TokenStore, redis_url: str) -> None:
    token = make_token(store, 300)
    store.publish("payments", token)
    reader = _reader(redis_url)
    try:
        assert reader.get("payments") == token
        store.purge("payments")  # the status record still knows the token: on purpose
        with pytest.raises(TokenUnavailable):
            reader.get("payments")
    finally:
        reader.close()


def test_a_purge_of_a_newer_token_than_a_reader_holds_is_not_a_lost_publish(
        store: TokenStore, redis_url: str) -> None:
    # the reader last read A; the fleet rotated to B (this reader never read it); B is
    # purged: A is superseded, not a newer token Redis lost, so it is not served
    older = make_token(store, 300, access="tok-A", issued_ago=60)
    newer = make_token(store, 600, access="tok-B")
    store.publish("payments", older)
    reader = _reader(redis_url)
    try:
        assert reader.get("payments") == older
        store.publish("payments", newer)
        store.purge("payments")
        with pytest.raises(TokenUnavailable):
            reader.get("payments")
    finally:
        reader.close()


def test_the_purge_event_makes_a_listening_reader_forget_its_token(store: TokenStore,
                                                                   redis_url: str) -> None:
    token = make_token(store, 300)
    store.publish("payments", token)
    reader = TokenReader(redis_url, min_ttl=1)
    try:
        reader.get("payments")
        assert wait_until(reader._listening, 5)
        assert reader.get("payments") == token
        store.forget("payments")  # status gone too: only the event tells the reader
        assert wait_until(lambda: "payments" not in reader._last, 5)
        with pytest.raises(TokenUnavailable):
            reader.get("payments")
    finally:
        reader.close()


def test_a_held_token_is_kept_only_while_it_has_min_ttl_and_was_not_rejected(
        store: TokenStore, redis_url: str) -> None:
    short = make_token(store, 1.5)
    store.publish("payments", short)
    reader = TokenReader(redis_url, min_ttl=1, cache=False)
    try:
        assert reader.get("payments") == short
        store.redis.flushall()
        assert wait_until(lambda: _unavailable(reader), 3)  # under min_ttl: not served
        good = make_token(store, 300, access="tok-good")
        store.publish("payments", good)
        assert reader.get("payments") == good
        reader.report_rejected("payments", good)
        store.redis.flushall()
        with pytest.raises(TokenUnavailable):
            reader.get("payments")  # rejected by the API: never kept
    finally:
        reader.close()


def _unavailable(reader: TokenReader) -> bool:
    try:
        reader.get("payments")
        return False
    except TokenUnavailable:
        return True
