"""What one refresh did: its outcome (a public status and metric label), why, and result.

The four outcomes are public (status ``last_outcome``, the metric's ``outcome`` label)
and stay as they are; :class:`Reason` says which case of one it was (results, logs and
status ``last_reason``), so "done elsewhere" no longer hides six different stories.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Outcome", "Reason", "RefreshResult"]


def log_fields(profile: str, outcome: str, duration: float, fingerprint: str | None = None,
                error_code: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """The per-attempt fields ``--log-format json`` carries (never a token or secret)."""
    return {"profile": profile, "outcome": outcome, "duration": round(duration, 3),
            "fingerprint": fingerprint, "error_code": error_code, "reason": reason}


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    NOT_DUE = "not_due"
    DONE_ELSEWHERE = "done_elsewhere"
    FAILED = "failed"


class Reason(StrEnum):
    """Which case of an outcome a refresh was."""

    # not_due
    TOKEN_VALID = "token_valid"  # noqa: S105 - a reason, not a secret; the token has time left and was not reported rejected
    # done_elsewhere
    LOCK_HELD = "lock_held"  # another process is refreshing it right now (unforced)
    SATISFIED = "satisfied"  # another refresh already produced what was asked for
    STALE_MESSAGE = "stale_message"  # an attempt since this message was sent failed and
    #                                  set a backoff: the schedule makes the next one
    SUPERSEDED = "superseded"  # our lock expired and another holder took it over
    NEWER_TOKEN = "newer_token"  # noqa: S105 - a token issued later was published while we called
    EXPIRED_IN_TRANSIT = "expired_in_transit"  # ours expired before it could be published
    # failed
    LOCK_BUSY = "lock_busy"  # a forced refresh gave up waiting for the lock holder
    REQUEST_FAILED = "request_failed"  # the endpoint refused or failed (see error_code)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one refresh did; holds no token, only its fingerprint."""

    profile: str
    outcome: Outcome
    fingerprint: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    error: str | None = None
    error_code: str | None = None
    calls: int = 0
    reason: Reason | None = None  # None for refreshed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        data["reason"] = None if self.reason is None else str(self.reason)
        return data
