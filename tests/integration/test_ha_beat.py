"""Beat made highly available with third-party schedulers, against real processes.

A host app (project settings + ``token_worker.register``) runs as one ``celery worker``
without beat, plus standalone ``celery beat`` processes:

- **celery-redbeat**: two ``RedBeatScheduler`` beats on one app. Redbeat's Redis lock
  lets one send; the other waits in ``beat_init`` until the lock expires. SIGKILL the
  sender and the other takes over within ``redbeat_lock_timeout`` plus one
  ``beat_max_loop_interval``, while readers never miss a token.
- **django-celery-beat**: the ``DatabaseScheduler`` copies the ``beat_schedule`` entry
  into a ``PeriodicTask`` row and drives the refresh from it. Two limits of that copy
  are pinned here: the tick's ``expires`` is dropped, and intervals become whole seconds.

Two plain beats (``celery.beat:Scheduler``, no lock at all) are covered by
``test_fleet.py::test_two_workers_with_beat_make_one_call_per_profile_per_lifetime``:
one endpoint call per profile per token lifetime, whoever sends the ticks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from token_worker import TokenReader, TokenUnavailable
from token_worker.tasks import BEAT_ENTRY, DUE_TASK
from token_worker.testing import Worker, spawn_worker, wait_until
from token_worker.tokens import PHASE_FLOOR

from ..support import record_publishes
from .conftest import HEAVY, THREE, Fleet, subprocess_env

pytestmark = pytest.mark.integration

# what an operator's proj/celery.py looks like: the project's settings, then register
HOST_APP = textwrap.dedent("""
    import os

    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()  # the DatabaseScheduler's models need the app registry

    from celery import Celery

    import token_worker

    app = Celery("ha_app")
    app.config_from_object("celeryconfig")
    if os.environ.get("REDBEAT_REDIS_URL"):
        app.conf.update(
            redbeat_redis_url=os.environ["REDBEAT_REDIS_URL"],
            redbeat_redis_options={},  # not the broker's transport options
            redbeat_lock_timeout=int(os.environ["REDBEAT_LOCK_TIMEOUT"]),
            beat_max_loop_interval=float(os.environ["BEAT_MAX_LOOP_INTERVAL"]),
        )
    token_worker.register(app)
""")

DJANGO_SETTINGS = textwrap.dedent("""
    SECRET_KEY = "ha-beat-test"
    INSTALLED_APPS = ["django_celery_beat"]
    DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
    USE_TZ = True
    TIME_ZONE = "UTC"
""")

REDBEAT = "redbeat.RedBeatScheduler"
DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
SENT = "Scheduler: Sending due task " + BEAT_ENTRY
ACQUIRED = "beat: Acquired lock"
RECEIVED = re.compile(r"Task " + re.escape(DUE_TASK) + r"\[[0-9a-f-]+\] received")
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): ", re.M)


def _require(module: str) -> None:
    # a clear failure at once, not a beat that dies and a wait that times out
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]'")


def _stamps(log: str, text: str) -> list[float]:
    """Wall-clock times of the log lines that contain ``text``."""
    out = []
    for line in log.splitlines():
        m = _STAMP.match(line)
        if m and text in line:
            out.append(time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000)
    return out


def _host_app(fleet: Fleet) -> None:
    (fleet.tmp / "ha_app.py").write_text(HOST_APP)


def _beat(fleet: Fleet, name: str, scheduler: str, config: Path,
          env: dict[str, str]) -> Worker:
    """A standalone ``celery beat`` on the host app; the fleet kills it at teardown and
    searches its log for leaks."""
    cmd = [sys.executable, "-m", "celery", "-A", "ha_app", "beat", "-S", scheduler,
           "--loglevel", "INFO"]
    beat = spawn_worker(cmd, name=name, workdir=fleet.tmp,
                        env=subprocess_env(TOKEN_WORKER_CONFIG=str(config), **env))
    fleet.workers.append(beat)
    return beat


def _stop(beat: Worker) -> int:
    """SIGTERM a beat until it exits; its exit status. A SIGTERM that lands while beat
    publishes raises inside the Redis read, and beat logs a "Message Error" and ticks on."""
    for _ in range(10):
        beat.proc.send_signal(signal.SIGTERM)
        try:
            return beat.proc.wait(2)
        except subprocess.TimeoutExpired:
            continue
    raise AssertionError(f"{beat.name} ignored SIGTERM:\n{beat.log()[-2000:]}")


def _cycles(times: list[float], lifetime: float, margin: float) -> int:
    """Token lifetimes in a list of publish times: a duplicate would follow within
    milliseconds, a real rotation ``lifetime - margin`` later (the first token's, placed
    by its profile's phase, no sooner than ``PHASE_FLOOR`` of that)."""
    lead = lifetime - margin
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= lead / 2 for g in gaps[1:]), gaps
    return 1 + sum(1 for g in gaps if g >= PHASE_FLOOR * lead * 0.9)


