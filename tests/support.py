"""Test data and process helpers; the real parts (redis-server, configs) are in
:mod:`token_worker.testing`, re-exported here for the tests."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from token_worker.events import Event
from token_worker.store import TokenStore, connect_redis
from token_worker.subscriber import Subscriber
from token_worker.testing import CLIENT_ID, RedisServer, free_port, wait_until, write_config

__all__ = ["CLIENT_ID", "REPO", "SECRET", "SECRET_CLIENT", "RedisServer", "config_data",
           "config_problems", "env_with", "free_port", "iter_lines", "make_token", "python",
           "record_publishes", "wait_until", "write_config"]

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-" + "Zq9xWv" * 4  # long and distinctive, so a leak grep cannot miss it


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("STITCH_CLIENT_SECRET", SECRET)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python() -> str:
    return sys.executable


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text(errors="replace").splitlines()


def record_publishes(url: str, out: dict[str, list[float]],
                     clock: Callable[[], float] = time.monotonic) -> Subscriber:
    """Record, per profile, when each token is published; subscribed on return.

    ``stop(timeout)`` the returned thread to end it.
    """
    def published(event: Event) -> None:
        if event.kind == "published":
            out.setdefault(event.profile, []).append(clock())

    recorder = Subscriber(TokenStore(connect_redis(url)), published,
                          name="tests-publish-recorder")
    recorder.start()
    assert recorder.subscribed.wait(5), "the publish recorder did not subscribe"
    return recorder


SECRET_CLIENT = {"client_id": CLIENT_ID, "client_secret_env": "STITCH_CLIENT_SECRET"}


def config_data(**changes: Any) -> dict[str, Any]:
    """A minimal valid config mapping, with top-level sections replaced by ``changes``."""
    data: dict[str, Any] = {
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "clients": {"main": dict(SECRET_CLIENT)},
        "profiles": {"payments": {"scopes": ["client_paymentrequest"]}},
    }
    data.update(changes)
    return data


def config_problems(data: dict[str, Any]) -> list[str]:
    """The problems ``parse_config`` refuses ``data`` with (it must refuse it)."""
    import pytest

    from token_worker.config import parse_config
    from token_worker.exceptions import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def make_token(store: Any, lifetime: float, *, access: str = "tok-A",
               issued_ago: float = 0.0, refresh_in: float | None = None) -> Any:
    """A token issued now (or ``issued_ago``) that lives ``lifetime`` seconds."""
    from token_worker.tokens import Token

    now = store.time()
    issued_at = now - issued_ago
    return Token(access_token=access, token_type="Bearer", scopes=("client_paymentrequest",),
                 issued_at=issued_at, expires_at=now + lifetime,
                 refresh_at=now + (refresh_in if refresh_in is not None else lifetime / 2))


def raw_status(store: Any, profile: str = "payments") -> dict[str, str]:
    """The status hash as Redis holds it (strings), for assertions on its exact fields."""
    raw: dict[str, str] = store.redis.hgetall(store.keys.status(profile))
    return raw


def rabbitmq_up() -> bool:
    """Whether the machine's RabbitMQ answers on 127.0.0.1:5672 (scripts/test starts it)."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False
