"""``token-worker refresh`` through the workers (no ``--local``)."""

from __future__ import annotations

import pytest

from token_worker import TokenReader

from .conftest import THREE, Fleet

pytestmark = pytest.mark.integration


def _fingerprint(fleet: Fleet, profile: str = "payments") -> str:
    """The profile's token fingerprint, once every profile has its first token."""
    reader = TokenReader(fleet.redis_url, "stitch", cache=False)
    try:
        for name in THREE:
            reader.get(name, wait=60)
        return reader.get(profile).fingerprint
    finally:
        reader.close()


def test_forced_refresh_with_wait_through_the_workers(fleet: Fleet) -> None:
    # a long interval: after the first tick only the CLI's request refreshes anything
    config = fleet.config(interval=30)
    fleet.start_worker(config)
    before = _fingerprint(fleet)
    calls = fleet.emulator.calls

    result = fleet.cli(config, "refresh", "payments", "--force", "--wait", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "payments: published" in result.stdout
    assert _fingerprint(fleet) != before
    assert fleet.emulator.calls == calls + 1

    # not forced and still valid: satisfied at once, nothing requested
    result = fleet.cli(config, "refresh", "--all", "--wait", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert fleet.emulator.calls == calls + 1
    # the teardown leak check is live: a token anywhere in the corpus fails it
    with pytest.raises(AssertionError, match="tokens leaked"):
        fleet.assert_no_leaks(extra=f"oops {fleet.emulator.issued_tokens[-1]}")


def test_forced_refresh_reports_what_status_says_when_the_endpoint_refuses(
        fleet: Fleet) -> None:
    config = fleet.config(interval=30, retries=0)
    fleet.start_worker(config)
    _fingerprint(fleet)
    fleet.emulator.set_faults([{"mode": "oauth_error", "error": "invalid_grant"}])
    result = fleet.cli(config, "refresh", "payments", "--force", "--wait", "4")
    assert result.returncode == 1
    print(f"\n{result.stderr.strip()}")
    assert "invalid_grant" in result.stderr, result.stderr
    assert "no worker" not in result.stderr


def test_forced_refresh_without_a_worker_exits_1_saying_no_worker_answered(
        fleet: Fleet) -> None:
    config = fleet.config(interval=30)
    result = fleet.cli(config, "refresh", "payments", "refunds", "--force", "--wait", "3")
    assert result.returncode == 1
    print(f"\n{result.stderr.strip()}")
    assert "payments: FAILED: no worker answered" in result.stderr, result.stderr
    assert "refunds: FAILED: no worker answered" in result.stderr
    assert fleet.emulator.calls == 0
    # the request waits in the broker (until it expires), holding no secret or token
    queued = fleet.redis_server.client(db=1).lrange("tokens", 0, -1)
    assert len(queued) == 2
    assert all("token_worker.refresh_profile" in m for m in queued)