class _Readers(threading.Thread):
    """Reads every profile in a loop, as a payment task would, until stopped."""

    def __init__(self, url: str, min_ttl: float) -> None:
        super().__init__(name="ha-beat-reader", daemon=True)
        self.reader = TokenReader(url, "stitch", min_ttl=min_ttl)
        self.halt = threading.Event()
        self.reads, self.missed, self.least_left = 0, list[str](), float("inf")
        self.tokens: dict[str, set[str]] = {p: set() for p in THREE}

    def run(self) -> None:
        while not self.halt.is_set():
            for profile in THREE:
                try:
                    token = self.reader.get(profile)
                except TokenUnavailable as exc:
                    self.missed.append(f"{time.time():.3f} {exc}")
                    continue
                self.reads += 1
                self.least_left = min(self.least_left, token.expires_in)
                self.tokens[profile].add(token.fingerprint)
            self.halt.wait(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self.reader.close()


def test_redbeat_lets_one_beat_send_and_the_other_takes_over_when_it_is_killed(
        fleet: Fleet) -> None:
    _require("redbeat")
    # a failover stops ticks for up to lock timeout + loop interval (+ a tick): the margin
    # covers that with room for the readers' min_ttl; a rotation every L - M = 5 s
    lifetime, margin, lock_timeout, loop, min_ttl = 15.0, 10.0, 5, 1.0, 1.0
    fleet.emulator.set_expires_in(lifetime)
    config = fleet.config(margin=margin, interval=1)
    _host_app(fleet)
    base = fleet.redis_url.rsplit("/", 1)[0]
    env = {"REDBEAT_REDIS_URL": f"{base}/2",
           "REDBEAT_LOCK_TIMEOUT": str(lock_timeout), "BEAT_MAX_LOOP_INTERVAL": str(loop)}
    publishes: dict[str, list[float]] = {}
    collector = record_publishes(fleet.redis_url, publishes, clock=time.time)
    worker = fleet.start_worker(config, app="ha_app", beat=False, env=env)
    beats = [_beat(fleet, name, REDBEAT, config, env) for name in ("beat-a", "beat-b")]
    worker.wait_ready()
    holders = wait_until(lambda: [b for b in beats if ACQUIRED in b.log()], 30)
    assert len(holders) == 1, [b.log()[-2000:] for b in beats]
    active = holders[0]
    standby = next(b for b in beats if b is not active)
    assert 0 < fleet.redis_server.client(db=2).pttl("redbeat::lock") <= lock_timeout * 1000
    assert wait_until(lambda: all(publishes.get(p) for p in THREE), 30), publishes
    readers = _Readers(fleet.redis_url, min_ttl)
    readers.start()
    # kill the sender (no chance to release its lock) a second before the next token
    # comes due (profiles have their own phases), so its refresh waits for the takeover
    rds = fleet.store_client()
    while True:
        due = {p: float(rds.zscore("stitch:schedule", p) or 0) for p in THREE}
        target = min(due, key=lambda p: due[p])
        if due[target] - time.time() > 1.5:
            break
        time.sleep(0.1)
    expiry = {p: json.loads(rds.get(f"stitch:token:{p}") or "{}")["expires_at"]
              for p in THREE}
    time.sleep(max(0.0, due[target] - 1 - time.time()))
    killed_at = time.time()
    active.kill()
    assert wait_until(lambda: ACQUIRED in standby.log(), lock_timeout + loop + 5), \
        standby.log()[-2000:]
    took_over = _stamps(standby.log(), ACQUIRED)[0] - killed_at
    # until every token issued before the kill has expired: readers see only newer ones
    time.sleep(max(0.0, max(expiry.values()) + 1 - time.time()))
    readers.stop()
    assert _stop(standby) == 0
    assert worker.terminate() == 0
    time.sleep(0.3)
    collector.stop(5)

    sent_a, sent_b = _stamps(active.log(), SENT), _stamps(standby.log(), SENT)
    received = len(RECEIVED.findall(worker.log()))
    stats = fleet.emulator.stats()["by_scope"]
    print(f"\nredbeat: the standby beat took over {took_over:.2f}s after the SIGKILL (lock "
          f"timeout {lock_timeout}s, loop {loop:g}s); refresh_due sent {len(sent_a)} + "
          f"{len(sent_b)}, received {received}; {readers.reads} reads, "
          f"{len(readers.missed)} missed, least life left {readers.least_left:.2f}s")
    # the standby sent nothing while the lock was held, and the sender never doubled up
    assert sent_a and sent_b and min(sent_b) > killed_at
    assert all(b - a > 0.5 for a, b in zip(sent_a, sent_a[1:], strict=False)), sent_a
    # every tick reached the worker, bar one cut short by the SIGKILL or by the SIGTERM
    # that stopped beat (logged as sent, never published)
    assert 0 <= len(sent_a) + len(sent_b) - received <= 2
    # it waited for the lock to expire (extended on every tick), then for its next poll
    assert lock_timeout - loop - 0.5 <= took_over <= lock_timeout + loop + 1.0
    assert readers.missed == [], readers.missed[:3]
    # the due refresh waited for the takeover (the old token had about its expiry - the
    # kill - took_over left when it was replaced), and still came in time
    assert min_ttl <= readers.least_left <= expiry[target] - killed_at - took_over + 0.5
    for profile, scopes in THREE.items():
        times = publishes[profile]
        cycles = _cycles(times, lifetime, margin)
        print(f"{profile}: {stats[scopes[0]]} endpoint calls, {len(times)} publishes, "
              f"{cycles} lifetimes, {len(readers.tokens[profile])} tokens read")
        assert stats[scopes[0]] == len(times) == cycles
        assert any(t > killed_at + took_over for t in times)
        assert len(readers.tokens[profile]) >= 3  # before, across and after the failover


def test_redbeat_beat_paused_past_its_lock_exits_when_resumed(fleet: Fleet) -> None:
    _require("redbeat")
    # a frozen VM or a SIGSTOP: the lock expires, the standby takes over; the old holder,
    # resumed, fails to extend the lock on its next tick and exits without sending
    lock_timeout, loop = 3, 0.5
    config = fleet.config(interval=1)
    _host_app(fleet)
    env = {"REDBEAT_REDIS_URL": fleet.redis_url.rsplit("/", 1)[0] + "/2",
           "REDBEAT_LOCK_TIMEOUT": str(lock_timeout), "BEAT_MAX_LOOP_INTERVAL": str(loop)}
    beats = [_beat(fleet, name, REDBEAT, config, env) for name in ("beat-a", "beat-b")]
    holders = wait_until(lambda: [b for b in beats if SENT in b.log()], 30)
    assert len(holders) == 1, [b.log()[-2000:] for b in beats]
    paused = holders[0]
    standby = next(b for b in beats if b is not paused)
    os.kill(paused.proc.pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: SENT in standby.log(), lock_timeout + loop + 5)
    finally:
        resumed_at = time.time()
        os.kill(paused.proc.pid, signal.SIGCONT)
    code = paused.proc.wait(10)
    print(f"\nredbeat: the paused beat exited {code} after SIGCONT: "
          f"{paused.log().strip().splitlines()[-1][:120]}")
    assert code != 0
    assert "LockNotOwnedError" in paused.log()
    assert not [t for t in _stamps(paused.log(), SENT) if t >= resumed_at]
    sent = len(_stamps(standby.log(), SENT))
    assert wait_until(lambda: len(_stamps(standby.log(), SENT)) >= sent + 2, 5)


@pytest.fixture
def django_db(fleet: Fleet) -> dict[str, str]:
    """Django settings in the test's directory and a migrated sqlite DB; the env naming them."""
    _require("django_celery_beat")
    db = fleet.tmp / "beat.sqlite3"
    (fleet.tmp / "ha_settings.py").write_text(DJANGO_SETTINGS.format(db=str(db)))
    env = {"DJANGO_SETTINGS_MODULE": "ha_settings"}
    done = subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput"],
                          capture_output=True, text=True, timeout=120, cwd=fleet.tmp,
                          env=subprocess_env(**env))
    assert done.returncode == 0, done.stdout + done.stderr
    return {**env, "DB": str(db)}


