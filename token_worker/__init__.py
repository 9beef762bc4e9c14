"""token_worker: fleet-wide Stitch client tokens for Celery, read from Redis.

Importing the package stays light (redis and the standard library): tasks that
only read tokens never load the token client, requests or Celery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .exceptions import (
    ConfigError,
    StoreError,
    TokenRequestError,
    TokenUnavailable,
    TokenWorkerError,
)
from .reader import TokenReader
from .tokens import Token, TokenState

if TYPE_CHECKING:
    from .tasks import register, token_or_retry

__all__ = [
    "ConfigError",
    "StoreError",
    "Token",
    "TokenReader",
    "TokenRequestError",
    "TokenState",
    "TokenUnavailable",
    "TokenWorkerError",
    "__version__",
    "register",
    "token_or_retry",
]


def __getattr__(name: str) -> Any:
    # Celery is imported only by those who wire token_worker into an app
    if name in ("register", "token_or_retry"):
        from . import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'token_worker' has no attribute {name!r}")
