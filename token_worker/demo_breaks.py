"""The demo's breaks: endpoint outage, Redis restart, worker kill, 401 storm.

One break runs at a time, started by a key or by ``--break``'s script. Each one does
its damage, watches until the fleet has recovered (or gives up after ``limit``
seconds), and says in the event log what the payment tasks saw meanwhile: how many
payments, misses and 401s, which token fingerprints they were served, and how many
calls the token endpoint got. Fingerprints only: no token is ever written here.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING, ClassVar, Protocol

from .demo_readers import PROFILE, PaymentTasks

if TYPE_CHECKING:
    from .testing import Emulator

__all__ = ["BREAKS", "KEYS", "Break", "Breaker", "Rig", "parse_breaks"]

SETTLE_SECONDS = 1.0  # between scripted breaks: the view shows the calm in between
STRAGGLERS_SECONDS = 0.5  # a storm's in-flight payments finish before it is summed up


class Rig(Protocol):
    """What the breaks act on: the demo's emulator, payment tasks, Redis and worker."""

    emulator: Emulator
    tasks: PaymentTasks
    lifetime: float
    scopes: dict[str, str]  # profile -> its scopes as one string (the emulator counts so)

    def fingerprints(self) -> dict[str, str | None]:
        """Each profile's token fingerprint in Redis now (None: no token); empty while
        Redis does not answer."""

    def refresh_in(self) -> float | None:
        """Seconds until the payments token is due for refresh, when known."""

    def redis_unavailable(self) -> str | None:
        """Why Redis cannot be restarted here, or None when it can."""

    def restart_redis(self) -> None:
        """Kill the private redis-server and start it again (empty); returns once it
        answers."""

    def kill_worker(self) -> int:
        """SIGKILL the worker's process group and start another; the killed pid."""

    def worker_ready(self) -> int | None:
        """The pid of the worker once it is ready, else None."""


class Break:
    """One break: :meth:`begin` does the damage, :meth:`poll` watches the recovery."""

    name: ClassVar[str]
    key: ClassVar[str]
    help: ClassVar[str]
    limit: float = 30.0  # seconds before it counts as not recovered

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.started = time.monotonic()
        self._tally = rig.tasks.tally()
        self._served = rig.tasks.served()
        self._stats = rig.emulator.stats()

    @staticmethod
    def unavailable(rig: Rig) -> str | None:
        """Why this break cannot be done in this demo, or None."""
        return None

    def begin(self) -> str:
        raise NotImplementedError

    def poll(self, now: float) -> tuple[list[str], bool]:
        """(event lines, whether it is over)."""
        raise NotImplementedError

    def press(self) -> str | None:
        """Its key pressed again while it runs: an event line, or None (ignored)."""
        return None

    def cancel(self) -> None:
        """Undo what is still in effect (the demo is stopping)."""

    # -- what it costs and what readers saw ------------------------------------------------

    def calls(self, profile: str | None = None) -> int:
        """Token endpoint calls since it began (for one profile, when given)."""
        stats = self.rig.emulator.stats()
        if profile is None:
            return int(stats["calls"]) - int(self._stats["calls"])
        scope = self.rig.scopes[profile]
        return int(stats["by_scope"].get(scope, 0)) - int(self._stats["by_scope"].get(scope, 0))

    def fingerprint(self) -> str | None:
        return self.rig.fingerprints().get(PROFILE)

    def new_fingerprints(self) -> list[str]:
        """Fingerprints served since it began, oldest first."""
        served: Counter[str] = self.rig.tasks.served()
        served.subtract(self._served)
        return [fp for fp, n in served.items() if n > 0]

    def readers(self) -> str:
        t = self.rig.tasks.tally().minus(self._tally)
        fps = self.new_fingerprints()
        if not fps:
            source = "served nothing"
        elif len(fps) == 1:
            source = f"served the current token {fps[0]}"
        else:
            source = "served " + ", then ".join(fps)
        line = f"readers: {t.payments} payments, {t.misses} misses, {t.unauthorized} 401s"
        if t.unauthorized:
            line += f" ({t.healed} retried once with the replacement)"
        return f"{line}, {source}"


