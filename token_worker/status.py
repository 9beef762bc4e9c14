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


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        del data["now"]
        return data


def read_statuses(config: Config, store: TokenStore,
                  profiles: list[str] | None = None) -> list[ProfileStatus]:
    """Every (or the given) profile's status, in two Redis round trips.

    The second checks the rejected markers, whose names hold the fingerprints the
    first one reads. Needs only what the ``observer`` ACL user may do.
    """
    names = profiles if profiles is not None else sorted(config.profiles)
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    pipe.time()
    for name in names:
        pipe.pttl(keys.token(name))
        pipe.hgetall(keys.status(name))
        pipe.zscore(keys.schedule(), name)
    replies = pipe.execute()
    sec, usec = replies[0]
    now = sec + usec / 1_000_000
    rejected = _rejected(store, names, replies)
    rows = []
    for i, name in enumerate(names):
        pttl, status, scheduled = replies[1 + 3 * i: 4 + 3 * i]
        expires_in = pttl / 1000.0 if pttl and pttl > 0 else None
        expires_at = now + expires_in if expires_in is not None else None
        if expires_at is None and status.get("last_success_at"):
            # the key dies with its token: fetched once and gone is expired, not missing
            expires_at = now
        refresh_at = _float(status.get("refresh_at"))
        state = token_state(expires_at, refresh_at, now, rejected=name in rejected)
        rows.append(ProfileStatus(
            profile=name,
            scopes=list(config.profiles[name].scopes),
            state=state,
            expires_in=expires_in,
            refresh_in=(scheduled - now) if scheduled is not None else None,
            fingerprint=(status.get("fingerprint") or None) if expires_in else None,
            last_success_at=_float(status.get("last_success_at")),
            last_attempt_at=_float(status.get("last_attempt_at")),
            last_error=status.get("last_error") or None,
            last_error_code=status.get("last_error_code") or None,
            consecutive_failures=int(status.get("consecutive_failures") or 0),
            now=now,
            rejected=name in rejected,
        ))
    return rows


def _rejected(store: TokenStore, names: list[str], replies: list[Any]) -> set[str]:
    """The profiles whose current token (per its status record) was reported rejected."""
    checked = []
    for i, name in enumerate(names):
        pttl, status = replies[1 + 3 * i], replies[2 + 3 * i]
        fp = status.get("fingerprint")
        if fp and pttl and pttl > 0:
            checked.append((name, fp))
    if not checked:
        return set()
    pipe = store.redis.pipeline(transaction=False)
    for name, _ in checked:
        pipe.get(store.keys.rejected(name))
    return {name for (name, fp), marked in zip(checked, pipe.execute(), strict=True)
            if marked == fp}


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
