"""Names several layers share: scopes, config defaults, environment variables, task names.

Stdlib only and importing nothing of the package, so the reader, the emulator and the
development tools can use them without loading the config model or the Celery side.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_TOKEN_URL",
    "DUE_TASK",
    "ENV_BROKER_URL",
    "ENV_CONFIG",
    "ENV_REDIS_URL",
    "KNOWN_SCOPES",
    "MAX_MARGIN",
    "PROFILE_TASK",
]

# the client-token scopes Stitch documents; others are allowed (config check warns)
KNOWN_SCOPES = (
    "client_paymentrequest",
    "client_bankaccountverification",
    "client_imageupload",
    "client_businesslookup",
    "client_paymentauthorizationrequest",
    "client_refund",
    "client_disbursement",
    "client_recurringpaymentconsentrequest",
    "client_consentrequest",
)
DEFAULT_TOKEN_URL = "https://secure.stitch.money/connect/token"  # noqa: S105 (a URL)
DEFAULT_PATH = "token_worker.toml"
ENV_CONFIG = "TOKEN_WORKER_CONFIG"
ENV_REDIS_URL = "TOKEN_WORKER_REDIS_URL"
ENV_BROKER_URL = "TOKEN_WORKER_BROKER_URL"
MAX_MARGIN = 604800.0  # the longest token lifetime Stitch may grant (7 days)
# Celery task names (public: routes and beat entries name them)
DUE_TASK = "token_worker.refresh_due"
PROFILE_TASK = "token_worker.refresh_profile"
BATCH_TASK = "token_worker.refresh_batch"
# the most profiles beat puts in one refresh_batch task (refresh.max_batch's default)
MAX_BATCH = 25