class Outage(Break):
    """The token endpoint answers 503 across the payments refresh, then comes back."""

    name, key, help = "outage", "o", "endpoint outage"

    def begin(self) -> str:
        lifetime = self.rig.lifetime
        due = self.rig.refresh_in()
        # long enough to cover the payments refresh, short enough that its token (and
        # every other profile's, see the demo's margins) outlives it and one retry
        self.seconds = min(max(lifetime / 5, (due or 0.0) + lifetime / 10), lifetime / 2)
        self.limit = self.seconds + lifetime
        self.back: float | None = None
        self.waiting: dict[str, str | None] = {}  # refused profile -> fingerprint at the end
        self.rig.emulator.set_faults([{"mode": "http_error", "status": 503}])
        when = f" (payments due in {due:.0f} s)" if due is not None and due > 0 else ""
        return f"the token endpoint answers 503 for {self.seconds:.0f} s{when}"

    def press(self) -> str | None:
        if self.back is None:
            self.seconds = time.monotonic() - self.started  # ends on the next poll
            return "ending the outage now"
        return None

    def poll(self, now: float) -> tuple[list[str], bool]:
        if self.back is None:
            if now - self.started < self.seconds:
                return [], False
            self.rig.emulator.set_faults([])
            self.back = now
            fps = self.rig.fingerprints()
            refused = {p: self.calls(p) for p in self.rig.scopes}
            self.waiting = {p: fps.get(p) for p, n in refused.items() if n}
            line = f"endpoint back after {now - self.started:.1f} s; {self.calls()} refresh " \
                   "calls refused"
            if not self.waiting:
                return [f"{line} (none fell due); {self.readers()}"], True
            return [f"{line} ({', '.join(sorted(self.waiting))})"], False
        fps = self.rig.fingerprints()
        if any(fps.get(p) in (None, old) for p, old in self.waiting.items()):
            return [], False
        return [f"recovered {now - self.back:.1f} s after: {', '.join(sorted(self.waiting))} "
                f"refreshed; {self.readers()}"], True

    def cancel(self) -> None:
        self.rig.emulator.set_faults([])


class RedisRestart(Break):
    """The private redis-server killed and started again, empty."""

    name, key, help = "redis", "r", "restart Redis"

    @staticmethod
    def unavailable(rig: Rig) -> str | None:
        return rig.redis_unavailable()

    def begin(self) -> str:
        self.rig.restart_redis()
        self.answered = time.monotonic()
        return f"redis-server killed (SIGKILL) and started again, empty; answering in " \
               f"{self.answered - self.started:.2f} s"

    def poll(self, now: float) -> tuple[list[str], bool]:
        fp = self.fingerprint()
        if fp is None:
            return [], False
        return [f"recovered in {now - self.answered:.1f} s: tokens back in Redis (endpoint "
                f"calls: {self.calls()}); {self.readers()}"], True


class WorkerKill(Break):
    """The worker, its pool and its beat killed with SIGKILL; the demo starts another."""

    name, key, help = "kill", "k", "kill worker"
    limit = 90.0  # a Celery worker starting on a busy machine

    def begin(self) -> str:
        pid = self.rig.kill_worker()
        return f"worker pid {pid} killed with SIGKILL (its pool and beat too); the other " \
               "carries on; starting a new one"

    def poll(self, now: float) -> tuple[list[str], bool]:
        pid = self.rig.worker_ready()
        if pid is None:
            return [], False
        return [f"recovered in {now - self.started:.1f} s: worker pid {pid} ready; "
                f"{self.readers()}"], True


