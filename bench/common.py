"""Shared parts of the benchmarks: result rows, private servers, statistics, the table.

Every figure is reported next to a baseline measured in the same run, as a ratio, so
a noisy or slow machine moves both and the ratio stays meaningful. Servers are private
(a redis-server on a free port, the emulator on 127.0.0.1); nothing here touches the
shared Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from token_worker.testing import RedisServer, Worker, celery_worker, free_port, worker_env
from token_worker.testing.workers import child_pids

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "RedisServer", "Row", "Worker", "bench_worker", "child_pids", "free_port",
           "kill_tree", "machine", "percentile", "print_rows", "redis_server", "spawn", "table"]


@dataclass
class Row:
    """One line of the table: a measured value against its same-run baseline.

    ``ratio`` is value / baseline unless given (e.g. "x faster" rows give it inverted
    and say so in ``unit``). ``met`` is None when the row carries no target.
    """

    bench: str
    measure: str
    value: float
    baseline: float
    baseline_name: str
    unit: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None:
            self.ratio = self.value / self.baseline if self.baseline else float("nan")


def fmt(x: float, unit: str = "") -> str:
    if x != x:  # nan
        return "n/a"
    if unit == "us":
        return f"{x:.2f} µs" if x < 10 else f"{x:.0f} µs"
    if unit == "ms":
        return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"
    if unit == "s":
        return f"{x:.2f} s"
    if unit == "MiB":
        return f"{x:.1f} MiB"
    if unit == "KiB":
        return f"{x:.0f} KiB"
    if unit:
        return f"{x:g} {unit}" if abs(x) >= 100 or x == int(x) else f"{x:.2f} {unit}"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    head = ["benchmark", "measure", "value", "baseline (same run)", "ratio", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.ratio is None or r.ratio != r.ratio:
            ratio = "n/a"
        else:
            ratio = f"{r.ratio:.2f}x" if r.ratio >= 0.1 else f"{r.ratio:.2g}x"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        measure = r.measure + (f" ({r.note})" if r.note else "")
        lines.append("| " + " | ".join([
            r.bench, measure, fmt(r.value, r.unit),
            f"{fmt(r.baseline, r.unit)} {r.baseline_name}".strip(), ratio, r.target, met,
        ]) + " |")
    return "\n".join(lines)


def print_rows(rows: Sequence[Row]) -> None:
    print(table(rows), flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted sequence."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def redis_server(*extra_args: str) -> RedisServer:
    """A private redis-server for a ``with`` block (stopped even on error)."""
    return RedisServer(extra_args=list(extra_args))


def spawn(args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, so :func:`kill_tree` takes all of it."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(args, env=env, cwd=cwd or REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def kill_tree(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphans of a dead leader
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def discard(path: Path) -> None:
    """Remove a run's temporary directory (worker logs, configs) unless $BENCH_KEEP is set."""
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(path, ignore_errors=True)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        redis_version = out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        redis_version = "unknown"
    import celery
    import redis

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis-server": redis_version,
        "redis-py": redis.__version__,
        "celery": celery.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def bench_worker(app: str, queues: str, env: dict[str, str], workdir: Path, name: str,
                 *, pool: str = "prefork", concurrency: int = 1, beat: bool = False) -> Worker:
    """A ``celery worker`` subprocess (no heartbeats: steadier CPU figures), not waited for.

    ``env`` is added to this process's environment; ``bench.*`` apps import from the repo.
    """
    return celery_worker(workdir, name, app=app, queues=queues, pool=pool,
                         concurrency=concurrency, beat=beat, heartbeat=False,
                         env=worker_env(env, pythonpath=[REPO]))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes, in seconds (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over the processes (PSS shares forked pages fairly)."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def run_alone(run: Callable[[bool], Sequence[Row]], doc: str | None) -> None:
    """``python -m bench.NAME [--quick]``: run one benchmark and print its rows."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    print_rows(run(ap.parse_args().quick))


class Reads:
    """A reader thread reading random profiles (no cache) until stopped, as a payment task
    would: every ``TokenUnavailable`` is a miss."""

    def __init__(self, url: str, prefix: str, names: Sequence[str], every: float = 0.01
                 ) -> None:
        import random
        import threading

        from token_worker import TokenReader, TokenUnavailable

        self.reads = self.misses = 0
        self.why: list[str] = []  # the first misses: profile, reason, message
        self._stop = threading.Event()
        reader = TokenReader(url, prefix, min_ttl=0, cache=False)
        rng = random.Random(0)
        order = list(names)

        def run() -> None:
            while not self._stop.wait(every):
                profile = rng.choice(order)
                try:
                    reader.get(profile)
                    self.reads += 1
                except TokenUnavailable as exc:
                    self.misses += 1
                    if len(self.why) < 5:
                        self.why.append(f"{time.monotonic():.2f} {profile} {exc.reason}: {exc}")
            reader.close()

        self._thread = threading.Thread(target=run, name="bench-reads", daemon=True)
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        """(reads, misses)."""
        self._stop.set()
        self._thread.join(10)
        return self.reads, self.misses
