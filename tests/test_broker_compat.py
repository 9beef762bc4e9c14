"""The guard for a kombu Redis channel whose transport was detached (a lost broker)."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from token_worker.broker_compat import install


def test_install_is_idempotent_and_wraps_once() -> None:
    assert install() is True
    guarded = kombu_redis.Channel._connparams
    assert install() is True
    assert kombu_redis.Channel._connparams is guarded


def test_an_attached_channel_gets_its_own_connection_parameters(redis_url: str) -> None:
    install()
    with Connection(redis_url) as conn:
        channel = conn.default_channel
        params = channel._connparams()
        assert params["port"] == conn.port and params["host"] == "127.0.0.1"


def test_a_channel_whose_transport_was_detached_raises_a_connection_error(
        redis_url: str) -> None:
    """The state Celery 5.7's ``collect()`` leaves on a lost broker (the transport kept,
    its ``Connection`` gone): a connection error, which ``kombu.common.ignore_errors``
    lets pass, never an ``AttributeError``. The whole worker is
    tests/integration/test_broker_loss.py."""
    install()
    conn = Connection(redis_url)
    channel = conn.default_channel
    conn._do_close_transport()  # the last step of Connection.collect()
    assert channel.connection is not None and channel.connection.client is None
    with pytest.raises(redis.exceptions.ConnectionError, match="already closed"):
        channel._connparams()
    assert redis.exceptions.ConnectionError in conn.connection_errors