class Storm(Break):
    """The current payments token revoked at the API: every payment gets a 401."""

    name, key, help = "401", "4", "401 storm"

    def begin(self) -> str:
        token = self.rig.tasks.current()
        self.replaced: float | None = None
        self.cost = 0
        self.fp = token.fingerprint if token is not None else None
        if token is None:
            return "no payments token to revoke yet"
        self.rig.emulator.revoke(token.access_token)
        return f"revoked the payments token {self.fp} at the API: payments sending it get 401"

    def poll(self, now: float) -> tuple[list[str], bool]:
        if self.fp is None:
            return [], True
        if self.replaced is None:
            if any(fp != self.fp for fp in self.new_fingerprints()):
                # counted now: a scheduled refresh of payments later on is no part of it
                self.replaced, self.cost = now, self.calls(PROFILE)
            return [], False
        if now - self.replaced < STRAGGLERS_SECONDS:
            return [], False
        t = self.rig.tasks.tally().minus(self._tally)
        new = next(fp for fp in self.new_fingerprints() if fp != self.fp)
        return [f"recovered in {self.replaced - self.started:.1f} s: replacement {new}, "
                f"endpoint calls: {self.cost}; readers: {t.payments} payments, "
                f"{t.misses} misses, {t.unauthorized} 401s, {t.healed} retried once with "
                "the replacement"], True


BREAKS: dict[str, type[Break]] = {b.name: b for b in (Outage, RedisRestart, WorkerKill, Storm)}
KEYS: dict[str, str] = {b.key: b.name for b in BREAKS.values()}


def parse_breaks(spec: str) -> list[str]:
    """``"outage,redis,kill,401"`` as a list of break names, in order.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [n for n in names if n not in BREAKS]
    if unknown or not names:
        raise ValueError(f"expected a comma-separated list of {', '.join(BREAKS)}")
    return names


class Breaker:
    """Runs breaks one at a time, from keys or a script, and keeps the event log.

    Args:
        rig: what the breaks act on.
        script: break names to run in order, each :data:`SETTLE_SECONDS` after the
            previous one recovered, the first once the payment tasks are paying.
    """

    def __init__(self, rig: Rig, script: list[str] | None = None) -> None:
        self.rig = rig
        self.script = list(script or [])
        self.scripted = bool(self.script)
        self.active: Break | None = None
        self.events: deque[tuple[float, str]] = deque(maxlen=200)
        self.unread: list[str] = []  # event lines not yet printed by a log
        self.failed: list[str] = []
        self._calm_since = time.monotonic()

    def emit(self, text: str) -> None:
        self.events.append((time.time(), text))
        self.unread.append(text)

    def drain(self) -> list[str]:
        lines, self.unread = self.unread, []
        return lines

    @property
    def script_done(self) -> bool:
        """A script was given and every break in it is over."""
        return self.scripted and not self.script and self.active is None

    def press(self, name: str) -> None:
        """A break's key: start it, or tell its running self (an outage ends early)."""
        active = self.active
        if active is None:
            self.start(name)
        elif active.name == name:
            line = active.press()
            if line:
                self.emit(f"{name}: {line}")
        else:
            self.emit(f"{name}: wait, the {active.name} break is still running")

    def start(self, name: str) -> None:
        kind = BREAKS[name]
        why = kind.unavailable(self.rig)
        if why is not None:
            self.emit(f"{name}: unavailable: {why}")
            self._calm_since = time.monotonic()
            return
        self.active = kind(self.rig)
        self.emit(f"{name}: {self.active.begin()}")

    def tick(self) -> None:
        now = time.monotonic()
        active = self.active
        if active is not None:
            lines, done = active.poll(now)
            for line in lines:
                self.emit(f"{active.name}: {line}")
            if not done and now - active.started > active.limit:
                self.emit(f"{active.name}: NOT recovered after {active.limit:.0f} s; "
                          f"{active.readers()}")
                active.cancel()
                self.failed.append(active.name)
                done = True
            if done:
                self.active, self._calm_since = None, now
        elif self.script and self.rig.tasks.ready.is_set() and \
                now - self._calm_since >= SETTLE_SECONDS:
            self.start(self.script.pop(0))

    def cancel(self) -> None:
        if self.active is not None:
            self.active.cancel()
