"""The clocks a refresher and a reader run on, passed in rather than patched.

Stdlib only. :data:`SYSTEM` binds the real functions when this module is imported, so a
library that patches ``time`` later (freezegun in an application's own tests) cannot
move a reader's deadlines: a test that wants another clock passes one
(:class:`token_worker.testing.clock.ManualClock`).

The fleet's wall clock is Redis ``TIME`` (:meth:`TokenStore.time`): ``wall`` here is
this host's, used only where no Redis answer exists (a message about an age while
Redis is down). Deadlines, cache ages and durations use ``monotonic``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SYSTEM", "Clock"]


@dataclass(frozen=True, slots=True)
class Clock:
    """``wall`` (Unix seconds), ``monotonic`` (seconds) and ``sleep``."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


SYSTEM = Clock()
