"""Where the config file is, reading it, and the environment's overrides.

Stdlib only: the config model (:func:`token_worker.config.load_config`) and the light
reader loader (:mod:`token_worker.reader_config`) both start here, so a path, a
missing file, bad TOML and ``$TOKEN_WORKER_REDIS_URL`` mean the same to both.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from .constants import DEFAULT_PATH, ENV_BROKER_URL, ENV_CONFIG, ENV_REDIS_URL
from .exceptions import ConfigError

__all__ = ["name_sources", "read_config_file", "resolve_path", "with_env_overrides"]


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$TOKEN_WORKER_CONFIG``, else ``./token_worker.toml``."""
    return Path(path or os.environ.get(ENV_CONFIG) or DEFAULT_PATH)


def read_config_file(path: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """(the resolved path, the parsed TOML).

    Raises:
        ConfigError: the file is missing, unreadable or not TOML.
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
        return resolved, tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{resolved}: not valid TOML ({exc})"]) from None


def with_env_overrides(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(``data`` with ``$TOKEN_WORKER_REDIS_URL`` / ``_BROKER_URL`` applied, the renames
    :func:`name_sources` makes in messages about them)."""
    data = dict(data)
    overridden = {}
    for env, section, key in ((ENV_REDIS_URL, "redis", "url"),
                              (ENV_BROKER_URL, "celery", "broker_url")):
        if os.environ.get(env):
            sect = data.get(section)
            data[section] = {**(sect if isinstance(sect, dict) else {}), key: os.environ[env]}
            overridden[f"{section}.{key}:"] = f"{section}.{key} (from ${env}):"
    return data, overridden


def name_sources(problems: list[str], overridden: dict[str, str]) -> list[str]:
    """Say where an overridden value really came from (the variable, not the file)."""
    for plain, named in overridden.items():
        problems = [named + p.removeprefix(plain) if p.startswith(plain) else p
                    for p in problems]
    return problems
