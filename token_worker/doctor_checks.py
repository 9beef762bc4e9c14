"""``doctor``'s checks of Redis and of each profile: small functions, each one a :class:`Check`.

They read :class:`~token_worker.store_server.ServerFacts` and
:class:`~token_worker.status.ProfileStatus` (what the store gathered) and decide; none
sends a command itself. The broker, endpoint and certificate checks and the runner are
in :mod:`token_worker.doctor`. Messages carry fingerprints, settings and server
addresses, never a token, a secret or a password.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .status import ProfileStatus
from .store_server import ServerFacts
from .tokens import TokenState

__all__ = ["FEATURES_VERSION", "MIN_VERSION", "REPLICA_LAG_WARN_SECONDS", "SKEW_FAIL_SECONDS",
           "SKEW_WARN_SECONDS", "Check", "Level", "clock_check", "maxmemory_check",
           "persistence_check", "profile_check", "replication_check", "version_check"]

MIN_VERSION = (6, 2)  # SET ... GET (the 401 report) and ZADD GT (the schedule)
FEATURES_VERSION = (7, 0)  # ops/redis-acl.conf's %R~ keys; the readers' FCALL_RO
REPLICA_LAG_WARN_SECONDS = 5.0
SKEW_WARN_SECONDS = 2.0
SKEW_FAIL_SECONDS = 60.0  # half a private_key_jwt assertion's 120 s lifetime
_RUNBOOK = "ops/RUNBOOK.md"


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: what was checked, how bad, what was seen, and what to do."""

    name: str
    level: Level
    message: str
    advice: str = ""

    def line(self) -> str:
        """``LEVEL name: message[; advice]``, one printable line."""
        text = f"{self.level:<6}{self.name}: {self.message}"
        if self.advice and self.level is not Level.OK:
            text += f"; {self.advice}"
        return "".join(c if c.isprintable() else "?" for c in text)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "level": str(self.level), "message": self.message,
                "advice": self.advice}


def _version(text: str | None) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def _at(which: list[ServerFacts]) -> str:
    return " at " + ", ".join(f.where for f in which)


def version_check(facts: list[ServerFacts]) -> Check:
    """The oldest server against what token_worker's features need."""
    name = "redis version"
    known = [(v, f) for f in facts if (v := _version(f.version)) is not None]
    if not known:
        return Check(name, Level.WARN, "could not read the server version (HELLO and INFO "
                     "refused)", "run doctor as a user allowed INFO (the admin user)")
    oldest, where = min(known, key=lambda pair: pair[0])
    shown = where.version
    spread = "" if len({v for v, _ in known}) == 1 else f" (oldest, at {where.where})"
    if oldest < MIN_VERSION:
        return Check(name, Level.FAIL, f"Redis {shown}{spread} is older than 6.2: the 401 "
                     f"report (SET ... GET) and the schedule (ZADD GT) need 6.2",
                     "upgrade Redis to 7.0 or later")
    if oldest < FEATURES_VERSION:
        return Check(name, Level.WARN, f"Redis {shown}{spread}: ops/redis-acl.conf (%R~ key "
                     f"permissions) and the readers' FCALL_RO fast path need 7.0; readers "
                     f"use MULTI GET PTTL TIME instead",
                     "upgrade to Redis 7.0+ before loading ops/redis-acl.conf")
    missing = [f for f in facts if f.functions is False]
    if missing:
        return Check(name, Level.WARN, f"Redis {shown}{spread}, but the readers' read function "
                     f"is not loaded{_at(missing)}: readers use MULTI GET PTTL TIME "
                     f"(slower)", "start a worker (it loads the function), or check that its "
                     "Redis user may run FUNCTION LOAD")
    loaded = "loaded" if all(f.functions for f in facts) else \
        "not checked (FUNCTION LIST refused)"
    return Check(name, Level.OK, f"Redis {shown}{spread}: ACL file and FCALL_RO supported "
                 f"(7.0+); read function {loaded}")


def maxmemory_check(facts: list[ServerFacts]) -> Check:
    """An eviction policy that can drop token keys (they are the keys with a TTL) fails."""
    name = "maxmemory-policy"
    bad: list[tuple[ServerFacts, str]] = []
    unknown: list[ServerFacts] = []
    for f in facts:
        policy = f.info.get("maxmemory_policy") or f.settings.get("maxmemory-policy")
        if not policy:
            unknown.append(f)
            continue
        if str(policy) != "noeviction":
            bad.append((f, str(policy)))
    if bad:
        policy = bad[0][1]
        limit = bad[0][0].info.get("maxmemory", bad[0][0].settings.get("maxmemory", "?"))
        what = ("token keys first: they are the keys with a TTL" if policy.startswith("volatile")
                else "any key: tokens, the schedule, locks")
        return Check(name, Level.FAIL, f"{policy}{_at([f for f, _ in bad])} (maxmemory "
                     f"{limit}) lets Redis evict {what}",
                     "CONFIG SET maxmemory-policy noeviction, and in redis.conf")
    if unknown:
        why = unknown[0].info_refused or unknown[0].config_refused or "not reported"
        return Check(name, Level.WARN, f"could not read{_at(unknown)}: INFO and CONFIG "
                     f"GET {why}", "check it as the admin user: CONFIG GET maxmemory-policy "
                     "must be noeviction")
    return Check(name, Level.OK, "noeviction: Redis refuses writes when full rather than "
                 "dropping token keys")


