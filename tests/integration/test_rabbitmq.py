"""RabbitMQ as the broker (the token store is still Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from token_worker import TokenReader

from ..support import rabbitmq_up
from .conftest import THREE, Fleet

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"



@pytest.fixture
def amqp_queue(fleet: Fleet) -> Iterator[str]:
    """A queue name of our own on the shared RabbitMQ, deleted afterwards."""
    if not rabbitmq_up():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    name = f"tw-it-{uuid.uuid4().hex[:10]}"
    yield name
    fleet.shutdown()  # a live consumer would declare the queue again
    with Connection(AMQP_URL, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


def test_rabbitmq_broker_publishes_and_serves_forced_refresh(fleet: Fleet,
                                                             amqp_queue: str) -> None:
    config = fleet.config(broker_url=AMQP_URL, queue=amqp_queue, interval=30)
    worker = fleet.start_worker(config, queues=amqp_queue)
    reader = TokenReader(fleet.redis_url, "stitch", cache=False)
    try:
        for profile in THREE:
            reader.get(profile, wait=60)
        before = reader.get("refunds").fingerprint
        result = fleet.cli(config, "refresh", "refunds", "--force", "--wait", "20")
        assert result.returncode == 0, result.stdout + result.stderr
        assert reader.get("refunds").fingerprint != before
    finally:
        reader.close()
    assert "transport:   amqp://guest:**@127.0.0.1:5672//" in worker.log()
