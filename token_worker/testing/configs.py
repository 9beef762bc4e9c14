"""The one TOML config writer of tests, benchmarks and the demo.

It writes text, not a model: tests edit the file afterwards (a line into ``[redis]``,
a key renamed) to reach states the config model would refuse to produce.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLIENT_ID", "SECRET_ENV", "toml_value", "write_config"]

CLIENT_ID = "test-7a1c"
SECRET_ENV = "STITCH_CLIENT_SECRET"  # noqa: S105 - a variable name


def toml_value(value: Any) -> str:
    """A TOML literal for a string, number, bool or list of them (JSON strings are TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def _table(name: str, keys: Mapping[str, Any]) -> list[str]:
    return [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None),
            ""]


def write_config(
    path: Path,
    *,
    redis_url: str,
    token_url: str,
    profiles: Mapping[str, Sequence[str] | Mapping[str, Any]] | None = None,
    prefix: str | None = "stitch",
    broker_url: str | None = None,
    queue: str | None = None,
    margin: float = 600,
    interval: float = 30,
    retries: int | None = None,
    timeout: float = 5,
    client_id: str = CLIENT_ID,
    secret_env: str = SECRET_ENV,
    secret_file: Path | None = None,
    clients: Mapping[str, Mapping[str, Any]] | None = None,
    redis: Mapping[str, Any] | None = None,
    refresh: Mapping[str, Any] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    extra: str = "",
) -> Path:
    """Write a config and return its path.

    By default one client ``main`` whose secret is read from ``$STITCH_CLIENT_SECRET``
    (or ``secret_file``), and the broker on db 1 of the store's Redis.

    Args:
        profiles: name to scope list, or to the whole profile table; default one
            ``payments`` profile.
        prefix: ``redis.prefix``; None leaves the key out.
        queue, retries: written only when given.
        clients: the ``[clients.*]`` tables, replacing the default client.
        redis: more ``[redis]`` keys.
        refresh: more ``[refresh]`` keys.
        sections: more tables (``{"metrics": {"port": 9100}}``), after ``[refresh]``.
        extra: text appended as it is.
    """
    broker = broker_url or redis_url.rsplit("/", 1)[0] + "/1"
    if clients is None:
        secret: dict[str, Any] = ({"client_secret_file": str(secret_file)} if secret_file
                                  else {"client_secret_env": secret_env})
        clients = {"main": {"client_id": client_id, **secret}}
    lines = [
        *_table("redis", {"url": redis_url, "prefix": prefix, **(redis or {})}),
        *_table("celery", {"broker_url": broker, "queue": queue}),
        *_table("stitch", {"token_url": token_url, "timeout_seconds": timeout}),
        *_table("refresh", {"margin_seconds": margin, "interval_seconds": interval,
                            "retries": retries, **(refresh or {})}),
    ]
    for name, table in (sections or {}).items():
        lines += _table(name, table)
    for name, client in clients.items():
        lines += _table(f"clients.{name}", client)
    for name, profile in (profiles or {"payments": ["client_paymentrequest"]}).items():
        lines += _table(f"profiles.{name}",
                        profile if isinstance(profile, Mapping) else {"scopes": list(profile)})
    path.write_text("\n".join(lines) + extra)
    return path
