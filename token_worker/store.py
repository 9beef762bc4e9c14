"""The Redis side: atomic publish, status records, the schedule and the lock.

Every write that must not interleave with another is one Lua script, so no
reader ever sees half a publish and no slow refresher can replace a token that
expires later than its own. Key names come from :mod:`token_worker.keys`.
Time comes from Redis (``TIME``): one clock for the whole fleet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

import redis

from .exceptions import StoreError
from .keys import Keys
from .tokens import Token

__all__ = ["PlainCodec", "TokenCodec", "TokenStore", "connect_redis"]

log = logging.getLogger("token_worker.store")

# KEYS: token, schedule   ARGV: value, expires_at_ms, refresh_at, profile, channel, fingerprint
# Returns 1 written, 0 kept an existing token that lives longer, -1 already expired.
_PUBLISH = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new_ttl = tonumber(ARGV[2]) - now_ms
if new_ttl <= 0 then return -1 end
local cur = redis.call('PTTL', KEYS[1])
if cur > new_ttl then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', new_ttl)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4] .. ' ' .. ARGV[6])
return 1
"""
# KEYS: token   -> false, or the pttl in ms as 13 characters followed by the value (one
# string parses faster than a two-element array). Run with EVALSHA_RO (Redis 7+): a
# read-only script needs only read access to its keys, so it works under the reader ACL
_READ = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return string.format('%013d', redis.call('PTTL', KEYS[1])) .. v
"""
_READ_SHA = hashlib.sha1(_READ.encode(), usedforsecurity=False).hexdigest()  # Redis's script id
# KEYS: lock   ARGV: owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: schedule   ARGV: configured profiles
# -> {now as "sec.usec", due members, member count, how many of ARGV are members}
_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local present = 0
for _, p in ipairs(ARGV) do
  if redis.call('ZSCORE', KEYS[1], p) then present = present + 1 end
end
return {t[1] .. '.' .. string.format('%06d', tonumber(t[2])),
        redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now),
        redis.call('ZCARD', KEYS[1]), present}
"""
# KEYS: marker, schedule   ARGV: profile, channel, fingerprint, marker ttl seconds
_REJECT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' rejected:' .. ARGV[3])
  return 1
end
return 0
"""


class TokenCodec(Protocol):
    """Turns the token JSON into what is stored, and back (encryption at rest hooks here)."""

    def encode(self, profile: str, plaintext: str) -> str: ...

    def decode(self, profile: str, stored: str) -> str: ...


class PlainCodec:
    """Stores the JSON as it is."""

    def encode(self, profile: str, plaintext: str) -> str:
        return plaintext

    def decode(self, profile: str, stored: str) -> str:
        if stored.startswith("enc:"):
            raise StoreError("the token is encrypted and this process has no encryption keys")
        return stored


def connect_redis(
    url: str,
    *,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    socket_timeout: float = 5.0,
) -> redis.Redis:
    """A client with timeouts, so a vanished Redis is an error, never a hang."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 30,
        "decode_responses": True,
    }
    if url.startswith("rediss://"):
        # verify the server and its name even on redis-py 5, whose default skipped the name
        kwargs.update(ssl_ca_certs=tls_ca_file, ssl_certfile=tls_cert_file,
                      ssl_keyfile=tls_key_file, ssl_cert_reqs="required",
                      ssl_check_hostname=True)
    return redis.Redis.from_url(url, **kwargs)


def describe_redis(client: redis.Redis) -> str:
    """``host:port`` of a client, for error messages (never the password)."""
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return str(kw["path"])
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}"


def _split_read(reply: Any) -> tuple[Any, float]:
    """(value or None, seconds left) from what ``_READ`` returns."""
    if reply is None:
        return None, 0.0
    pttl = int(reply[:13])
    return reply[13:], (pttl / 1000.0 if pttl > 0 else 0.0)


