"""Celery settings for ``token_worker.celery_app``: copy this file, edit, keep the reasons.

The broker and the queue come from the token_worker config (``$TOKEN_WORKER_CONFIG``,
else ``./token_worker.toml``; ``$TOKEN_WORKER_BROKER_URL`` overrides the broker), so
the worker, beat and ``token-worker refresh`` always agree on where messages go.
Celery imports ``celeryconfig`` from the current directory first, then this copy.
"""

from kombu import Queue

from token_worker.broker import celery_broker_settings as _broker_settings
from token_worker.config import load_config as _load_config

_config = _load_config()
_queue = _config.celery.queue

# the broker named in the token_worker config (RabbitMQ, Redis, or a Sentinel-managed
# Redis: redis+sentinel:// becomes kombu's sentinel:// URLs and master_name)
broker_url, _broker_options, _broker_ssl = _broker_settings(_config)
if _broker_ssl is not None:
    broker_use_ssl = _broker_ssl
# the broker may come up after the worker (compose, systemd): retry instead of exiting
broker_connection_retry_on_startup = True
# and when it goes away later, reconnect for as long as it takes: Celery's default gives
# up after 100 attempts (about 45 minutes) and exits, leaving no refresher running
broker_connection_retry = True
broker_connection_max_retries = None

# JSON only: messages carry profile names and timestamps; pickle would let the broker run code
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# tasks return nothing: without a result backend no result can ever hold a token
task_ignore_result = True
result_backend = None

# one dedicated queue, so token refreshes never wait behind payment work
task_default_queue = _queue
task_queues = (Queue(_queue, routing_key=_queue),)

# a refresh can block for seconds on the endpoint: no process hoards queued refreshes
worker_prefetch_multiplier = 1
# refreshes are idempotent (lock + re-check): ack when done, redeliver if a worker dies
task_acks_late = True
task_reject_on_worker_lost = True
# on broker loss let an in-flight refresh finish and publish; its redelivered copy is a no-op
worker_cancel_long_running_tasks_on_connection_loss = False
# Redis broker: redeliver unacked messages well after any refresh ends (a forced one may
# wait out another's lock, then make its own attempt), far sooner than the 1 h default
broker_transport_options = {"visibility_timeout": max(300, int(4 * _config.lock_ttl_seconds)),
                            **_broker_options}

# the worker owns its process: token_worker's log records go through Celery's handlers
worker_hijack_root_logger = True
# interval-only schedule rebuilt from the config on start: keep it in memory, so no
# celerybeat-schedule file lands in the CWD and duplicated beats share no file
beat_scheduler = "celery.beat:Scheduler"
# message expiry and schedules compare UTC instants: no DST or local-time surprises
enable_utc = True
timezone = "UTC"
# nothing consumes task events here; they would only add broker traffic
worker_send_task_events = False
task_send_sent_event = False
