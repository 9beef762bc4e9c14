"""The Redis side: atomic publish, status records, the schedule and the lock.

The only door to Redis: no other module sends a command, builds a key name or opens
a connection (:meth:`TokenStore.open` goes through :func:`connection.client_for`).
Every write that must not interleave with another is one Lua script, so no
reader ever sees half a publish and no slow refresher can replace a token that
expires later than its own. Key names come from :mod:`token_worker.keys`.
Time comes from Redis (``TIME``): one clock for the whole fleet.

Every Redis error surfaces as :class:`~token_worker.exceptions.StoreError`
(:class:`StoreUnavailable` when Redis cannot be reached). Writes that travel
together take ``pipeline=`` (from :meth:`TokenStore.batch`), rq's style.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import redis

from . import scripts
from .codec import PlainCodec, TokenCodec
from .connection import (
    RedisSettingsLike,
    RedisTarget,
    client_for,
    connect_redis,
    describe_redis,
    is_cluster,
)
from .events import Event
from .keys import Keys
from .records import StatusRecord
from .store_claims import Claim, ClaimOps
from .store_guard import REDIS_ERRORS, Subscription, guard_public, store_error
from .store_read import decode_token, function_unavailable, split_read
from .store_server import ServerFacts, ServerOps
from .store_status import ProfileFacts, StatusOps
from .tokens import Token, bounded_ttl

__all__ = ["REJECTED_COOLDOWN_SECONDS", "Claim", "PlainCodec", "ProfileFacts", "RedisTarget",
           "ServerFacts", "TokenCodec", "TokenStore", "client_for", "connect_redis"]

log = logging.getLogger("token_worker.store")

_T = TypeVar("_T")
_monotonic = time.monotonic  # TokenStore.time hides the module inside the class body

# a 401 report makes a profile due again at most this often: a broken API (or a hostile
# reader) reporting every new token at once must not turn into one endpoint call per tick
REJECTED_COOLDOWN_SECONDS = 10.0



@guard_public
class TokenStore(StatusOps, ClaimOps, ServerOps):
    """Token, status, schedule and lock operations for one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "stitch",
                 codec: TokenCodec | None = None, *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 100) -> None:
        self.redis = client
        # each publish waits for this many replicas (WAIT), at most wait_timeout_ms
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.keys = Keys(prefix, hash_tag=is_cluster(client))
        self.codec: TokenCodec = codec or PlainCodec()
        self._publish = client.register_script(scripts.PUBLISH)
        self._fail = client.register_script(scripts.FAIL)
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._extend = client.register_script(scripts.EXTEND)
        self._release = client.register_script(scripts.RELEASE)
        self._due = client.register_script(scripts.DUE)
        # the reader's hot path: monotonic time until which plain commands are used
        # instead of the read function (absent, refused by an ACL, or Redis < 7)
        self._fcall_after = 0.0

    @classmethod
    def open(cls, settings: RedisSettingsLike, codec: TokenCodec | None = None) -> TokenStore:
        """A store on the ``[redis]`` settings (a ``RedisSettings`` or a ``RedisTarget``)."""
        return cls(client_for(settings), settings.prefix, codec=codec,
                   wait_replicas=getattr(settings, "wait_replicas", 0),
                   wait_timeout_ms=getattr(settings, "wait_timeout_ms", 100))

    def __repr__(self) -> str:
        return f"TokenStore(redis={self.where!r}, prefix={self.prefix!r})"

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def where(self) -> str:
        """``host:port`` (or socket path) of the server, for messages; never raises."""
        return describe_redis(self.redis)

    def close(self) -> None:
        """Close the connections (the pool with them); never raises."""
        with contextlib.suppress(redis.RedisError, OSError):
            self.redis.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[Any]:
        """A pipeline for methods that take ``pipeline=``, sent in one round trip when
        the block ends (not atomically; nothing is sent if the block raises)."""
        pipe = self.redis.pipeline(transaction=False)
        yield pipe
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise store_error(self.redis, exc) from exc

    # -- clock ---------------------------------------------------------------
    def time(self) -> float:
        """Now, on the fleet clock (Redis ``TIME``), in Unix seconds."""
        sec, usec = self.redis.time()
        return sec + usec / 1_000_000

    # -- tokens --------------------------------------------------------------
    def load_functions(self) -> bool:
        """Load the readers' read function (refresher side; readers cannot load code).

        Returns False when this Redis has no functions (before 7.0) or refuses us.
        """
        try:
            self.redis.function_load(scripts.FUNCTION_LIBRARY, replace=True)
        except redis.exceptions.NoPermissionError:
            return False
        except redis.ResponseError as exc:
            if "unknown command" in str(exc).lower():
                return False
            raise
        return True

    def publish(self, profile: str, token: Token, owner: str = "",
                rejected_refresh_at: float | None = None) -> int:
        """Publish atomically: value, expiry with the token, schedule, status, notification.

        Tokens are ordered by ``issued_at``: a token issued later replaces the stored one
        even when it expires sooner (a forced or post-401 refresh must win), and one
        issued earlier never replaces it (a slow refresher's late answer). ``owner`` is the
        lock owner: a holder whose lock expired and was taken by another is fenced out.

        Returns:
            1 written; 0 a token issued later is already published; -1 the token had
            already expired on the fleet clock; -2 the lock is another holder's.
        """
        value = self.codec.encode(profile, token.to_json())
        record = StatusRecord(
            last_success_at=token.issued_at, last_outcome="refreshed",
            consecutive_failures=0, fingerprint=token.fingerprint, issued_at=token.issued_at,
            expires_at=token.expires_at, refresh_at=token.refresh_at,
            next_attempt_at=token.refresh_at,
            rejected_refresh_at=rejected_refresh_at,  # the 401 report cooldown runs from here
        )
        fields = record.to_hash(clear=("last_reason", "last_error", "last_error_code"))
        k = self.keys
        keys = [k.token(profile), k.schedule(), k.lock(profile), k.status(profile)]
        args: list[Any] = [value, int(token.expires_at * 1000), repr(token.refresh_at), profile,
                k.events(), token.fingerprint, owner, repr(token.issued_at),
                *[x for pair in fields.items() for x in pair]]
        if self.wait_replicas:
            return self._publish_acknowledged(profile, keys, args)
        return int(self._publish(keys=keys, args=args))

    def _publish_acknowledged(self, profile: str, keys: list[str], args: list[Any]) -> int:
        """The publish script, then ``WAIT`` on the same connection (WAIT counts the
        replicas that have this connection's writes; on a cluster, the slot's primary)."""
        client: Any = self.redis
        if self.keys.hash_tag:
            client = client.get_redis_connection(client.get_node_from_key(keys[0]))
        pipe = client.pipeline(transaction=False)
        self._publish(keys=keys, args=args, client=pipe)
        pipe.wait(self.wait_replicas, self.wait_timeout_ms)
        result, acknowledged = pipe.execute()
        if int(result) == 1 and acknowledged < self.wait_replicas:
            # published on the primary all the same: a failover now could still lose it,
            # which costs one more endpoint call (the key is missing, so it is due)
            log.warning("publish profile=%s acknowledged by %d of %d replicas within %d ms",
                        profile, acknowledged, self.wait_replicas, self.wait_timeout_ms)
        return int(result)

    def read_raw(self, profile: str) -> tuple[str | None, float, float]:
        """The stored value, its seconds left per Redis and the fleet clock, in one trip.

        Pass the result to :func:`token_worker.tokens.bounded_ttl` with the token's own
        ``expires_at``: the key TTL alone can be stretched by a replayed ``SET``.
        """
        key = self.keys.token(profile)
        if self._fcall_after <= time.monotonic():
            # a bare FCALL_RO costs about what a GET does; a redis-py pipeline adds tens of
            # microseconds to every uncached read
            try:
                if self.keys.hash_tag:
                    # a cluster client would ask a node for FCALL's keys (COMMAND GETKEYS)
                    # first: name the slot's node (one round trip, no stale node to ask)
                    reply = self.redis.execute_command(  # type: ignore[no-untyped-call]
                        "FCALL_RO", scripts.READ_FUNCTION, 1, key,
                        target_nodes=self.redis.get_node_from_key(key))  # type: ignore[attr-defined]
                else:
                    reply = self.redis.execute_command(  # type: ignore[no-untyped-call]
                        "FCALL_RO", scripts.READ_FUNCTION, 1, key)
            except redis.ResponseError as exc:
                after = function_unavailable(exc)
                if after is None:
                    raise
                self._fcall_after = after
            else:
                return split_read(reply)
            log.debug("read function unavailable; reading tokens with MULTI GET PTTL TIME")
        # MULTI needs only the read commands themselves under an ACL (ops/redis-acl.conf);
        # on a cluster a plain pipeline (bounded_ttl caps a mismatched pair by expires_at)
        pipe = self.redis.pipeline(transaction=not self.keys.hash_tag)
        pipe.get(key)
        pipe.pttl(key)
        (value, pttl), now = self._execute_timed(pipe)
        return value, (pttl / 1000.0 if pttl > 0 else 0.0), now

    def decode(self, profile: str, value: str, ttl: float) -> Token:
        """Decode a stored value; raises StoreError when it cannot be read."""
        return decode_token(self.codec, profile, value, ttl)

    def get_token(self, profile: str) -> Token | None:
        """The published token, or None."""
        value, ttl, now = self.read_raw(profile)
        if value is None:
            return None
        token = self.decode(profile, value, ttl)
        bounded = bounded_ttl(ttl, token.expires_at, now)
        return token if bounded == ttl else token.with_deadline(token.deadline - ttl + bounded)

    def delete_token(self, profile: str) -> None:
        """Drop a stored token nobody can read (so it cannot outlive a good one)."""
        self.redis.delete(self.keys.token(profile))

    def clear(self, profiles: Iterable[str], extra: Iterable[str] = ()) -> None:
        """Delete the prefix's schedule and registry and these profiles' keys, plus the
        ``extra`` key names (the demo's queue): a throwaway keyspace's cleanup."""
        k = self.keys
        names = [k.schedule(), k.claims(), k.profiles(), *extra]
        for p in profiles:
            names += [k.token(p), k.status(p), k.lock(p), k.rejected(p)]
        self.redis.delete(*names)

    def purge(self, profile: str) -> bool:
        """Delete a token and make its profile due now; True when a token was deleted."""
        pipe = self.redis.pipeline(transaction=not self.keys.hash_tag)
        pipe.delete(self.keys.token(profile))
        pipe.zadd(self.keys.schedule(), {profile: 0})
        deleted, _ = pipe.execute()
        # after the deletion, never before: a reader told must not find the old token
        self.redis.publish(self.keys.events(), Event.purged(profile).encode())
        return bool(deleted)

    def forget(self, profile: str) -> None:
        """Remove a profile from the fleet: token, status, schedule entry and registry.

        Workers never remove profiles they do not know (another config may), so taking
        one out of service is this explicit step, after every worker has dropped it.
        """
        k = self.keys
        pipe = self.redis.pipeline(transaction=not k.hash_tag)
        for key in (k.token(profile), k.status(profile), k.lock(profile)):
            pipe.delete(key)  # one key per DEL: a cluster pipeline takes no other
        pipe.zrem(k.schedule(), profile)
        pipe.zrem(k.claims(), profile)
        pipe.hdel(k.profiles(), profile)
        pipe.execute()
        self.redis.publish(k.events(), Event.purged(profile).encode())

    def report_rejected(self, profile: str, token_fingerprint: str, ttl: int = 300) -> bool:
        """Mark a token rejected by the API, once per token, and tell the listeners.

        Readers run this: it writes only the marker (no schedule, no script). The
        listeners move the refresh forward; beat's due check sees the marker too, so a
        report made while no listener was connected is not lost.
        """
        # one command: the marker holds the fingerprint last reported, so the report of a
        # token already reported changes nothing, and beat's due check reads one key
        previous = self.redis.set(self.keys.rejected(profile), token_fingerprint, ex=ttl,
                                  get=True)
        if previous == token_fingerprint:
            return False
        self.redis.publish(self.keys.events(), Event.rejected(profile, token_fingerprint).encode())
        return True

    def is_rejected(self, profile: str, token_fingerprint: str) -> bool:
        return bool(self.redis.get(self.keys.rejected(profile)) == token_fingerprint)

    # -- schedule ------------------------------------------------------------
    def due(self, profiles: Iterable[str]) -> tuple[float, list[str]]:
        """(fleet now, configured profiles that are due), in one round trip.

        Due: the schedule's time has passed or it has none; the token key is gone while
        no failure backoff runs; or the current token was reported rejected (at most once
        per :data:`REJECTED_COOLDOWN_SECONDS`). Profiles this process does not know are
        never touched: another worker's config may have them.
        """
        names = sorted(set(profiles))
        k = self.keys
        keys = [k.schedule(), *[k.token(p) for p in names], *[k.status(p) for p in names],
                *[k.rejected(p) for p in names]]
        now_s, due = self._due(keys=keys, args=[REJECTED_COOLDOWN_SECONDS, *names])
        return float(now_s), list(due)

    def next_due(self, profile: str) -> float | None:
        """When the schedule says the profile is next due (fleet clock), or None."""
        score = self.redis.zscore(self.keys.schedule(), profile)
        return None if score is None else float(score)

    def schedule_no_earlier(self, profile: str, when: float, *, pipeline: Any = None) -> None:
        """Move the profile's next due time to ``when`` unless it is already later."""
        (pipeline or self.redis).zadd(self.keys.schedule(), {profile: when}, gt=True)

    def schedule(self) -> dict[str, float]:
        pairs: list[tuple[str, float]] = self.redis.zrange(  # type: ignore[assignment]
            self.keys.schedule(), 0, -1, withscores=True)
        return dict(pairs)

    def register_profiles(self, profiles: dict[str, dict[str, Any]]) -> None:
        """Record this config's profiles so bare readers can tell 'unknown' apart.

        Merged, never replaced: a worker with another config (a rolling deploy, a second
        app on the prefix) keeps its entries. :meth:`forget` removes one.
        """
        if profiles:
            self.redis.hset(self.keys.profiles(),
                            mapping={k: json.dumps(v) for k, v in profiles.items()})

    def registered_profiles(self) -> dict[str, dict[str, Any]]:
        """The fleet's registry: profile -> its public settings (margin, interval)."""
        raw: dict[str, str] = self.redis.hgetall(self.keys.profiles())  # type: ignore[assignment]
        out: dict[str, dict[str, Any]] = {}
        for name, value in raw.items():
            try:
                data = json.loads(value)
            except (ValueError, RecursionError):
                continue
            if isinstance(data, dict):
                out[name] = data
        return out

    # -- events (lines of token_worker.events.Event) --------------------------
    def pubsub(self, ignore_subscribe_messages: bool = True) -> Subscription:
        """A subscription (its own connection, from the pool) to the events channel."""
        client: Any = self.redis  # redis-py leaves pub/sub untyped
        pubsub = client.pubsub(ignore_subscribe_messages=ignore_subscribe_messages)
        try:
            pubsub.subscribe(self.keys.events())
        except BaseException:
            with contextlib.suppress(Exception):  # the error to report is the first one
                pubsub.close()
            raise
        return Subscription(pubsub, self.redis)

    def wait_for(self, predicate: Callable[[], _T], deadline: float, *, every: float = 1.0,
                 monotonic: Callable[[], float] = _monotonic) -> _T | None:
        """``predicate()``'s first truthy value, or None once ``deadline`` (monotonic) passes.

        Checked once subscribed (no event in between is missed), on every event and at
        least every ``every`` seconds. Redis errors propagate: the caller decides."""
        pubsub = self.pubsub()
        try:
            while not (value := predicate()):
                left = deadline - monotonic()
                if left <= 0:
                    return None
                pubsub.get_message(timeout=max(min(left, every), 0.01))
            return value
        finally:
            pubsub.close()
