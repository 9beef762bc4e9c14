"""``token-worker demo`` as a script runs it (log mode, ``--break``) and as a person does
(a terminal, under tmux, with keys): every break recovers, no payment misses a token,
and nothing it started outlives it."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from token_worker.store import connect_redis
from token_worker.testing import free_port
from token_worker.testing.workers import child_pids

from .conftest import Fleet, subprocess_env

pytestmark = pytest.mark.integration

LIFETIME = "10"  # outages of 2 to 5 s, a refresh every few seconds
TOKEN = re.compile(r"emu_[A-Za-z0-9_-]{20,}")  # what the emulator issues


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (this container's init may never reap the
    orphans of a worker killed with SIGKILL)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _pids(out: str) -> list[int]:
    """Every worker pid the demo named: the first two, and the ones it started later."""
    first = re.search(r"demo: workers pid (\d+) and pid (\d+)", out)
    assert first, out[-2000:]
    return [int(first[1]), int(first[2]), *map(int, re.findall(r"worker pid (\d+) ready", out))]


def test_scripted_breaks_in_log_mode_serve_every_payment(fleet: Fleet) -> None:
    # the configured (shared) Redis: the demo may not restart it, and must say so
    config = fleet.config()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "token_worker", "--config", str(config), "demo",
         "--lifetime", LIFETIME, "--break", "outage,redis,401,kill"],
        capture_output=True, text=True, timeout=150, env=subprocess_env(), cwd=fleet.tmp)
    took = time.monotonic() - started
    out = result.stdout
    fleet.outputs.append(out + result.stderr)
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    events = [line.split(" event ", 1)[1] for line in out.splitlines() if " event " in line]
    print(f"\ndemo with four scripted breaks: {took:.1f}s\n" + "\n".join(events))
    # one line a second, and no payment ever without a token
    ticks = [line for line in out.splitlines() if " reads/s=" in line]
    assert len(ticks) >= 10, out[-2000:]
    assert all(" misses=0 " in line for line in ticks), [t for t in ticks if "misses=0" not in t]
    assert re.search(r"reads/s=[1-9]\d* payments=\d+", out), "the payment tasks never paid"
    # what readers saw through each break
    assert re.search(r"^outage: the token endpoint answers 503 for \d+ s", events[0])
    assert any(re.match(r"outage: endpoint back after [\d.]+ s; [1-9]\d* refresh calls refused",
                        e) for e in events), events
    assert any(re.match(r"outage: recovered [\d.]+ s after: .*payments.* refreshed; readers: "
                        r"\d+ payments, 0 misses, 0 401s, served ", e) for e in events), events
    assert "redis: unavailable: the demo uses the configured Redis" in out
    assert any(re.match(r"401: recovered in [\d.]+ s: replacement [0-9a-f]{12}, endpoint "
                        r"calls: 1; readers: \d+ payments, 0 misses, [1-9]\d* 401s, "
                        r"(\d+) retried once", e) for e in events), events
    assert any(re.match(r"kill: recovered in [\d.]+ s: worker pid \d+ ready; readers: \d+ "
                        r"payments, 0 misses", e) for e in events), events
    assert re.search(r"demo summary: 8 payment tasks made [1-9]\d* payments .*, 0 misses", out)
    assert "demo stopped: workers exited with status 0, 0; emulator stopped" in out
    # fingerprints only, and nothing of the demo left behind
    assert not TOKEN.search(out + result.stderr)
    assert all(_gone(pid) for pid in _pids(out))
    workdir = re.search(r"logs (\S+)/worker-\*\.log", out)
    assert workdir and not Path(workdir[1]).exists()
    assert fleet.store_client().keys("demo:*") == []
    assert fleet.store_client().keys("*token_worker_demo*") == []
    assert fleet.store_client().keys("stitch:*") == []


# -- under tmux, as a person uses it --------------------------------------------------------

class Tmux:
    """A tmux server of its own (``-L``), one session running a command in a pane."""

    def __init__(self, tmp: Path, command: str, width: int = 220, height: int = 60) -> None:
        self.socket = f"tw-demo-{uuid.uuid4().hex[:8]}"
        conf = tmp / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 5000\n")
        self.base = ["tmux", "-L", self.socket, "-f", str(conf)]
        self.pids: list[int] = []  # what the demo started, once looked at
        self.run("new-session", "-d", "-s", "demo", "-x", str(width), "-y", str(height),
                 command)

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", "demo")

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", "demo", fmt).strip()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            found = re.search(pattern, screen, re.M)
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(f"{pattern!r} not on the screen within {timeout:g}s:\n{screen}")

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)

    def reap(self) -> None:
        """SIGKILL whatever the demo left (a failed test must not leave a fleet behind)."""
        for pid in self.pids:
            # still the process it was (a pid can be reused), and not yet gone
            if _gone(pid) or not any(n in _cmdline(pid) for n in ("token_worker", "redis")):
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:  # a worker leads its own group: pool and beat too
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[Tmux]]:
    assert shutil.which("tmux"), "tmux is not installed (scripts/bootstrap installs it)"
    made: list[Tmux] = []
    try:
        yield made
    finally:
        for t in made:
            t.kill()
            t.reap()


def _demo_in_tmux(tmp_path: Path, tmux: list[Tmux]) -> Tmux:
    """The demo in a tmux pane, with no config, a clean environment and a
    ``$TOKEN_WORKER_REDIS_URL`` where nothing answers, its payments under way."""
    # the override must not send its store and readers back to the dead URL
    env = subprocess_env(TOKEN_WORKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    exports = " ".join(shlex.quote(f"{k}={env[k]}") for k in
                       ("PATH", "PYTHONPATH", "HOME", "TOKEN_WORKER_REDIS_URL") if k in env)
    # the shell reports the exit status: tmux (3.3a) does not always reap its pane's
    # process after another tmux server of this test run was killed
    command = f"cd {shlex.quote(str(tmp_path))} && env -i {exports} TERM=xterm " \
              f"{shlex.quote(sys.executable)} -m token_worker demo --lifetime {LIFETIME}; " \
              "echo demo exited with status $?"
    t = Tmux(tmp_path, command)
    tmux.append(t)
    t.wait_for(r"payments [1-9]\d*  misses 0 ", 60)
    return t


def _started(t: Tmux) -> list[int]:
    """The demo's process and every process under it (workers, pools, beats, Redis)."""
    shell = int(t.pane("#{pane_pid}"))
    t.pids = child_pids(shell)
    assert len(t.pids) >= 6, t.pids  # the demo, 2 x (worker, pool, beat), redis-server
    return t.pids