def _periodic_tasks(db: str) -> dict[str, dict[str, object]]:
    query = ("SELECT t.name, t.task, t.queue, t.enabled, t.total_run_count, t.expires, "
             "t.expire_seconds, i.every, i.period FROM django_celery_beat_periodictask t "
             "LEFT JOIN django_celery_beat_intervalschedule i ON t.interval_id = i.id")
    with sqlite3.connect(db, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return {row["name"]: dict(row) for row in conn.execute(query)}


def test_django_celery_beat_database_scheduler_runs_the_beat_schedule_entry(
        fleet: Fleet, django_db: dict[str, str]) -> None:
    config = fleet.config(interval=1)
    _host_app(fleet)
    env = {"DJANGO_SETTINGS_MODULE": django_db["DJANGO_SETTINGS_MODULE"]}
    worker = fleet.start_worker(config, app="ha_app", beat=False, env=env)
    beat = _beat(fleet, "beat-db", DATABASE_SCHEDULER, config, env)
    reader = TokenReader(fleet.redis_url, "stitch")
    try:
        tokens = {p: reader.get(p, wait=30) for p in THREE}
    finally:
        reader.close()
    assert wait_until(lambda: BEAT_ENTRY in _periodic_tasks(django_db["DB"]), 10)
    assert wait_until(lambda: len(_stamps(beat.log(), SENT)) >= 3, 10), beat.log()[-2000:]
    assert _stop(beat) == 0  # a clean stop writes the run count back
    assert worker.terminate() == 0
    rows = _periodic_tasks(django_db["DB"])
    sent = len(_stamps(beat.log(), SENT))
    calls = fleet.emulator.stats()["by_scope"]
    print(f"\nDatabaseScheduler: rows {sorted(rows)}; refresh_due sent {sent} times, "
          f"received {len(RECEIVED.findall(worker.log()))}; endpoint calls {calls}")
    row = rows[BEAT_ENTRY]
    assert (row["task"], row["queue"], row["enabled"]) == (DUE_TASK, "tokens", 1)
    assert (row["every"], row["period"]) == (1, "seconds")
    # its runs are counted in the row (the SIGTERM may land between count and send)
    assert sent <= row["total_run_count"] <= sent + 1 and sent >= 3
    assert 0 <= sent - len(RECEIVED.findall(worker.log())) <= 1
    # the entry's options["expires"] has no column: ticks from this scheduler never
    # expire (harmless: a late due check is as cheap and idempotent as a timely one)
    assert row["expires"] is None and row["expire_seconds"] is None
    # long-lived tokens: one call per profile, however many ticks
    assert {p: t.scopes for p, t in tokens.items()} == {p: tuple(s) for p, s in THREE.items()}
    assert calls == {s[0]: 1 for s in THREE.values()}


def test_django_celery_beat_stores_intervals_in_whole_seconds(
        fleet: Fleet, django_db: dict[str, str]) -> None:
    # IntervalSchedule.every is an integer column: what the scheduler makes of the
    # beat_schedule entry that register() writes for fractional interval_seconds
    script = textwrap.dedent("""
        import json, sys
        import django
        django.setup()
        from celery import Celery
        from django_celery_beat.models import PeriodicTask
        from django_celery_beat.schedulers import ModelEntry
        import token_worker
        from token_worker.config import load_config
        from token_worker.tasks import BEAT_ENTRY

        out = {}
        for path in sys.argv[1:]:
            config = load_config(path)
            app = Celery("probe", set_as_current=False)
            token_worker.register(app, config)
            ModelEntry.from_entry(BEAT_ENTRY, app=app, **app.conf.beat_schedule[BEAT_ENTRY])
            # as the scheduler reads it back: every schedule it runs comes from the row
            row = PeriodicTask.objects.get(name=BEAT_ENTRY)
            seconds = ModelEntry(row, app=app).schedule.run_every.total_seconds()
            out[str(config.refresh.interval_seconds)] = [row.interval.every, seconds]
        print(json.dumps(out))
    """)
    configs = [fleet.config(f"tw-{i}.toml", interval=i) for i in (30, 2.5, 0.5)]
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, configs)], capture_output=True, text=True,
        timeout=60, cwd=fleet.tmp,
        env=subprocess_env(DJANGO_SETTINGS_MODULE=django_db["DJANGO_SETTINGS_MODULE"]))
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)
    print(f"\nDatabaseScheduler: interval_seconds -> [stored every, scheduled seconds]: "
          f"{stored}")
    # 2.5 s runs every 2 s; a sub-second interval becomes 0, a tick on every beat loop
    assert stored == {"30.0": [30, 30.0], "2.5": [2, 2.0], "0.5": [0, 0.0]}