def persistence_check(facts: list[ServerFacts]) -> Check:
    """Whether a restart keeps the tokens (else each is fetched again: one call each)."""
    name = "persistence"
    none: list[ServerFacts] = []
    unknown: list[ServerFacts] = []
    kinds: set[str] = set()
    for f in facts:
        aof = f.info.get("aof_enabled")
        aof_on = aof == 1 or f.settings.get("appendonly") == "yes"
        save = f.settings.get("save")
        if aof_on:
            kinds.add("appendonly")
        if save:
            kinds.add(f"RDB save {save}")
        if aof_on or save:
            continue
        # no AOF (or INFO refused too); without CONFIG GET the RDB schedule is unknown
        (unknown if "save" not in f.settings else none).append(f)
    if none:
        return Check(name, Level.WARN, f"none (appendonly no, save \"\"){_at(none)}: a "
                     f"restart empties the store; every token is fetched again (one call "
                     f"per profile) and readers without one wait for it",
                     "CONFIG SET appendonly yes (or a save schedule), and in redis.conf")
    if unknown:
        why = unknown[0].config_refused or unknown[0].info_refused or "not reported"
        return Check(name, Level.WARN, f"could not read{_at(unknown)}: CONFIG GET {why}",
                     "check appendonly and save as the admin user")
    return Check(name, Level.OK, ", ".join(sorted(kinds)))


def _number(value: Any, default: float = 0.0) -> float:
    """A server-reported number; what does not parse (or is not finite) is ``default``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _replicas(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in sorted(info.items()) if re.fullmatch(r"slave\d+", k)
            and isinstance(v, dict)]


def replication_check(facts: list[ServerFacts], *, wait_replicas: int = 0,
                      sentinel: bool = False,
                      lag_warn: float = REPLICA_LAG_WARN_SECONDS) -> Check:
    """Role, replicas and their lag, against ``min-replicas-to-write`` and
    ``redis.wait_replicas``."""
    found: list[tuple[Level, str, str]] = []  # (level, what, what to do)
    seen: list[str] = []
    for f in facts:
        if f.role in ("slave", "replica"):
            found.append((Level.FAIL, f"{f.where} is a replica (read-only): refreshes cannot "
                          f"write", "point redis.url at the primary (or use redis+sentinel://)"))
            continue
        if not f.info:
            found.append((Level.WARN, f"could not read INFO at {f.where}: {f.info_refused}",
                          "check INFO replication as the admin user"))
            continue
        replicas = _replicas(f.info)
        online = [r for r in replicas if r.get("state") == "online"]
        for r in replicas:
            addr = f"{r.get('ip')}:{r.get('port')}"
            if r.get("state") != "online":
                found.append((Level.WARN, f"replica {addr} is {r.get('state')} (not in sync)",
                              "wait for it to sync, or look at its log"))
            elif _number(r.get("lag")) > lag_warn:
                found.append((Level.WARN, f"replica {addr} lags {r.get('lag')} s: a failover "
                              f"now loses the refreshes since", "look at the replica's load "
                              "and network"))
        need = int(_number(f.settings.get("min-replicas-to-write")))
        max_lag = _number(f.settings.get("min-replicas-max-lag"), 10.0)
        # Redis's own count when it keeps one; else what it would count
        good = int(_number(f.info.get("min_slaves_good_slaves"),
                           sum(_number(r.get("lag")) <= max_lag for r in online)))
        if need and good < need:
            found.append((Level.FAIL, f"min-replicas-to-write {need} but {good} replica(s) "
                          f"within {max_lag:g} s at {f.where}: Redis refuses every write "
                          f"(NOREPLICAS), so every refresh fails",
                          "bring a replica back, or CONFIG SET min-replicas-to-write 0"))
        if wait_replicas > len(online):
            found.append((Level.WARN, f"redis.wait_replicas = {wait_replicas} but "
                          f"{len(online)} replica(s) online at {f.where}: every publish waits "
                          f"the full wait_timeout_ms and logs a warning",
                          "set redis.wait_replicas to the replicas you run"))
        if sentinel and not online:
            found.append((Level.WARN, f"no replica online behind Sentinel at {f.where}: "
                          f"nothing to fail over to", "bring a replica back"))
        lags = ", ".join(f"{r.get('ip')}:{r.get('port')} lag {r.get('lag')}s" for r in online)
        seen.append(f"{len(online)} replica(s)" + (f" ({lags})" if lags else "")
                    + (f", min-replicas-to-write {need}" if need else ""))
    name = "replication"
    for level in (Level.FAIL, Level.WARN):
        worst = [item for item in found if item[0] is level]
        if worst:
            return Check(name, level, "; ".join(text for _, text, _ in found), worst[0][2])
    summary = "; ".join(dict.fromkeys(seen))
    if summary.startswith("0 replica"):
        summary += " (optional: a lost Redis costs one endpoint call per profile)"
    return Check(name, Level.OK, f"primar{'ies' if len(facts) > 1 else 'y'}, {summary}")


def clock_check(skew: float) -> Check:
    """This host's clock against Redis ``TIME`` (``skew``: Redis minus host, seconds)."""
    name = "clock"
    behind = "behind" if skew > 0 else "ahead of"
    text = f"this host's clock is {abs(skew):.1f} s {behind} Redis TIME" if abs(skew) >= 0.05 \
        else "this host's clock agrees with Redis TIME"
    why = ("token_worker schedules and expires tokens on Redis's clock, so refreshes are "
           "safe, but private_key_jwt assertions (iat/exp, 120 s) and log times use this "
           "host's")
    if abs(skew) > SKEW_FAIL_SECONDS:
        return Check(name, Level.FAIL, f"{text}: {why}; Stitch may refuse assertions",
                     "sync this host and the Redis host with NTP (chrony, timesyncd)")
    if abs(skew) > SKEW_WARN_SECONDS:
        return Check(name, Level.WARN, f"{text}: {why}", "sync both hosts with NTP")
    return Check(name, Level.OK, f"{text} (token_worker uses Redis's clock for the fleet)")


