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
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

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

from .exceptions import ConfigError

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

DEFAULT_TOKEN_URL = "https://secure.stitch.money/connect/token"  # noqa: S105 (a URL)
DEFAULT_PATH = "token_worker.toml"
ENV_CONFIG = "TOKEN_WORKER_CONFIG"
ENV_REDIS_URL = "TOKEN_WORKER_REDIS_URL"
ENV_BROKER_URL = "TOKEN_WORKER_BROKER_URL"
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
# profile names end up in Redis keys and Celery arguments
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


_QUERY_PASSWORD = re.compile(r"(?<![^&])(password|passwd|pass)=[^&]*", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def _reference(value: str | None, info: ValidationInfo) -> str | None:
    """A ``*_env`` / ``*_file`` value must name a credential, never be one.

    Messages quote these values ("cannot read PATH", "variable NAME is not set"), so a
    secret or PEM pasted in their place would reach stderr and logs: refuse it unquoted.
    """
    if not value:
        return value
    if (info.field_name or "").endswith("_env"):
        if not _ENV_NAME.match(value):
            raise ValueError("must be the name of an environment variable (letters, digits, "
                             "_), not the credential itself (value not shown)")
    elif "\n" in value or "-----BEGIN" in value:
        raise ValueError("must be a file path, not the credential itself (value not shown)")
    return value


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print."""
    parts = urlsplit(url)
    # redis-py and kombu also take the password as a query argument
    query = _QUERY_PASSWORD.sub(r"\1=***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        # split by hand: keeps IPv6 brackets, and a bad port cannot raise inside a repr
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field(default="stitch", pattern=r"^[A-Za-z0-9_.-]+$")
    # TLS for rediss:// URLs
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    socket_timeout_seconds: float = Field(default=5.0, gt=0)
    # encryption at rest: "kid:base64key[,kid:base64key...]", first one encrypts
    encryption_keys_env: str | None = None
    encryption_keys_file: str | None = None

    refuse_pasted_credentials = field_validator(
        "tls_key_file", "encryption_keys_env", "encryption_keys_file")(_reference)

    def read_encryption_keys(self) -> str | None:
        """The key list, read now (so a rotated file is picked up), or None if not set.

        Raises:
            ConfigError: the variable is unset or the file unreadable.
        """
        if self.encryption_keys_env:
            value = os.environ.get(self.encryption_keys_env, "").strip()
            if not value:
                raise ConfigError([f"redis.encryption_keys_env: environment variable "
                                   f"{self.encryption_keys_env} is not set or empty"])
            return value
        if self.encryption_keys_file:
            try:
                return Path(self.encryption_keys_file).read_text().strip()
            except OSError as exc:
                raise ConfigError([f"redis.encryption_keys_file: cannot read "
                                   f"{self.encryption_keys_file} ({exc.strerror})"]) from None
        return None

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "url" else value


class CelerySettings(_Section):
    broker_url: str | None = None  # default: redis.url
    queue: str = Field(default="tokens", min_length=1)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "broker_url" and value else value


class StitchSettings(_Section):
    token_url: str = DEFAULT_TOKEN_URL
    audience: str | None = None  # default: token_url
    timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def effective_audience(self) -> str:
        return self.audience or self.token_url


class RefreshSettings(_Section):
    margin_seconds: float = Field(default=600.0, ge=0)
    interval_seconds: float = Field(default=30.0, gt=0)
    # retries of retryable errors within one attempt (so one attempt = retries + 1 calls)
    retries: int = Field(default=2, ge=0, le=10)

    def lock_ttl_seconds(self, timeout_seconds: float) -> float:
        """The lock outlives one whole attempt: every call timing out plus backoff."""
        calls = self.retries + 1
        return calls * timeout_seconds + calls * 2.0 + 10.0


class MetricsSettings(_Section):
    # the worker's own /metrics endpoint (needs the metrics extra); 0 disables it
    port: int = Field(default=0, ge=0, le=65535)
    host: str = "127.0.0.1"


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
                raise ConfigError(
                    [f"{where}.client_secret_env: environment variable "
                     f"{self.client_secret_env} is not set or empty"]
                )
            return SecretStr(value)
        if self.client_secret_file:
            try:
                value = Path(self.client_secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    [f"{where}.client_secret_file: cannot read {self.client_secret_file} "
                     f"({exc.strerror or type(exc).__name__})"]
                ) from None
            if not value:
                raise ConfigError(
                    [f"{where}.client_secret_file: {self.client_secret_file} is empty"])
            return SecretStr(value)
        raise ConfigError([f"{where}: has no client secret (it uses certificate_file)"])


class ProfileSettings(_Section):
    client: str | None = None
    scopes: list[str] = Field(min_length=1)
    margin_seconds: float | None = Field(default=None, ge=0)


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


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$TOKEN_WORKER_CONFIG``, else ``./token_worker.toml``."""
    return Path(path or os.environ.get(ENV_CONFIG) or DEFAULT_PATH)


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "too_short":
        return "must not be empty"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _structure_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        problems.append(f"{loc}: {_message(err)}")
    return problems


def _semantic_problems(data: dict[str, Any]) -> list[str]:
    """Cross-key rules, checked on the raw data so they are reported with the rest."""
    problems: list[str] = []
    redis_section = data.get("redis")
    if isinstance(redis_section, dict) and redis_section.get("encryption_keys_env") \
            and redis_section.get("encryption_keys_file"):
        problems.append("redis: set at most one of encryption_keys_env, encryption_keys_file")
    clients = data.get("clients") or {}
    profiles = data.get("profiles") or {}
    if not isinstance(clients, dict) or not isinstance(profiles, dict):
        return problems
    for name, client in clients.items():
        if not _NAME.match(str(name)):
            problems.append(f"clients.{name}: name must match {_NAME.pattern}")
        if isinstance(client, dict):
            given = [k for k in ("client_secret_env", "client_secret_file", "certificate_file")
                     if client.get(k)]
            if len(given) != 1:
                problems.append(
                    f"clients.{name}: set exactly one of client_secret_env, client_secret_file, "
                    f"certificate_file (found {len(given) or 'none'})"
                )
    if not clients:
        problems.append("clients: at least one client is required")
    if not profiles:
        problems.append("profiles: at least one profile is required")
    for name, profile in profiles.items():
        if not _NAME.match(str(name)):
            problems.append(f"profiles.{name}: name must match {_NAME.pattern}")
        if not isinstance(profile, dict):
            continue
        scopes = profile.get("scopes")
        if isinstance(scopes, list):
            for scope in scopes:
                if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
                    problems.append(f"profiles.{name}.scopes: {scope!r} is not a scope name")
            if len(set(map(str, scopes))) != len(scopes):
                problems.append(f"profiles.{name}.scopes: lists a scope twice")
        client = profile.get("client")
        if client is None:
            if len(clients) > 1:  # none at all is reported once, under clients
                problems.append(
                    f"profiles.{name}.client: required when {len(clients)} clients are configured"
                )
        elif client not in clients:
            problems.append(f"profiles.{name}.client: no client named {client!r} in [clients]")
    return problems


def parse_config(data: dict[str, Any], *, path: str = "") -> Config:
    """Validate a config mapping (as parsed from TOML), applying env overrides.

    Raises:
        ConfigError: listing every problem found, one per line.
    """
    data = dict(data)
    for env, section, key in ((ENV_REDIS_URL, "redis", "url"),
                              (ENV_BROKER_URL, "celery", "broker_url")):
        if os.environ.get(env):
            sect = data.get(section)
            data[section] = {**(sect if isinstance(sect, dict) else {}), key: os.environ[env]}
    problems = _semantic_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = _structure_problems(exc) + problems
        raise ConfigError(problems) from None
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
    resolved = resolve_path(path)
    try:
        raw = resolved.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{resolved}: config file not found (use --config or "
                           f"{ENV_CONFIG})"]) from None
    except OSError as exc:
        raise ConfigError([f"{resolved}: cannot read ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{resolved}: not valid TOML ({exc})"]) from None
    return parse_config(data, path=str(resolved))


