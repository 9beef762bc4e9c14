"""What every profile looks like right now, read from Redis alone.

Used by ``status``, ``check``, the metrics sidecar and the demo. Needs no
credential and does not decrypt anything: the fingerprint and refresh time come
from the status record, the remaining lifetime from Redis's own TTL. A token
reported rejected (a 401) is ``refresh_due``, never ``valid``, however long it has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import Config
from .store import TokenStore
from .tokens import TokenState, token_state

__all__ = ["ProfileStatus", "certificate_expiries", "read_statuses"]


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    """One row of ``status``; holds a fingerprint, never a token."""

    profile: str
    scopes: list[str]
    state: TokenState
    expires_in: float | None
    refresh_in: float | None
    fingerprint: str | None
    last_success_at: float | None
    last_attempt_at: float | None
    last_error: str | None
    last_error_code: str | None
    consecutive_failures: int
    now: float
    rejected: bool = False  # the API answered 401 for the current token
    last_outcome: str | None = None  # refreshed, not_due, done_elsewhere, failed
    last_reason: str | None = None  # which case of it (lock_held, superseded, ...)
    lock_ttl: float = 0.0  # seconds the refresh lock has left (inf: no expiry); not in JSON

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        del data["now"], data["lock_ttl"]
        return data


def read_statuses(config: Config, store: TokenStore, profiles: list[str] | None = None,
                  *, locks: bool = False) -> list[ProfileStatus]:
    """Every (or the given) profile's status, in two Redis round trips
    (:meth:`TokenStore.facts`; ``locks`` adds the lock TTLs, for the ``observer``)."""
    names = profiles if profiles is not None else sorted(config.profiles)
    now, facts = store.facts(names, locks=locks)
    rows = []
    for f in facts:
        rec = f.record
        expires_at = now + f.token_ttl if f.token_ttl is not None else None
        if expires_at is None and rec.last_success_at is not None:
            # the key dies with its token: fetched once and gone is expired, not missing
            expires_at = now
        state = token_state(expires_at, rec.refresh_at, now, rejected=f.rejected)
        rows.append(ProfileStatus(
            profile=f.profile,
            scopes=list(config.profiles[f.profile].scopes),
            state=state,
            expires_in=f.token_ttl,
            refresh_in=(f.next_due - now) if f.next_due is not None else None,
            fingerprint=rec.fingerprint if f.token_ttl else None,
            last_success_at=rec.last_success_at,
            last_attempt_at=rec.last_attempt_at,
            last_error=rec.last_error,
            last_error_code=rec.last_error_code,
            consecutive_failures=rec.failures,
            now=now,
            rejected=f.rejected,
            last_outcome=rec.last_outcome,
            last_reason=rec.last_reason,
            lock_ttl=f.lock_ttl,
        ))
    return rows


def certificate_expiries(config: Config) -> dict[str, tuple[str, float | None]]:
    """``profile -> (client name, certificate expiry)`` for profiles of certificate clients.

    The expiry is Unix seconds, or None where this host cannot read the certificate
    (reader hosts have none): status works anywhere and says "unknown" there.
    """
    from .credentials import certificate_not_after

    out: dict[str, tuple[str, float | None]] = {}
    for profile, settings in sorted(config.profiles.items()):
        name = settings.client or next(iter(config.clients))
        path = config.clients[name].certificate_file
        if path:
            when = certificate_not_after(path)
            out[profile] = (name, when.timestamp() if when else None)
    return out