def _ago(seconds: float) -> str:
    s = int(abs(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def profile_check(row: ProfileStatus, *, interval: float, lock_ttl: float,
                  claim_lapsed: float | None = None) -> Check:
    """The profile's token state and its schedule agreeing; failures; a stuck lock; a
    refresh beat sent that never ran (``claim_lapsed``: seconds since its claim lapsed)."""
    name = f"profile {row.profile}"
    fp = f"fingerprint {row.fingerprint}" if row.fingerprint else "no fingerprint"
    overdue = row.refresh_in is not None and row.refresh_in < -3 * interval
    if row.state in (TokenState.MISSING, TokenState.EXPIRED):
        error = f"; last error: {row.last_error[:160]}" if row.last_error else ""
        return Check(name, Level.FAIL, f"{row.state}: readers get TokenUnavailable{error}",
                     "see ops/RUNBOOK.md TokenWorkerTokenExpiringSoon; once fixed, "
                     f"ops/force-refresh {row.profile} --wait 60")
    left = f"expires in {_ago(row.expires_in or 0)}"
    if row.lock_ttl == float("inf"):
        return Check(name, Level.WARN, f"{row.state}, {left}, but its refresh lock has no "
                     f"expiry (set by hand or restored from a dump)",
                     "the next attempt gives it one; to clear it now see the runbook's "
                     "Stuck lock")
    if row.lock_ttl > lock_ttl + 1:
        return Check(name, Level.WARN, f"{row.state}, {left}; its lock has {row.lock_ttl:.0f} s "
                     f"left, more than this config's lock TTL {lock_ttl:.0f} s",
                     "workers with another config hold it; see the runbook's Stuck lock")
    if row.refresh_in is None:
        return Check(name, Level.WARN, f"{row.state}, {left}, {fp}, but not in the schedule: "
                     f"no beat has scheduled it (the schedule deleted, or beat not running)",
                     f"check beat runs; ops/force-refresh {row.profile} --wait 60")
    if overdue:
        return Check(name, Level.WARN, f"{row.state}, {left}, but due {_ago(row.refresh_in or 0)}"
                     f" ago and not attempted (more than 3 intervals): beat or the workers "
                     f"are not running", "see the runbook's TokenWorkerRefreshNotAttempted")
    if claim_lapsed is not None:
        return Check(name, Level.WARN, f"{row.state}, {left}, but a refresh beat sent never "
                     f"ran (its claim lapsed {_ago(claim_lapsed)} ago): a worker died holding "
                     "it, or one of an older version took a refresh_batch it does not know",
                     "beat re-sends it alone at the next tick; upgrade every worker on the "
                     "queue (see the runbook's Lost refresh message)")
    if row.consecutive_failures:
        error = f"; last error: {row.last_error[:160]}" if row.last_error else ""
        return Check(name, Level.WARN, f"{row.state}, {left}, {row.consecutive_failures} "
                     f"consecutive failure(s){error}",
                     "see the runbook section for the error code (status --json: "
                     "last_error_code)")
    if row.rejected:
        return Check(name, Level.WARN, f"{row.state}, {left}: the API rejected the current "
                     f"token (401); a refresh is under way", "if it stays, see the runbook's "
                     "invalid_client")
    due = "now" if (row.refresh_in or 0) <= 0 else f"in {_ago(row.refresh_in or 0)}"
    return Check(name, Level.OK, f"{row.state}, {left}, next refresh {due}, {fp}")
