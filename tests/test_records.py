"""The status record: one typed value, parsed leniently, written with its names once."""

from __future__ import annotations

import math

from token_worker import records, scripts
from token_worker.records import StatusRecord


def test_a_record_round_trips_through_the_hash() -> None:
    rec = StatusRecord(last_success_at=1.5, last_outcome="refreshed", consecutive_failures=0,
                       fingerprint="ab12", issued_at=1.5, expires_at=901.5, refresh_at=600.25)
    data = rec.to_hash()
    assert data == {"last_success_at": "1.5", "last_outcome": "refreshed",
                    "consecutive_failures": "0", "fingerprint": "ab12", "issued_at": "1.5",
                    "expires_at": "901.5", "refresh_at": "600.25"}
    assert StatusRecord.from_hash(data) == rec


def test_clear_writes_empty_strings_that_read_back_as_unset() -> None:
    data = StatusRecord(last_outcome="refreshed").to_hash(clear=("last_error", "last_reason"))
    assert data == {"last_outcome": "refreshed", "last_error": "", "last_reason": ""}
    rec = StatusRecord.from_hash(data)
    assert rec.last_error is None and rec.last_reason is None


def test_hand_edited_or_hostile_values_read_as_unset_never_raise() -> None:
    rec = StatusRecord.from_hash({
        "last_success_at": "yesterday", "issued_at": "nan", "expires_at": "inf",
        "refresh_at": "-inf", "consecutive_failures": "lots", "unknown_field": "x",
        "rejected_refresh_at": "1e400",
    })
    assert rec.last_success_at is None and rec.issued_at is None
    assert rec.expires_at is None and rec.refresh_at is None
    assert rec.rejected_refresh_at is None
    assert rec.failures == 0
    assert StatusRecord.from_hash({"consecutive_failures": "-3"}).failures == 0
    assert StatusRecord.from_hash({"consecutive_failures": "2.0"}).failures == 2
    assert StatusRecord.from_hash(None) == StatusRecord() == StatusRecord.from_hash({})
    assert not any(isinstance(v, float) and not math.isfinite(v)
                   for v in StatusRecord.from_hash({"expires_at": "inf"}).to_hash().values())


def test_the_scripts_name_the_fields_through_the_record_module() -> None:
    # no placeholder is left, and each field the Lua reads is one the record has
    names = set(StatusRecord.field_names())
    for name in ("ISSUED_AT", "LAST_ERROR_CODE", "CONSECUTIVE_FAILURES", "FINGERPRINT",
                 "REJECTED_REFRESH_AT"):
        assert getattr(records, name) in names
    for lua in (scripts.PUBLISH, scripts.FAIL, scripts.DUE):
        assert "$" not in lua
    assert f"'{records.ISSUED_AT}'" in scripts.PUBLISH
    assert f"'{records.REJECTED_REFRESH_AT}'" in scripts.DUE
