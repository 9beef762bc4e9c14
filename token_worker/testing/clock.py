"""A clock that moves only when told: deterministic tests of deadlines and backoffs."""

from __future__ import annotations

import threading

from ..clock import Clock

__all__ = ["ManualClock"]


class ManualClock:
    """Wall and monotonic time that advance together, by :meth:`advance` or ``sleep``.

    ``clock`` is the :class:`~token_worker.clock.Clock` to pass to a refresher or a
    reader. ``sleep`` returns at once, having moved time on (and records how long).
    """

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._wall = wall
        self._monotonic = monotonic
        self.sleeps: list[float] = []
        self.clock = Clock(wall=self.wall, monotonic=self.monotonic, sleep=self.sleep)

    def wall(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds
            self._monotonic += seconds

    def step_wall(self, seconds: float) -> None:
        """Move only the wall clock (an NTP step, a skewed host): monotonic goes on."""
        with self._lock:
            self._wall += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
