"""Sending refreshes to the workers: a minimal Celery producer on ``celery.broker_url``.

The CLI side of the task wiring in :mod:`token_worker.tasks`: only the task name and
its JSON arguments cross, so this module needs neither the tasks nor the refresher.
Waiting for the result is :mod:`token_worker.waiting`.
"""

from __future__ import annotations

from typing import Any

from .config import Config
from .constants import PROFILE_TASK
from .exceptions import TokenWorkerError
from .urls import redact_url

__all__ = ["SEND_EXPIRES_SECONDS", "producer_app", "send_refresh"]

# a refresh sent from the CLI that no worker took within this long is stale
SEND_EXPIRES_SECONDS = 300.0


def producer_app(config: Config) -> Any:
    """A Celery app that only sends (and inspects) on the configured broker; close it after."""
    from celery import Celery  # only senders pay for Celery

    from .broker import celery_broker_settings

    url, transport_options, use_ssl = celery_broker_settings(config)
    app = Celery("token_worker.cli", broker=url, set_as_current=False)
    if transport_options:
        app.conf.broker_transport_options = transport_options
    if use_ssl is not None:
        app.conf.broker_use_ssl = use_ssl
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_ignore_result=True,
        # a CLI must fail fast with a message, not retry for minutes
        broker_connection_retry_on_startup=False, broker_connection_timeout=5,
        broker_connection_max_retries=1,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2,
                                   "interval_step": 0.5, "interval_max": 1.0},
    )
    return app


def send_refresh(config: Config, names: list[str], *, force: bool, requested_at: float,
                 expires: float | None = SEND_EXPIRES_SECONDS) -> None:
    """Send ``token_worker.refresh_profile`` for each profile to the workers' queue.

    Args:
        config: where the broker is and which queue the workers consume.
        names: profiles to refresh.
        force: refresh even when the token is not due.
        requested_at: the request time on the fleet clock; a forced refresh is
            satisfied by any token issued after it.
        expires: seconds after which an untaken message is dropped.

    Raises:
        TokenWorkerError: the broker is unreachable.
    """
    from kombu.exceptions import OperationalError

    app = producer_app(config)
    try:
        with app.producer_or_acquire() as producer:
            for name in names:
                app.send_task(PROFILE_TASK, args=(name,),
                              kwargs={"force": force, "requested_at": requested_at},
                              queue=config.celery.queue, expires=expires,
                              producer=producer, ignore_result=True)
    except (OperationalError, OSError) as exc:
        raise TokenWorkerError(f"broker unreachable at {redact_url(config.broker_url)}: "
                               f"{exc}") from None
    finally:
        app.close()
