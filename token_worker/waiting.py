"""``refresh --wait``: waiting until the refreshes the CLI asked for are published.

Split from :mod:`token_worker.tasks` (Celery wiring); reads Redis only, so it needs
no broker once the messages are sent.
"""

from __future__ import annotations

import time

from .config import Config, redact_url
from .exceptions import StoreError
from .status import read_statuses
from .store import TokenStore
from .tokens import TokenState

__all__ = ["wait_for_refresh"]


def _issued_at(store: TokenStore, profile: str, status_success: float | None) -> float | None:
    try:
        token = store.get_token(profile)
    except StoreError:
        # cannot decrypt here: the success time is when that refresh began, earlier still
        return status_success
    return token.issued_at if token is not None else None


def wait_for_refresh(config: Config, store: TokenStore, names: list[str], *, force: bool,
                     requested_at: float, timeout: float) -> dict[str, str]:
    """Wait until each profile's refresh is published, or the deadline passes.

    Forced: satisfied by a token issued at or after ``requested_at``. Not forced:
    satisfied once the token is valid: not due, and not reported rejected (a token the
    API refused must not satisfy a wait for its refresh). Woken by the publish
    notifications on the events channel, re-checked at least once a second.

    Returns:
        ``{profile: problem}`` for the profiles not satisfied at the deadline: what
        the status record reports, or that no worker answered.
    """
    deadline = time.monotonic() + timeout
    pending = list(names)

    def published() -> bool:
        nonlocal pending
        rows = {r.profile: r for r in read_statuses(config, store, pending)}
        if force:
            pending = [p for p in pending
                       if (_issued_at(store, p, rows[p].last_success_at) or 0) < requested_at]
        else:
            pending = [p for p in pending if rows[p].state is not TokenState.VALID]
        return not pending

    # status updates without a publish (failures) are caught by the re-check each second
    store.wait_for(published, deadline)
    if not pending:
        return {}
    rows = {r.profile: r for r in read_statuses(config, store, pending)}
    problems = {}
    for name in pending:
        row = rows[name]
        if row.last_attempt_at is None or row.last_attempt_at < requested_at:
            busy = store.lock_ttl(name) > 0
            problems[name] = (
                f"no worker answered within {timeout:g}s: no refresh attempt since the request"
                + (" (a refresh that began earlier still holds the lock)" if busy else
                   f"; is a worker consuming queue {config.celery.queue!r} on "
                   f"{redact_url(config.broker_url)}?"))
        elif row.last_error:
            problems[name] = (f"not published within {timeout:g}s; status reports: "
                              f"{row.last_error} ({row.consecutive_failures} consecutive "
                              f"failures)")
        else:
            problems[name] = (f"not published within {timeout:g}s; a worker attempted the "
                              f"refresh but status reports no error (still in progress?)")
    return problems
