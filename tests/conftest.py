from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from token_worker.config import Config, load_config
from token_worker.refresh import Refresher
from token_worker.store import TokenStore, connect_redis
from token_worker.testing.emulator import Emulator

from .support import CLIENT_ID, SECRET, RedisServer, write_config


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # timing tests share one xdist worker (never two at once) unless they name their own
    # group (the soak runs beside them: it waits, it does not load the machine; two short
    # ones follow it there, so both workers finish at about the same time)
    for item in items:
        if item.get_closest_marker("timing") and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group("timing"))


@pytest.fixture(autouse=True)
def _restore_token_worker_logging() -> Iterator[None]:
    """The CLI configures the token_worker logger (own handler, no propagation); undo it
    after each test so a later test's caplog still sees token_worker's logs."""
    logger = logging.getLogger("token_worker")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; never the shared instance."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis_server.client()
    client.flushall()
    yield redis_server.url
    try:
        client.flushall()
    except redis.RedisError:
        pass


@pytest.fixture
def rds(redis_server: RedisServer, redis_url: str) -> redis.Redis:
    return redis_server.client()


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    emu = Emulator(clients={CLIENT_ID: SECRET}).start()
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_session: Emulator) -> Emulator:
    emulator_session.reset()
    emulator_session.set_expires_in(3600)
    return emulator_session


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STITCH_CLIENT_SECRET", SECRET)
    return SECRET


@pytest.fixture
def config_path(tmp_path: Path, redis_url: str, emulator: Emulator, secret_env: str) -> Path:
    return write_config(
        tmp_path / "token_worker.toml", redis_url=redis_url, token_url=emulator.url,
        profiles={"payments": ["client_paymentrequest"], "refunds": ["client_refund"]},
    )


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture
def refresher(config: Config) -> Iterator[Refresher]:
    r = Refresher.from_config(config)
    yield r
    r.close()


@pytest.fixture
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's shell must not decide which config or Redis a test sees."""
    for name in ("TOKEN_WORKER_REDIS_URL", "TOKEN_WORKER_BROKER_URL", "TOKEN_WORKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(redis_url: str) -> Iterator[TokenStore]:
    client = connect_redis(redis_url)
    yield TokenStore(client, "stitch")
    client.close()
