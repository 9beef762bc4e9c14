"""What the demo shows: a live view on a terminal, plain lines in a log, and the keys.

On a terminal the view is redrawn in place every second (and at every event): the
status table, the payment tasks' counters, the event log of the breaks and the
worker's recent refreshes. Anywhere else (a pipe, CI, ``--log``) it prints one line a
second and one line per event, then the whole view once at the end. Fingerprints
only: nothing here ever sees a token.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import termios
import time
import tty
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from .cli_support import render_table
from .demo_breaks import BREAKS
from .demo_readers import PROFILE, TOKEN_WAIT, Tally
from .status import ProfileStatus

__all__ = ["KEY_HELP", "Keys", "Snapshot", "frame", "log_line", "refresh_lines", "summary"]

KEY_HELP = "keys: " + "  ".join(f"{b.key} {b.help}" for b in BREAKS.values()) + "  q quit"
EVENTS_SHOWN = 10
# the refreshes that called the endpoint (two beats make many "not_due" lines besides)
_refresh = re.compile(r"refresh profile=\S+ (outcome=(refreshed|failed)|retrying)")
REFRESHES_SHOWN = 5


@dataclass(frozen=True)
class Snapshot:
    """One moment of the demo, as the view and the log show it."""

    rows: list[ProfileStatus] | None  # None: Redis does not answer
    tally: Tally
    rate: float  # reads a second
    calls: int  # token endpoint calls so far
    served: str | None  # fingerprint of the token payments are sent with now
    active: str | None  # the break running, if any


def _stamp(when: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def _readers(s: Snapshot) -> str:
    t = s.tally
    return (f"reads/s {s.rate:.0f}  payments {t.payments}  misses {t.misses}  "
            f"401s {t.unauthorized} ({t.healed} retried with the replacement, "
            f"{t.rejected} returned)  "
            f"errors {t.errors}  token {s.served or '-'}")


def refresh_lines(paths: Iterable[Path], lines: int = REFRESHES_SHOWN) -> list[str]:
    """The workers' last refresh lines, oldest first (fingerprints, never tokens)."""
    found: list[tuple[str, str]] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        name = "w" + path.stem.rsplit("-", 1)[-1]  # worker-2.log: w2
        # "[2026-12-02 03:06:17,878: INFO/ForkPoolWorker-3] refresh profile=...": by time
        found += [(line[1:24], f"{line[12:20]} {name} {line.split('] ', 1)[-1]}")
                  for line in text if line.startswith("[") and _refresh.search(line)]
    return [shown for _, shown in sorted(found)[-lines:]]


def frame(s: Snapshot, *, where: str, events: Iterable[tuple[float, str]],
          logs: Iterable[Path], threads: int, keys: bool) -> str:
    """The whole view, as text."""
    help_ = KEY_HELP if keys else "(Ctrl-C to stop)"
    out = [f"token_worker demo  {_stamp()}  {help_}",
           f"{where}  endpoint calls {s.calls}", ""]
    out += [render_table(s.rows)] if s.rows is not None else ["(Redis does not answer)"]
    out += ["", f"payment tasks: {threads} threads, one TokenReader, POST /api with the "
                f"{PROFILE} token (reader.get(wait={TOKEN_WAIT:g}); a 401 is reported and "
                "retried once)",
            f"  {_readers(s)}",
            f"  break running: {s.active or 'none'}", "", "events:"]
    shown = list(events)[-EVENTS_SHOWN:]
    out += [f"  {_stamp(when)} {text}" for when, text in shown] or \
        ["  (none yet: press a key to break something)" if keys else "  (none)"]
    out += ["", "recent refreshes (worker logs):"]
    out += [f"  {line}" for line in refresh_lines(logs)] or ["  (none yet)"]
    return "\n".join(out)


def redraw(text: str) -> str:
    """``text`` drawn over the previous frame in place: home, each line cleared to its
    end, the rest of the screen cleared (no flicker of a full clear)."""
    return "\033[H" + "\n".join(f"{line}\033[K" for line in text.splitlines()) + "\033[J"


def log_line(s: Snapshot) -> str:
    """The once-a-second line of the log mode."""
    t = s.tally
    parts = [f"{_stamp()} reads/s={s.rate:.0f} payments={t.payments} misses={t.misses} "
             f"401s={t.unauthorized} healed={t.healed} errors={t.errors} calls={s.calls} "
             f"token={s.served or '-'}"]
    if s.rows is None:
        parts.append("redis=down")
    for r in s.rows or []:
        left = f"{r.expires_in:.0f}s" if r.expires_in is not None else "-"
        parts.append(f"{r.profile} {r.state} {left} {r.fingerprint or '-'}")
    if s.active:
        parts.append(f"break={s.active}")
    return " | ".join(parts)


def event_line(text: str) -> str:
    return f"{_stamp()} event {text}"


def summary(t: Tally, seconds: float, threads: int, results: list[str]) -> str:
    rate = t.reads / seconds if seconds > 0 else 0.0
    line = (f"demo summary: {threads} payment tasks made {t.payments} payments "
            f"({rate:.0f} reads/s), {t.misses} misses, {t.unauthorized} 401s "
            f"({t.healed} retried once with the replacement, {t.rejected} returned as 401), "
            f"{t.errors} errors")
    return line + (f"; breaks: {', '.join(results)}" if results else "")


class Keys:
    """Single key presses from a terminal (cbreak: no Enter, no echo, Ctrl-C still
    interrupts); without a terminal, :meth:`read` only waits."""

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdin
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if stream.isatty():
                self.fd = stream.fileno()
        self._saved: list[Any] | None = None
        self._restore: int | None = None

    @property
    def enabled(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> Keys:
        if self.fd is not None:
            try:
                self._saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
                self._restore = self.fd
            except termios.error:
                self.fd = None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._restore is not None and self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._restore, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> str:
        """The keys pressed within ``timeout`` seconds ("" when none; at once without
        a terminal)."""
        if self.fd is None:
            return ""
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            data = os.read(self.fd, 64) if ready else b""
        except OSError:  # the terminal went away (EIO): no more keys, SIGHUP follows
            data, ready = b"", [self.fd]
        if ready and not data:
            self.fd = None
        return data.decode(errors="ignore")
