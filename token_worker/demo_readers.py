"""The demo's payment tasks: threads doing what a payment task does with a token.

Each thread takes the current ``payments`` token from one shared :class:`TokenReader`
(as every task of one process would, waiting up to :data:`TOKEN_WAIT` when there is
none to take at once) and POSTs to the emulator's ``/api``, which answers 401 to an
expired or revoked token; the ``requests`` auth (:class:`.auth.BearerAuth`) reports
such a 401 and sends once more with the fleet's replacement. The threads count what they saw and
which token fingerprints they were served; no token outlives one request here, and
none is ever printed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, fields
from pathlib import Path

import requests

from .auth import BearerAuth
from .exceptions import StoreError, TokenUnavailable
from .reader import TokenReader
from .tokens import Token

__all__ = ["PROFILE", "PaymentTasks", "Tally"]

log = logging.getLogger("token_worker.demo")

PROFILE = "payments"
THREADS = 8
PAUSE_SECONDS = 0.1  # between one thread's payments: ~80 payments a second in all
# a payment waits this long for a token when there is none to take now (the moment
# between a 401 report and its replacement): a miss is one that found none in time
TOKEN_WAIT = 5.0
FIRST_TOKEN_WAIT = 2.0  # before the first token (the worker is starting) nothing counts
API_TIMEOUT = 5.0


@dataclass(frozen=True)
class Tally:
    """What the payment tasks saw, counted since they started."""

    payments: int = 0  # the API answered 200 (after a 401 and a retry, for ``healed``)
    reads: int = 0  # tokens the reader handed out (a 401's replacement counts too)
    misses: int = 0  # a payment found no token to send within TOKEN_WAIT
    healed: int = 0  # answered 401, then 200 with the replacement
    rejected: int = 0  # the 401 came back to the task (no replacement in time)
    errors: int = 0  # the API unreachable, or another status

    def minus(self, earlier: Tally) -> Tally:
        return Tally(**{f.name: getattr(self, f.name) - getattr(earlier, f.name)
                        for f in fields(self)})

    @property
    def unauthorized(self) -> int:
        """Payments that got a 401 first, healed or not."""
        return self.healed + self.rejected


class _Counting:
    """The reader as the auth object sees it: a payment task's ``reader.get(profile,
    wait=TOKEN_WAIT)``, counting what it hands out."""

    def __init__(self, reader: TokenReader, tasks: PaymentTasks) -> None:
        self._reader, self._tasks = reader, tasks

    def get(self, profile: str, wait: float | None = None) -> Token:
        token = self._reader.get(profile, TOKEN_WAIT if wait is None else wait)
        self._tasks._served(token.fingerprint)
        return token

    def report_rejected(self, profile: str, token: Token | str) -> bool:
        return self._reader.report_rejected(profile, token)


class PaymentTasks:
    """``threads`` payment tasks sharing one reader, until :meth:`stop`.

    Args:
        config_path: the demo's config (the reader takes its Redis settings and each
            profile's ``min_ttl`` from it, as ``TokenReader.from_config`` does anywhere).
        api_url: the API that checks the bearer token.
    """

    def __init__(self, config_path: Path, api_url: str, threads: int = THREADS,
                 pause: float = PAUSE_SECONDS) -> None:
        self.api_url, self.threads, self.pause = api_url, threads, pause
        self.reader = TokenReader.from_config(str(config_path))
        self.ready = threading.Event()  # set by the first payment answered 200
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._served_fps: Counter[str] = Counter()
        self._rates: deque[tuple[float, int]] = deque(maxlen=8)
        self._threads: list[threading.Thread] = []

    def start(self) -> PaymentTasks:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"demo-payment-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the threads (each finishes its payment) and close the reader."""
        self._stop.set()
        for thread in self._threads:
            thread.join(API_TIMEOUT * 3)
        self.reader.close()

    def tally(self) -> Tally:
        with self._lock:
            return Tally(**{f.name: self._counts[f.name] for f in fields(Tally)})

    def served(self) -> Counter[str]:
        """Reads so far per token fingerprint."""
        with self._lock:
            return Counter(self._served_fps)

    def reads_per_second(self) -> float:
        """Reads a second over the last few calls of this (one a frame)."""
        now, reads = time.monotonic(), self.tally().reads
        self._rates.append((now, reads))
        (t0, r0), (t1, r1) = self._rates[0], self._rates[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0

    def current(self) -> Token | None:
        """The token a payment would send now, or None."""
        try:
            return self.reader.get(PROFILE)
        except (TokenUnavailable, StoreError):
            return None

    # -- the threads ----------------------------------------------------------------------

    def _served(self, fp: str) -> None:
        with self._lock:
            self._counts["reads"] += 1
            self._served_fps[fp] += 1

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1
            if outcome == "healed":  # answered 200 in the end
                self._counts["payments"] += 1

    def _run(self) -> None:
        # before the first token is published there is nothing to miss
        while not self._stop.is_set() and not self.ready.is_set():
            try:
                self.reader.get(PROFILE, wait=FIRST_TOKEN_WAIT)
                break
            except (TokenUnavailable, StoreError):
                continue
        auth = BearerAuth(_Counting(self.reader, self), PROFILE)
        with requests.Session() as session:
            while not self._stop.is_set():
                self._count(self._pay(session, auth))
                self._stop.wait(self.pause)

    def _pay(self, session: requests.Session, auth: BearerAuth) -> str:
        try:
            reply = session.post(self.api_url, auth=auth,
                                 json={"amount": 100, "currency": "ZAR"}, timeout=API_TIMEOUT)
        except TokenUnavailable as exc:
            log.warning("payment found no token: %s", exc.reason)
            return "misses"
        except requests.RequestException as exc:
            log.warning("payment could not reach the API: %s", type(exc).__name__)
            return "errors"
        if reply.status_code == 200:
            self.ready.set()
            return "healed" if any(r.status_code == 401 for r in reply.history) else "payments"
        return "rejected" if reply.status_code == 401 else "errors"
