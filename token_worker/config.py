"""The TOML configuration: loading, validation and credential access.

Loading checks structure only, so hosts that merely read tokens (and hold no
secret) can load the same file. :func:`credential_problems` additionally reads
every secret and certificate; the worker and ``config check`` call it.
Secrets are read each time they are needed, so a rotated secret file is picked
up without a restart, and are only ever held as :class:`pydantic.SecretStr`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .checks import config_warnings, credential_problems, key_text, raw_problems
from .config_file import name_sources, read_config_file, resolve_path, with_env_overrides
from .constants import DEFAULT_TOKEN_URL, KNOWN_SCOPES
from .exceptions import ConfigError
from .settings_rules import (
    DEFAULT_PREFIX,
    DEFAULT_REDIS_URL,
    NUMBERS,
    read_encryption_keys,
    read_sentinel_password,
    redis_value,
    reference_problem,
)
from .urls import broker_url_problem, redact_url, token_url_problem

__all__ = [
    "DEFAULT_TOKEN_URL",
    "KNOWN_SCOPES",
    "ClientSettings",
    "Config",
    "MetricsSettings",
    "ProfileSettings",
    "config_warnings",
    "credential_problems",
    "load_config",
    "redact_url",
    "resolve_path",
]

log = logging.getLogger("token_worker.config")



def _number(section: str, *names: str) -> Any:
    """A validator for these number fields: the shared rule (settings_rules.NUMBERS)."""
    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None and section == "profiles":
            return None  # a profile without its own margin takes refresh's
        return NUMBERS[f"{section}.{info.field_name}"].value(value)
    return field_validator(*names, mode="before")(check)


def _default(key: str) -> Any:
    return NUMBERS[key].default


def _reference(value: str | None, info: ValidationInfo) -> str | None:
    """A ``*_env`` / ``*_file`` value must name a credential, never be one."""
    _check(reference_problem(info.field_name or "", value) if value else None)
    return value


def _check(problem: str | None) -> None:
    if problem:
        raise ValueError(problem)


# where a pasted credential would sit: never shown, even in a repr
_REFERENCES = frozenset({"client_secret_env", "client_secret_file", "certificate_file",
                         "tls_ca_file", "tls_cert_file", "tls_key_file",
                         "encryption_keys_env", "encryption_keys_file",
                         "sentinel_password_env"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if value and key in _REFERENCES:
                yield key, "(set)"
            elif value and key in ("url", "broker_url"):
                yield key, redact_url(value)
            else:
                yield key, value


class RedisSettings(_Section):
    """``[redis]``: every key's rule is :func:`~token_worker.settings_rules.redis_value`,
    the one ``TokenReader.from_config()`` applies too."""

    url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    # TLS for rediss:// URLs
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    socket_timeout_seconds: float = _default("redis.socket_timeout_seconds")
    # encryption at rest: "kid:base64key[,kid:base64key...]", first one encrypts
    encryption_keys_env: str | None = None
    encryption_keys_file: str | None = None
    # redis+sentinel:// URLs: Sentinel's own password (the URL's is the data nodes')
    sentinel_password_env: str | None = None
    # each publish waits for this many replicas to acknowledge it (WAIT), up to the timeout
    wait_replicas: int = _default("redis.wait_replicas")
    wait_timeout_ms: int = _default("redis.wait_timeout_ms")

    @field_validator("*", mode="before")
    @classmethod
    def _shared_rules(cls, value: Any, info: ValidationInfo) -> Any:
        return redis_value(info.field_name or "", value)

    @property
    def sentinel_password(self) -> str | None:
        """Sentinel's password, read now from ``sentinel_password_env``, or None.

        Raises:
            ConfigError: the variable is named but unset or empty.
        """
        return read_sentinel_password(self.sentinel_password_env)

    def read_encryption_keys(self) -> str | None:
        """The key list, read now (so a rotated file is picked up), or None if not set.

        Raises:
            ConfigError: the variable is unset or the file unreadable.
        """
        return read_encryption_keys(self.encryption_keys_env, self.encryption_keys_file)


class CelerySettings(_Section):
    broker_url: str | None = None  # default: redis.url
    queue: str = Field(default="tokens", min_length=1)

    @field_validator("broker_url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        if url is not None:
            _check(broker_url_problem(url))
        return url


class StitchSettings(_Section):
    token_url: str = DEFAULT_TOKEN_URL
    audience: str | None = None  # default: token_url
    timeout_seconds: float = _default("stitch.timeout_seconds")

    numbers = _number("stitch", "timeout_seconds")

    @field_validator("token_url")
    @classmethod
    def _https(cls, url: str) -> str:
        _check(token_url_problem(url))
        return url

    @property
    def effective_audience(self) -> str:
        return self.audience or self.token_url


class RefreshSettings(_Section):
    margin_seconds: float = _default("refresh.margin_seconds")
    interval_seconds: float = _default("refresh.interval_seconds")
    retries: int = _default("refresh.retries")
    # most profiles per refresh_batch task when many are due together; 1: never batch
    # (while workers older than 0.2, which do not know the batch task, share the queue)
    max_batch: int = _default("refresh.max_batch")

    numbers = _number("refresh", "margin_seconds", "interval_seconds", "retries", "max_batch")

    def lock_ttl_seconds(self, timeout_seconds: float) -> float:
        """The lock outlives one whole attempt: every call timing out plus backoff."""
        calls = self.retries + 1
        return calls * timeout_seconds + calls * 2.0 + 10.0


class MetricsSettings(_Section):
    # the worker's own /metrics endpoint (needs the metrics extra); 0 disables it
    port: int = _default("metrics.port")
    host: str = "127.0.0.1"

    numbers = _number("metrics", "port")


class ClientSettings(_Section):
    client_id: str = Field(min_length=1)
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    certificate_file: str | None = None
    _name: str = PrivateAttr(default="")

    refuse_pasted_credentials = field_validator(
        "client_secret_env", "client_secret_file", "certificate_file")(_reference)

    @property
    def auth_method(self) -> Literal["secret", "certificate"]:
        return "certificate" if self.certificate_file else "secret"

    def read_secret(self) -> SecretStr:
        """Read the client secret now (rotations are picked up on the next call).

        Raises:
            ConfigError: the variable is unset or the file unreadable or empty.
        """
        where = f"clients.{self._name}"
        if self.client_secret_env:
            value = os.environ.get(self.client_secret_env, "").strip()
            if not value:
                raise ConfigError([f"{where}.client_secret_env: the environment variable it "
                                   f"names is not set or empty"])
            return SecretStr(value)
        if self.client_secret_file:
            try:
                value = Path(self.client_secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError([f"{where}.client_secret_file: file cannot be read "
                                   f"({exc.strerror or type(exc).__name__})"]) from None
            if not value:
                raise ConfigError([f"{where}.client_secret_file: file is empty"])
            return SecretStr(value)
        raise ConfigError([f"{where}: has no client secret (it uses certificate_file)"])


class ProfileSettings(_Section):
    client: str | None = None
    scopes: list[str] = Field(min_length=1)
    margin_seconds: float | None = None

    numbers = _number("profiles", "margin_seconds")


class Config(_Section):
    redis: RedisSettings = RedisSettings()
    celery: CelerySettings = CelerySettings()
    stitch: StitchSettings = StitchSettings()
    refresh: RefreshSettings = RefreshSettings()
    metrics: MetricsSettings = MetricsSettings()
    clients: dict[str, ClientSettings] = Field(default_factory=dict)
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    _path: str = PrivateAttr(default="")

    @property
    def broker_url(self) -> str:
        return self.celery.broker_url or self.redis.url

    @property
    def path(self) -> str:
        return self._path

    def client_for(self, profile: str) -> ClientSettings:
        """The client a profile uses (the only client when the profile names none)."""
        name = self.profiles[profile].client or next(iter(self.clients))
        return self.clients[name]

    def margin_for(self, profile: str) -> float:
        margin = self.profiles[profile].margin_seconds
        return self.refresh.margin_seconds if margin is None else margin

    @property
    def lock_ttl_seconds(self) -> float:
        return self.refresh.lock_ttl_seconds(self.stitch.timeout_seconds)


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "too_short":
        return "must not be empty"
    msg = str(err["msg"]).removeprefix("Value error, ")
    given = err.get("input")
    if kind != "value_error" and isinstance(given, str) and len(given) > 3 and given in msg:
        return "invalid value (not shown)"  # pydantic quotes some inputs: never ours
    return msg


def _structure_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(key_text(part) for part in err["loc"]) or "(top level)"
        problems.append(f"{loc}: {_message(err)}")
    return problems


def parse_config(data: dict[str, Any], *, path: str = "") -> Config:
    """Validate a config mapping (as parsed from TOML), applying env overrides.

    Raises:
        ConfigError: listing every problem found, one per line.
    """
    data, overridden = with_env_overrides(data)
    problems = raw_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(name_sources(_structure_problems(exc) + problems,
                                       overridden)) from None
    if problems:
        raise ConfigError(problems)
    for name, client in config.clients.items():
        client._name = name
    config._path = path
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config file (see :func:`resolve_path`).

    Raises:
        ConfigError: the file is missing, is not TOML, or is invalid.
    """
    resolved, data = read_config_file(path)
    return parse_config(data, path=str(resolved))