class TokenStore:
    """Token, status, schedule and lock operations for one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "stitch",
                 codec: TokenCodec | None = None) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.codec: TokenCodec = codec or PlainCodec()
        self._publish = client.register_script(_PUBLISH)
        self._release = client.register_script(_RELEASE)
        self._due = client.register_script(_DUE)
        self._reject = client.register_script(_REJECT)
        # the reader's hot path; False once the server refuses EVALSHA_RO (see read_raw)
        self._read_ro = True

    def __repr__(self) -> str:
        return f"TokenStore(redis={describe_redis(self.redis)!r}, prefix={self.keys.prefix!r})"

    # -- clock ---------------------------------------------------------------
    def time(self) -> float:
        """Now, on the fleet clock (Redis ``TIME``), in Unix seconds."""
        sec, usec = self.redis.time()
        return sec + usec / 1_000_000

    # -- tokens --------------------------------------------------------------
    def publish(self, profile: str, token: Token) -> int:
        """Publish atomically: value, expiry with the token, schedule, notification.

        Returns:
            1 when written; 0 when the stored token expires later and was kept;
            -1 when the token had already expired on the fleet clock.
        """
        value = self.codec.encode(profile, token.to_json())
        result = self._publish(
            keys=[self.keys.token(profile), self.keys.schedule()],
            args=[value, int(token.expires_at * 1000), repr(token.refresh_at), profile,
                  self.keys.events(), token.fingerprint],
        )
        return int(result)

    def read_raw(self, profile: str) -> tuple[str | None, float]:
        """The stored value and its seconds left per Redis, in one round trip."""
        key = self.keys.token(profile)
        if self._read_ro:
            # a bare EVALSHA_RO costs about what a GET does; a redis-py pipeline or Script
            # object adds tens of microseconds to every uncached read
            try:
                reply = self.redis.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA_RO", _READ_SHA, 1, key)
            except redis.exceptions.NoScriptError:
                try:  # new or restarted Redis: load once (readers have +script|load)
                    self.redis.script_load(_READ)
                    reply = self.redis.execute_command(  # type: ignore[no-untyped-call]
                        "EVALSHA_RO", _READ_SHA, 1, key)
                except redis.exceptions.NoPermissionError:
                    self._read_ro = False
                else:
                    return _split_read(reply)
            except redis.exceptions.NoPermissionError:
                self._read_ro = False  # an ACL without +evalsha_ro
            except redis.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._read_ro = False  # Redis < 7
            else:
                return _split_read(reply)
            log.debug("EVALSHA_RO refused; reading tokens with MULTI GET PTTL EXEC")
        # MULTI needs only the read commands themselves under an ACL (ops/redis-acl.conf)
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(key)
        pipe.pttl(key)
        value, pttl = pipe.execute()
        return value, (pttl / 1000.0 if pttl > 0 else 0.0)

    def decode(self, profile: str, value: str, ttl: float) -> Token:
        """Decode a stored value; raises StoreError when it cannot be read."""
        try:
            data = json.loads(self.codec.decode(profile, value))
            return Token.from_dict(data, ttl=ttl)
        except StoreError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"token for profile {profile!r} is unreadable "
                             f"({type(exc).__name__})") from None

    def get_token(self, profile: str) -> Token | None:
        """The published token, or None."""
        value, ttl = self.read_raw(profile)
        return None if value is None else self.decode(profile, value, ttl)

    def purge(self, profile: str) -> bool:
        """Delete a token and make its profile due now; True when a token was deleted."""
        pipe = self.redis.pipeline()
        pipe.delete(self.keys.token(profile))
        pipe.zadd(self.keys.schedule(), {profile: 0})
        pipe.publish(self.keys.events(), f"{profile} purged")
        deleted, _, _ = pipe.execute()
        return bool(deleted)

    def report_rejected(self, profile: str, token_fingerprint: str, ttl: int = 300) -> bool:
        """Mark a token rejected by the API (once per token) and make its profile due now."""
        return bool(self._reject(
            keys=[self.keys.rejected(profile, token_fingerprint), self.keys.schedule()],
            args=[profile, self.keys.events(), token_fingerprint, ttl],
        ))

    def is_rejected(self, profile: str, token_fingerprint: str) -> bool:
        return bool(self.redis.exists(self.keys.rejected(profile, token_fingerprint)))

    # -- schedule ------------------------------------------------------------
    def due(self, profiles: Iterable[str]) -> tuple[float, list[str]]:
        """(fleet now, configured profiles that are due), usually in one round trip.

        A profile is due when its scheduled time has passed or it is missing from the
        schedule (never published, or Redis came back empty). The script counts which
        configured profiles are scheduled, so the full schedule is read only when the
        two sets differ.
        """
        configured = set(profiles)
        now_s, members, count, present = self._due(keys=[self.keys.schedule()],
                                                   args=sorted(configured))
        due = [p for p in members if p in configured]
        # equal counts alone can hide a renamed profile (one added, one removed)
        if int(count) != len(configured) or int(present) != len(configured):
            known: set[str] = set(self.redis.zrange(self.keys.schedule(), 0, -1))  # type: ignore[arg-type]
            due.extend(sorted(configured - known))
            stale = known - configured
            if stale:  # removed from the config: keep the next tick O(1)
                self.redis.zrem(self.keys.schedule(), *stale)
        return float(now_s), due

    def next_due(self, profile: str) -> float | None:
        """When the schedule says the profile is next due (fleet clock), or None."""
        score = self.redis.zscore(self.keys.schedule(), profile)
        return None if score is None else float(score)

    def schedule_at(self, profile: str, when: float) -> None:
        self.redis.zadd(self.keys.schedule(), {profile: when})

    def schedule_no_earlier(self, profile: str, when: float) -> None:
        """Move the profile's next due time to ``when`` unless it is already later."""
        self.redis.zadd(self.keys.schedule(), {profile: when}, gt=True)

    def schedule(self) -> dict[str, float]:
        pairs: list[tuple[str, float]] = self.redis.zrange(  # type: ignore[assignment]
            self.keys.schedule(), 0, -1, withscores=True)
        return dict(pairs)

    def register_profiles(self, profiles: dict[str, dict[str, Any]]) -> None:
        """Record the configured profiles so bare readers can tell 'unknown' apart."""
        pipe = self.redis.pipeline()
        pipe.delete(self.keys.profiles())
        if profiles:
            pipe.hset(self.keys.profiles(),
                      mapping={k: json.dumps(v) for k, v in profiles.items()})
        pipe.execute()

    # -- status --------------------------------------------------------------
    def status(self, profile: str) -> dict[str, str]:
        fields: dict[str, str] = self.redis.hgetall(self.keys.status(profile))  # type: ignore[assignment]
        return fields

    def statuses(self, profiles: list[str]) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for profile in profiles:
            pipe.hgetall(self.keys.status(profile))
        return [dict(s) for s in pipe.execute()]

    def record_attempt(self, profile: str, now: float) -> None:
        self.redis.hset(self.keys.status(profile), "last_attempt_at", repr(now))

    def record_success(self, profile: str, now: float, token: Token) -> None:
        self.redis.hset(self.keys.status(profile), mapping={
            "last_success_at": repr(now),
            "last_outcome": "refreshed",
            "last_error": "",
            "last_error_code": "",
            "consecutive_failures": 0,
            "fingerprint": token.fingerprint,
            "expires_at": repr(token.expires_at),
            "refresh_at": repr(token.refresh_at),
            "next_attempt_at": repr(token.refresh_at),
        })

    def record_failure(
        self, profile: str, now: float, message: str, code: str, next_attempt_at: float
    ) -> tuple[int, str]:
        """Record a failed attempt and when to try next.

        Returns:
            (consecutive failures now, the previous error code or "").
        """
        key = self.keys.status(profile)
        pipe = self.redis.pipeline()
        pipe.hget(key, "last_error_code")
        pipe.hincrby(key, "consecutive_failures", 1)
        pipe.hset(key, mapping={
            "last_attempt_at": repr(now),
            "last_outcome": "failed",
            "last_error": message,
            "last_error_code": code,
            "next_attempt_at": repr(next_attempt_at),
        })
        pipe.zadd(self.keys.schedule(), {profile: next_attempt_at})
        previous, failures, _, _ = pipe.execute()
        return int(failures), previous or ""

    def record_outcome(self, profile: str, outcome: str) -> None:
        self.redis.hset(self.keys.status(profile), "last_outcome", outcome)

    # -- lock ----------------------------------------------------------------
    def acquire_lock(self, profile: str, ttl_seconds: float) -> str | None:
        """Take the fleet-wide refresh lock; the owner token, or None when held."""
        owner = secrets.token_hex(16)
        if self.redis.set(self.keys.lock(profile), owner, nx=True,
                          px=int(ttl_seconds * 1000)):
            return owner
        return None

    def release_lock(self, profile: str, owner: str) -> bool:
        """Release only if still ours (it may have expired and been taken since)."""
        return bool(self._release(keys=[self.keys.lock(profile)], args=[owner]))

    def lock_ttl(self, profile: str) -> float:
        """Seconds the current lock holder has left, or 0 when unlocked."""
        pttl = self.redis.pttl(self.keys.lock(profile))
        return pttl / 1000.0 if pttl > 0 else 0.0

    def pubsub(self, ignore_subscribe_messages: bool = True) -> Any:
        """A pub/sub connection (redis-py leaves this one untyped)."""
        client: Any = self.redis
        return client.pubsub(ignore_subscribe_messages=ignore_subscribe_messages)