@HEAVY
# after the soak on its worker: the two timing workers then finish together
@pytest.mark.xdist_group("soak")
def test_django_celery_beat_floods_the_broker_with_a_sub_second_interval(
        fleet: Fleet, django_db: dict[str, str]) -> None:
    # the running schedule keeps 0.5 s until it is read back from the table: after any
    # change to any periodic task (an admin save), or the forced re-read every 5 minutes
    config = fleet.config(interval=0.5)
    _host_app(fleet)
    env = {"DJANGO_SETTINGS_MODULE": django_db["DJANGO_SETTINGS_MODULE"]}
    beat = _beat(fleet, "beat-db", DATABASE_SCHEDULER, config, env)
    assert wait_until(lambda: len(_stamps(beat.log(), SENT)) >= 4, 30), beat.log()[-2000:]
    first = _stamps(beat.log(), SENT)
    changed = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django_celery_beat."
         "models import PeriodicTasks; PeriodicTasks.update_changed()"],
        capture_output=True, text=True, timeout=60, cwd=fleet.tmp, env=subprocess_env(**env))
    assert changed.returncode == 0, changed.stderr
    flooded = wait_until(lambda: len(_stamps(beat.log(), SENT)) >= len(first) + 300, 10)
    assert _stop(beat) == 0
    sent = _stamps(beat.log(), SENT)
    before = (len(first) - 1) / (first[-1] - first[0])
    after = sum(1 for t in sent if t > sent[-1] - 1)
    row = _periodic_tasks(django_db["DB"])[BEAT_ENTRY]
    print(f"\nDatabaseScheduler, interval_seconds 0.5: stored every={row['every']}; "
          f"{before:.1f} refresh_due/s before the schedule was re-read, {after}/s after")
    assert row["every"] == 0
    assert 1.5 <= before <= 2.5
    assert flooded and after >= 50
