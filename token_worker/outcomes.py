"""What one refresh did: its outcome (a public status and metric label) and result."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Outcome", "RefreshResult"]


def log_fields(profile: str, outcome: str, duration: float, fingerprint: str | None = None,
                error_code: str | None = None) -> dict[str, Any]:
    """The per-attempt fields ``--log-format json`` carries (never a token or secret)."""
    return {"profile": profile, "outcome": outcome, "duration": round(duration, 3),
            "fingerprint": fingerprint, "error_code": error_code}


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    NOT_DUE = "not_due"
    DONE_ELSEWHERE = "done_elsewhere"
    FAILED = "failed"


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        return data
