"""``token_worker.register(app)`` on a host app: its settings kept, its tasks reading tokens."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.support import REPO
from token_worker import register
from token_worker.config import load_config
from token_worker.tasks import BATCH_TASK, DUE_TASK, PROFILE_TASK

from .conftest import Fleet

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"


class HostSettings:
    task_routes = ({"host.*": {"queue": "host"}},)
    beat_schedule = {"host.tick": {"task": "host.tick", "schedule": timedelta(minutes=1)}}
    task_acks_late = False
    worker_prefetch_multiplier = 8
    task_serializer = "json"


def test_register_adds_tasks_routes_and_beat_and_keeps_the_host_settings(
        fleet: Fleet) -> None:
    config = load_config(fleet.config(queue="tw-tokens", interval=15))
    app = Celery("host", set_as_current=False)
    register(app, config)  # before the app reads its settings: applied after them
    app.config_from_object(HostSettings)

    routes = app.conf.task_routes
    assert routes[0] == {PROFILE_TASK: {"queue": "tw-tokens"}, BATCH_TASK: {"queue": "tw-tokens"},
                         DUE_TASK: {"queue": "tw-tokens"}}
    assert routes[1:] == ({"host.*": {"queue": "host"}},)
    schedule = app.conf.beat_schedule
    assert set(schedule) == {"host.tick", DUE_TASK}
    entry = schedule[DUE_TASK]
    assert entry["schedule"] == timedelta(seconds=15)
    assert entry["options"]["queue"] == "tw-tokens"
    assert 0 < entry["options"]["expires"] < 15
    assert app.conf.task_acks_late is False
    assert app.conf.worker_prefetch_multiplier == 8
    assert app.conf.result_backend is None
    assert app.amqp.router.route({}, PROFILE_TASK)["queue"].name == "tw-tokens"
    for name in (PROFILE_TASK, BATCH_TASK):
        task = app.tasks[name]
        assert (task.queue, task.serializer, task.ignore_result, task.acks_late) == \
            ("tw-tokens", "json", True, True)

    configured = Celery("host2", set_as_current=False)
    configured.conf.update(task_routes={"host.*": {"queue": "host"}})
    _ = configured.conf.task_routes  # already configured: applied at once
    register(configured, config)
    register(configured, config)  # idempotent
    assert configured.conf.task_routes == {
        PROFILE_TASK: {"queue": "tw-tokens"}, BATCH_TASK: {"queue": "tw-tokens"},
        DUE_TASK: {"queue": "tw-tokens"}, "host.*": {"queue": "host"}}
    assert list(configured.conf.beat_schedule) == [DUE_TASK]
    # the default beat_schedule of other apps is not touched
    assert DUE_TASK not in Celery("other", set_as_current=False).conf.beat_schedule


def test_example_payments_app_tasks_use_the_reader(fleet: Fleet, tmp_path: Path) -> None:
    broker = fleet.redis_url.rsplit("/", 1)[0] + "/1"
    backend = fleet.redis_url.rsplit("/", 1)[0] + "/2"
    config = fleet.config(broker_url=broker, interval=2)
    env = {"PAYMENTS_BROKER_URL": broker, "PAYMENTS_RESULT_BACKEND": backend,
           "STITCH_API_URL": fleet.emulator.base_url + "/api",
           "PYTHONPATH": str(EXAMPLES)}
    worker = fleet.start_worker(config, app="payments_app", queues="celery,tokens",
                                concurrency=2, env=env)
    worker.wait_ready()
    client = Celery("client", broker=broker, backend=backend, set_as_current=False)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        calls = {"payments.create_payment": ([1500, "inv-1"], "client_paymentrequest"),
                 "payments.create_refund": (["pay-1", 500], "client_refund"),
                 "payments.create_disbursement": (["acc-9", 2500], "client_disbursement")}
        for name, (args, scope) in calls.items():
            result = client.send_task(name, args=args).get(timeout=60)
            assert result["status"] == 200, result
            assert result["scope"] == scope
    finally:
        client.close()
    log = worker.log()
    assert "refresh profile=payments outcome=refreshed" in log
    assert "payments.create_payment" in log


class _StubTask:
    """Stands in for a bound task: records the retry it was asked for."""

    def __init__(self) -> None:
        self.retried: dict[str, Any] | None = None

    def retry(self, **kwargs: Any) -> Exception:
        self.retried = kwargs
        return RuntimeError("retry requested")


def test_token_or_retry_returns_the_token_or_asks_for_a_retry(fleet: Fleet) -> None:
    from token_worker import TokenReader, TokenUnavailable, token_or_retry

    reader = TokenReader(fleet.redis_url, "stitch", cache=False)
    task = _StubTask()
    try:
        with pytest.raises(RuntimeError, match="retry requested"):
            token_or_retry(task, reader, "payments", countdown=3)
        assert task.retried is not None and task.retried["countdown"] == 3
        assert isinstance(task.retried["exc"], TokenUnavailable)
        assert "payments" in str(task.retried["exc"])

        fleet.start_worker(fleet.config(interval=2))
        token = token_or_retry(_StubTask(), reader, "payments", wait=60)
        assert token.scopes == ("client_paymentrequest",)
    finally:
        reader.close()