def credential_problems(config: Config) -> list[str]:
    """Read every client's credentials once; one line per client that fails."""
    from .credentials import certificate_problems  # cryptography only where needed

    problems: list[str] = []
    for name, client in config.clients.items():
        if client.certificate_file:
            problems.extend(certificate_problems(name, client.certificate_file)[0])
            continue
        try:
            client.read_secret()
        except ConfigError as exc:
            problems.extend(exc.problems)
    if config.redis.encryption_keys_env or config.redis.encryption_keys_file:
        from .crypto import codec_for

        try:
            codec_for(config)  # parses every key: problems name the entry, never the key
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def config_warnings(config: Config) -> list[str]:
    """Things that are allowed but probably wrong (unknown scopes, expiring certificates)."""
    from .credentials import certificate_problems

    warnings = []
    for name, profile in config.profiles.items():
        for scope in profile.scopes:
            if scope not in KNOWN_SCOPES:
                warnings.append(f"profiles.{name}.scopes: unknown scope {scope!r} "
                                f"(allowed: Stitch adds scopes over time)")
        margin = config.margin_for(name)
        if margin < config.refresh.interval_seconds:
            warnings.append(
                f"profiles.{name}: margin {margin:g}s is shorter than refresh.interval_seconds "
                f"{config.refresh.interval_seconds:g}s; a token may expire between checks"
            )
    for name, client in config.clients.items():
        if client.certificate_file:
            warnings.extend(certificate_problems(name, client.certificate_file)[1])
    if config.metrics.port:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            warnings.append("metrics.port: prometheus-client is not installed, so the worker "
                            "will run without /metrics (pip install 'token_worker[metrics]')")
    return warnings
