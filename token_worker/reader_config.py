"""What ``TokenReader.from_config()`` takes from the worker's config file, without pydantic.

A reader host loads neither the config model (:mod:`token_worker.config`, pydantic) nor
the token client: the file is found and read as :func:`~token_worker.config.load_config`
finds and reads it (:mod:`token_worker.config_file`), and the keys the reader uses are
checked by the very rules the model applies (:mod:`token_worker.settings_rules`):

- ``[redis]``, every key (an unknown one too), so a bad section is refused here as
  ``config check`` refuses it, naming the key and never quoting the value;
- the timing keys that pick each profile's ``min_ttl`` (:func:`gapless`) and the
  profile names;
- the top-level table names and the cross-key rules (:func:`~token_worker.checks.raw_problems`).

The worker's own keys (``[celery]``, ``[clients.*]`` fields, scopes, ``[metrics]``) are
left to the worker and ``config check``. :mod:`token_worker.reader` imports this module
for its constants; the loading parts (tomllib included) are imported when a reader is
built from a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

__all__ = ["DEFAULT_CACHE_MAX_AGE", "DEFAULT_MIN_TTL", "ReaderConfig", "gapless",
           "gapless_min_ttl", "load_reader_config", "parse_reader_config", "reader_options"]

# a token with less than this left is not handed out (a payment call takes a while)
DEFAULT_MIN_TTL = 5.0
# bound on serving from the cache should the invalidation channel fail silently (a
# half-open connection): under the 100 ms promise, and still ~200x fewer Redis reads
DEFAULT_CACHE_MAX_AGE = 0.08


def gapless(margin: float, interval: float, timeout: float) -> float:
    """The largest ``min_ttl`` (capped at the default) that leaves readers no gap.

    At ``refresh_at`` the old token has at least ``margin`` seconds left (jitter only
    moves ``refresh_at`` earlier). Beat notices within one ``interval``, and a
    successful call is published within one request deadline (``timeout``, enforced on
    the whole request). So the new token is in Redis while the old one still has
    ``margin - interval - timeout`` left; a reader refusing less than that never sees a
    window where the old token is refused and the new one is missing.
    """
    return max(0.0, min(DEFAULT_MIN_TTL, margin - interval - timeout))


def gapless_min_ttl(config: Config, profile: str) -> float:
    """:func:`gapless` for a profile of a loaded :class:`~token_worker.config.Config`."""
    return gapless(config.margin_for(profile), config.refresh.interval_seconds,
                   config.stitch.timeout_seconds)


class ReaderConfig:
    """The reader's part of a config: ``redis`` holds every ``[redis]`` key.

    A plain class, not a dataclass: this module is on every reader's import path.
    """

    __slots__ = ("min_ttls", "path", "redis")

    def __init__(self, redis: dict[str, Any], min_ttls: dict[str, float], path: str = ""
                 ) -> None:
        self.redis, self.min_ttls, self.path = redis, min_ttls, path

    def __repr__(self) -> str:  # the settings hold a URL, perhaps with a password
        return f"ReaderConfig(path={self.path!r}, profiles={list(self.min_ttls)!r})"


def _table(data: dict[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    table = data.get(name, {})
    if isinstance(table, dict):
        return table
    problems.append(f"{name}: must be a table")
    return {}


def _number(table: dict[str, Any], where: str, key: str, problems: list[str], *,
            rule: str, default: float) -> float:
    """``table[key]`` by the shared rule ``NUMBERS[rule]``; ``default`` if absent."""
    from .settings_rules import NUMBERS

    if key not in table:
        return default
    try:
        return float(NUMBERS[rule].value(table[key]))
    except ValueError as exc:
        problems.append(f"{where}.{key}: {exc}")
        return default


def parse_reader_config(data: dict[str, Any], *, path: str = "") -> ReaderConfig:
    """Check and take the reader's part of a config mapping (as parsed from TOML), with
    the environment's overrides applied.

    Raises:
        ConfigError: one line per problem, naming the key, never quoting a value.
    """
    from .checks import key_text, raw_problems
    from .config_file import name_sources, with_env_overrides
    from .exceptions import ConfigError
    from .settings_rules import NUMBERS, REDIS_DEFAULTS, REDIS_KEYS, SECTIONS, redis_value

    data, overridden = with_env_overrides(data)
    problems = [f"{key_text(k)}: unknown key" for k in data if k not in SECTIONS]
    redis_table = _table(data, "redis", problems)
    redis = dict(REDIS_DEFAULTS)
    for key, value in redis_table.items():
        if key not in REDIS_KEYS:
            problems.append(f"redis.{key_text(key)}: unknown key")
            continue
        try:
            redis[key] = redis_value(key, value)
        except ValueError as exc:
            problems.append(f"redis.{key}: {exc}")
    stitch, refresh = _table(data, "stitch", problems), _table(data, "refresh", problems)
    numbers = {}
    for table, where, key in ((stitch, "stitch", "timeout_seconds"),
                              (refresh, "refresh", "margin_seconds"),
                              (refresh, "refresh", "interval_seconds")):
        rule = f"{where}.{key}"
        numbers[rule] = _number(table, where, key, problems, rule=rule,
                                default=NUMBERS[rule].default)
    min_ttls = {}
    for name, profile in _table(data, "profiles", problems).items():
        if not isinstance(profile, dict):
            problems.append(f"profiles.{key_text(name)}: must be a table")
            continue
        margin = numbers["refresh.margin_seconds"]
        if profile.get("margin_seconds") is not None:  # None (not from TOML): refresh's
            margin = _number(profile, f"profiles.{key_text(name)}", "margin_seconds",
                             problems, rule="profiles.margin_seconds", default=margin)
        min_ttls[name] = gapless(margin, numbers["refresh.interval_seconds"],
                                 numbers["stitch.timeout_seconds"])
    problems = name_sources(problems + raw_problems(data), overridden)
    if problems:
        raise ConfigError(problems)
    return ReaderConfig(redis, min_ttls, path)


def load_reader_config(path: str | os.PathLike[str] | None = None) -> ReaderConfig:
    """:func:`parse_reader_config` of the file ``load_config(path)`` would load.

    Raises:
        ConfigError: the file is missing, is not TOML, or the reader's part is invalid.
    """
    from .config_file import read_config_file

    resolved, data = read_config_file(path)
    return parse_reader_config(data, path=str(resolved))


def reader_options(path: str | None, options: dict[str, Any],
                   connect: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """``TokenReader`` keyword arguments for the config at ``path``, ``options`` winning.

    Each profile's ``min_ttl`` is :func:`gapless`'s unless ``min_ttl=`` is given.
    ``connect`` builds the client from the ``[redis]`` settings (default: the sync one).
    """
    from .connection import RedisTarget, client_for
    from .settings_rules import read_encryption_keys, read_sentinel_password

    config = load_reader_config(path)
    r = config.redis
    out = dict(options)
    if "min_ttl" not in out:
        out.setdefault("min_ttls", dict(config.min_ttls))
    if r["encryption_keys_env"] or r["encryption_keys_file"]:
        from .crypto import codec_from

        out.setdefault("codec", codec_from(read_encryption_keys(
            r["encryption_keys_env"], r["encryption_keys_file"])))
    out.setdefault("profiles", list(config.min_ttls))
    out.setdefault("prefix", r["prefix"])
    out.setdefault("redis_url", r["url"])  # for messages; the client is built here
    if "client" not in out:
        target = RedisTarget(
            url=r["url"], prefix=r["prefix"], tls_ca_file=r["tls_ca_file"],
            tls_cert_file=r["tls_cert_file"], tls_key_file=r["tls_key_file"],
            socket_timeout_seconds=r["socket_timeout_seconds"],
            sentinel_password=read_sentinel_password(r["sentinel_password_env"]),
            wait_replicas=r["wait_replicas"], wait_timeout_ms=r["wait_timeout_ms"])
        out["client"] = (connect or client_for)(target)
    return out