def _left(pids: list[int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while any(not _gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {p: _cmdline(p) for p in pids if not _gone(p)}


def test_closing_the_terminal_stops_everything_the_demo_started(
        tmp_path: Path, tmux: list[Tmux]) -> None:
    t = _demo_in_tmux(tmp_path, tmux)
    pids = _started(t)
    t.kill()  # the tmux server goes, and the pane's process gets SIGHUP
    assert _left(pids, 40) == {}


def test_a_person_breaks_everything_under_tmux_and_quitting_leaves_nothing(
        tmp_path: Path, tmux: list[Tmux]) -> None:
    started = time.monotonic()
    t = _demo_in_tmux(tmp_path, tmux)
    screen = t.screen()
    assert "keys: o endpoint outage  r restart Redis  k kill worker  4 401 storm  q quit" in screen
    port = int(t.wait_for(r"private redis-server redis://127\.0\.0\.1:(\d+)/0 \(none "
                          r"answered at redis://127\.0\.0\.1:\d+/0\)", 1)[1])
    assert re.search(r"^payments\s+(valid|refresh_due)\s", screen, re.M), screen

    t.run("send-keys", "-t", "demo", "o")
    t.wait_for(r"outage: the token endpoint answers 503 for \d+ s", 5)
    t.wait_for(r"outage: recovered [\d.]+ s after: .*payments.* refreshed; readers: \d+ "
               r"payments, 0 misses", 30)
    t.run("send-keys", "-t", "demo", "r")
    t.wait_for(r"redis: recovered in [\d.]+ s: tokens back in Redis \(endpoint calls: \d+\); "
               r"readers: \d+ payments, 0 misses, 0 401s", 30)
    t.run("send-keys", "-t", "demo", "4")
    t.wait_for(r"401: recovered in [\d.]+ s: replacement [0-9a-f]{12}, endpoint calls: 1; "
               r"readers: \d+ payments, 0 misses", 30)
    t.run("send-keys", "-t", "demo", "k")
    t.wait_for(r"kill: worker pid \d+ killed with SIGKILL", 5)
    t.wait_for(r"kill: recovered in [\d.]+ s: worker pid \d+ ready; readers: \d+ payments, "
               r"0 misses", 90)
    screen = t.screen()
    assert re.search(r"misses 0 ", screen) and not TOKEN.search(screen), screen

    started_pids = _started(t)  # everything the demo started, before it is told to stop
    t.run("send-keys", "-t", "demo", "q")
    status = t.wait_for(r"^demo exited with status (\d+)", 60)[1]
    screen = t.screen()
    print(f"\nunder tmux, four keys and q: {time.monotonic() - started:.1f}s")
    assert status == "0", screen
    assert re.search(r"demo summary: 8 payment tasks made [1-9]\d* payments .*, 0 misses",
                     screen), screen
    assert "demo stopped: workers exited with status 0, 0; private redis-server stopped; " \
           "emulator stopped" in screen
    assert _left(started_pids, 0) == {}
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        connect_redis(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5).ping()
