"""The rules for the settings a reader reads, as plain functions: one rule, one place.

``[redis]`` (every key), the timing numbers that pick a reader's ``min_ttl``
(``refresh.margin_seconds``, ``refresh.interval_seconds``, ``stitch.timeout_seconds``,
``profiles.*.margin_seconds``) and the other bounded numbers. Stdlib only (the URL
checks of :mod:`token_worker.urls` aside): the config model (:mod:`token_worker.config`,
pydantic) calls these rules from its validators, and ``TokenReader.from_config()``
(:mod:`token_worker.reader_config`) calls them on the parsed TOML without pydantic.
Messages name no value: they say what the key must be.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Generic, TypeVar

from .constants import MAX_BATCH, MAX_MARGIN
from .exceptions import ConfigError
from .urls import redis_url_problem

__all__ = ["DEFAULT_PREFIX", "DEFAULT_REDIS_URL", "NUMBERS", "REDIS_DEFAULTS", "REDIS_KEYS",
           "SECTIONS", "Number", "read_encryption_keys", "read_sentinel_password",
           "redis_value", "reference_problem"]

T = TypeVar("T", int, float)

# the config file's top-level tables (config.Config has one field for each)
SECTIONS = ("redis", "celery", "stitch", "refresh", "metrics", "clients", "profiles")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "stitch"
_PREFIX = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class Number(Generic[T]):
    """A bounded, finite number: an int (never a bool) where the default is one.

    A plain class, not a dataclass: it is built on every reader's start-up path.
    """

    __slots__ = ("default", "ge", "gt", "le")

    def __init__(self, default: T, *, le: float, ge: float | None = None,
                 gt: float | None = None) -> None:
        self.default: T = default
        self.le, self.ge, self.gt = le, ge, gt

    def __repr__(self) -> str:
        return f"Number({self.default!r}, ge={self.ge!r}, gt={self.gt!r}, le={self.le!r})"

    def value(self, given: Any) -> T:
        """``given`` as the setting holds it (ints become floats for a float setting).

        Raises:
            ValueError: not such a number (the message names no value).
        """
        integer = isinstance(self.default, int)
        kinds = int if integer else (int, float)
        low = f"greater than {self.gt:g}" if self.gt is not None else f"at least {self.ge:g}"
        if isinstance(given, bool) or not isinstance(given, kinds) \
                or (isinstance(given, float) and not math.isfinite(given)) \
                or not ((self.gt is None or given > self.gt)
                        and (self.ge is None or given >= self.ge) and given <= self.le):
            raise ValueError(f"must be {'a whole' if integer else 'a finite'} number, "
                             f"{low} and at most {self.le:g}")
        return type(self.default)(given)


# keyed by where they sit ("profiles.margin_seconds": every profile's)
NUMBERS: dict[str, Number[Any]] = {
    "redis.socket_timeout_seconds": Number(5.0, gt=0, le=300),
    # each publish waits for this many replicas to acknowledge it (WAIT), up to the timeout
    "redis.wait_replicas": Number(0, ge=0, le=16),
    "redis.wait_timeout_ms": Number(100, ge=1, le=10_000),
    "stitch.timeout_seconds": Number(10.0, gt=0, le=300),
    "refresh.margin_seconds": Number(600.0, ge=0, le=MAX_MARGIN),
    "refresh.interval_seconds": Number(30.0, ge=0.1, le=3600),
    # retries of retryable errors within one attempt (so one attempt = retries + 1 calls)
    "refresh.retries": Number(2, ge=0, le=10),
    "refresh.max_batch": Number(MAX_BATCH, ge=1, le=100),  # profiles per refresh_batch task
    "profiles.margin_seconds": Number(600.0, ge=0, le=MAX_MARGIN),  # default: refresh's
    "metrics.port": Number(0, ge=0, le=65535),  # 0: no /metrics endpoint
}

# every [redis] key; the optional strings are None unless set
REDIS_KEYS = ("url", "prefix", "tls_ca_file", "tls_cert_file", "tls_key_file",
              "socket_timeout_seconds", "encryption_keys_env", "encryption_keys_file",
              "sentinel_password_env", "wait_replicas", "wait_timeout_ms")
REDIS_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(REDIS_KEYS), "url": DEFAULT_REDIS_URL, "prefix": DEFAULT_PREFIX,
    **{key[6:]: n.default for key, n in NUMBERS.items() if key.startswith("redis.")}}
# where a pasted credential would be refused (tls_key_file: a key pasted for its path)
_GUARDED = frozenset({"tls_key_file", "encryption_keys_env", "encryption_keys_file",
                      "sentinel_password_env"})


def reference_problem(key: str, value: str) -> str | None:
    """Why a ``*_env`` / ``*_file`` value cannot be a name or a path (a pasted credential).

    No message quotes these values; refusing what cannot be a name or a path still tells
    the operator early that a credential was pasted in the wrong place.
    """
    if not value:
        return None
    if key.endswith("_env"):
        if not _ENV_NAME.fullmatch(value):
            return ("must be the name of an environment variable (letters, digits, _), "
                    "not the credential itself (value not shown)")
    elif "\n" in value or "-----BEGIN" in value:
        return "must be a file path, not the credential itself (value not shown)"
    return None


def redis_value(key: str, value: Any) -> Any:
    """``value`` for ``redis.<key>`` as the settings hold it (``key`` one of REDIS_KEYS).

    Raises:
        ValueError: it cannot be used (the message names no value).
    """
    number = NUMBERS.get(f"redis.{key}")
    if number is not None:
        return number.value(value)
    if key == "url":
        problem = redis_url_problem(value)
    elif key == "prefix":
        problem = None if isinstance(value, str) and _PREFIX.fullmatch(value) else \
            "must be letters, digits, _ . - (at least one)"
    elif value is None:
        return None
    elif not isinstance(value, str):
        problem = "must be a string"
    else:
        problem = reference_problem(key, value) if key in _GUARDED else None
    if problem:
        raise ValueError(problem)
    return value


def read_sentinel_password(env: str | None) -> str | None:
    """Sentinel's password, read now from the variable ``env`` names, or None.

    Raises:
        ConfigError: the variable is named but unset or empty.
    """
    if not env:
        return None
    value = os.environ.get(env, "")
    if not value:
        raise ConfigError(["redis.sentinel_password_env: the environment variable it "
                           "names is not set or empty"])
    return value


def read_encryption_keys(env: str | None, file: str | None) -> str | None:
    """The key list, read now (so a rotated file is picked up), or None if not set.

    Raises:
        ConfigError: the variable is unset or the file unreadable.
    """
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(["redis.encryption_keys_env: the environment variable it "
                               "names is not set or empty"])
        return value
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError([f"redis.encryption_keys_file: file cannot be read "
                               f"({exc.strerror or type(exc).__name__})"]) from None
    return None
