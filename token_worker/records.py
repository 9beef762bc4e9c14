"""The status record ``{prefix}:status:{profile}``: one typed value, its field names once.

Stdlib only. The store reads and writes the hash through :class:`StatusRecord`; the Lua
in :mod:`token_worker.scripts` names the fields it reads through the constants below, so
a field is spelled in exactly one place. Every value is a string in Redis (floats as
``repr``); a field that is missing or does not parse reads as unset, never as an error:
an operator's hand edit must not stop a refresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CONSECUTIVE_FAILURES", "FINGERPRINT", "ISSUED_AT", "LAST_ERROR_CODE",
           "REJECTED_REFRESH_AT", "StatusRecord"]

# the fields the scripts read (the rest they write as given)
CONSECUTIVE_FAILURES = "consecutive_failures"
FINGERPRINT = "fingerprint"
ISSUED_AT = "issued_at"
LAST_ERROR_CODE = "last_error_code"
REJECTED_REFRESH_AT = "rejected_refresh_at"


def _float(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int(value: str | None) -> int:
    number = _float(value)
    return max(0, int(number)) if number is not None else 0


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """What the status hash says about a profile's last refresh; never holds a token.

    ``last_outcome`` is one of the documented outcomes (``refreshed``, ``not_due``,
    ``done_elsewhere``, ``failed``); ``last_reason`` says which case of it (``lock_held``,
    ``superseded``, ...; see :mod:`token_worker.outcomes`).
    """

    last_success_at: float | None = None
    last_attempt_at: float | None = None
    last_outcome: str | None = None
    last_reason: str | None = None
    last_error: str | None = None
    last_error_code: str | None = None
    consecutive_failures: int | None = None  # read as an int (0 when unset): see failures
    fingerprint: str | None = None
    issued_at: float | None = None
    expires_at: float | None = None
    refresh_at: float | None = None
    next_attempt_at: float | None = None
    rejected_refresh_at: float | None = None

    @classmethod
    def from_hash(cls, data: dict[str, str] | None) -> StatusRecord:
        """Parse ``HGETALL``'s answer; unknown fields are ignored, bad values read unset."""
        if not data:
            return cls()
        out: dict[str, Any] = {}
        for f in fields(cls):
            raw = data.get(f.name)
            if f.name == CONSECUTIVE_FAILURES:
                out[f.name] = _int(raw)
            elif f.type == "float | None":
                out[f.name] = _float(raw)
            else:
                out[f.name] = raw or None
        return cls(**out)

    def to_hash(self, *, clear: tuple[str, ...] = ()) -> dict[str, str]:
        """The fields that are set, as Redis strings; ``clear`` names fields written as
        ``""`` (an unset that overwrites an old value in ``HSET``)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                if f.name in clear:
                    out[f.name] = ""
                continue
            out[f.name] = repr(value) if isinstance(value, float) else str(value)
        return out

    @property
    def failures(self) -> int:
        """Failed attempts in a row (0 when the record has none)."""
        return self.consecutive_failures or 0

    @staticmethod
    def field_names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(StatusRecord))
