"""A worker holding a refresh until its due time survives its Redis broker going away.

Beat sends refreshes to run at their due time, so a worker nearly always holds one
reserved (unacknowledged) message. Celery 5.7 with kombu 5.7 ended the worker on a lost
Redis broker whenever it held one (``token_worker.broker_compat``).
"""

from __future__ import annotations

import time

from celery import Celery

from tests.support import wait_until
from token_worker import TokenReader
from token_worker.broker import celery_broker_settings
from token_worker.config import load_config
from token_worker.constants import PROFILE_TASK

from .conftest import THREE, Fleet


def test_a_worker_holding_a_due_time_refresh_survives_its_redis_broker_restarting(
        private_fleet: Fleet) -> None:
    fleet, server = private_fleet, private_fleet.redis_server
    fleet.emulator.set_expires_in(3600)
    config = fleet.config(interval=1)
    worker = fleet.start_worker(config)
    worker.wait_ready()
    reader = TokenReader(fleet.redis_url, socket_timeout=0.5)
    first = {p: reader.get(p, wait=60).fingerprint for p in THREE}
    # what beat does for a profile due in a minute: a refresh the worker holds until then
    broker, _, _ = celery_broker_settings(load_config(config))  # where the worker listens
    sender = Celery("sender", broker=broker, set_as_current=False)
    held = sender.send_task(PROFILE_TASK, args=["payments"], kwargs={"scheduled": True},
                            queue="tokens", countdown=60, expires=70)
    sender.close()
    assert wait_until(lambda: f"[{held.id}] received" in worker.log(), 30), worker.log()[-2000:]

    server.kill()
    time.sleep(2)
    server.start()  # empty: nothing on disk, so every token is fetched again
    assert wait_until(lambda: worker.log().count("Connected to") >= 2 or
                      worker.proc.poll() is not None, 60)
    assert worker.proc.poll() is None, worker.log()[-3000:]
    assert "Unrecoverable error" not in worker.log()
    reader.close()
    # and it goes on refreshing: the restarted, empty Redis gets every profile back (a
    # new reader: one that held the old tokens keeps serving them meanwhile)
    fresh = TokenReader(fleet.redis_url, socket_timeout=0.5)
    again = {p: fresh.get(p, wait=60).fingerprint for p in THREE}
    fresh.close()
    assert all(again[p] != first[p] for p in THREE)
