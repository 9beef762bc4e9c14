"""Beat's plan for the refreshes it claimed: what goes out together, and when.

Pure decisions, no I/O: :func:`token_worker.tasks` sends what :func:`plan_sends`
returns. A claimed refresh runs at its due time (the message's countdown), never
earlier, so calls follow the schedule's spread instead of arriving in waves at each
tick. Refreshes due in the same short window go out as one batch when the window holds
many (a cold fleet, a Redis restarted empty): one Celery task then refreshes several
profiles, which is what a refresh's CPU was mostly spent on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .constants import MAX_BATCH
from .store_claims import Claim

__all__ = ["BATCH_THREADS", "MAX_BATCH", "TARGET_TASKS", "Send", "batch_size", "plan_sends"]

# a window of due refreshes is split into about this many tasks before batching: enough
# to keep every worker process of a large fleet busy
TARGET_TASKS = 64
# refreshes one batch task runs at once (each under its own lock)
BATCH_THREADS = 4
# refreshes due within this long of each other may share a task (it runs at the last
# one's due time: late by at most this, never early)
WINDOW_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Send:
    """One message: these profiles' refreshes, ``countdown`` seconds from now."""

    profiles: tuple[str, ...]
    countdown: float


def batch_size(backlog: int) -> int:
    """Profiles per task for a window holding ``backlog`` due refreshes: one until the
    window outnumbers :data:`TARGET_TASKS`, then enough to keep it near that many tasks."""
    return max(1, min(MAX_BATCH, math.ceil(backlog / TARGET_TASKS)))


def plan_sends(claims: Iterable[Claim], now: float, *, window: float = WINDOW_SECONDS,
               max_batch: int = MAX_BATCH) -> list[Send]:
    """The messages for ``claims``, made at ``now`` (fleet clock).

    A claim that lapsed unreleased (its message was lost: a worker killed, or one of an
    older version that does not know the batch task) goes out alone, as the one-profile
    task every version takes. ``max_batch`` caps :func:`batch_size` (``refresh.max_batch``;
    1 sends no batch at all).
    """
    sends: list[Send] = []
    pending: list[Claim] = []
    for claim in sorted(claims, key=lambda c: (c.runs_at, c.profile)):
        if claim.lapsed:
            sends.append(Send((claim.profile,), max(0.0, claim.runs_at - now)))
        else:
            pending.append(claim)
    group: list[Claim] = []
    for claim in pending:
        if group and claim.runs_at > group[0].runs_at + window:
            sends.extend(_split(group, now, max_batch))
            group = []
        group.append(claim)
    if group:
        sends.extend(_split(group, now, max_batch))
    return sends


def _split(group: list[Claim], now: float, max_batch: int) -> list[Send]:
    size = max(1, min(max_batch, batch_size(len(group))))
    if size == 1:
        return [Send((c.profile,), max(0.0, c.runs_at - now)) for c in group]
    runs_at = group[-1].runs_at  # the latest in the window: no refresh runs before it is due
    return [Send(tuple(c.profile for c in group[i:i + size]), max(0.0, runs_at - now))
            for i in range(0, len(group), size)]
