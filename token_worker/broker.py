"""What Celery is told about the broker: URL, transport options and TLS, from the config.

``celeryconfig.py`` (the worker and beat) and :mod:`token_worker.dispatch` (the CLI's
sender) both call :func:`celery_broker_settings`, so they always agree.
"""

from __future__ import annotations

import ssl
from typing import Any

from .config import Config
from .exceptions import ConfigError
from .urls import celery_broker

__all__ = ["celery_broker_settings"]


def celery_broker_settings(config: Config) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Celery's ``broker_url``, the ``broker_transport_options`` to add, and
    ``broker_use_ssl`` (None: leave it alone).

    ``redis+sentinel://`` becomes kombu's ``sentinel://`` URLs with ``master_name`` (and
    Sentinel's password from ``redis.sentinel_password_env``); ``rediss+sentinel://``
    also verifies TLS with the ``redis.tls_*`` files. A ``redis+cluster://`` broker is
    refused.

    Raises:
        ConfigError: the broker would be a cluster, or Sentinel's password is missing.
    """
    url = config.broker_url
    if url.startswith(("redis+cluster", "rediss+cluster")):
        raise ConfigError(["celery.broker_url: a Redis Cluster cannot be the broker (Celery's "
                           "Redis transport has no cluster mode); set celery.broker_url, "
                           "amqp:// recommended"])
    sentinel = url.startswith(("redis+sentinel", "rediss+sentinel"))
    password = config.redis.sentinel_password if sentinel else None
    broker, options = celery_broker(url, password)
    use_ssl = None
    if url.startswith("rediss+sentinel"):
        r = config.redis
        use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": r.tls_ca_file,
                   "ssl_certfile": r.tls_cert_file, "ssl_keyfile": r.tls_key_file}
    return broker, options, use_ssl
