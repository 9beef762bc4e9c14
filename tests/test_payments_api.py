"""examples/payments_api.py, the FastAPI service, against real Redis, a refresher with its
listener, and the emulator's API (which answers 401 to a revoked token)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from token_worker.config import Config
from token_worker.listener import Listener
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import REPO


@pytest.fixture
def listener(config: Config) -> Iterator[Listener]:
    running = Listener(Refresher.from_config(config))
    running.start()
    assert running.subscribed.wait(5)
    yield running
    running.stop(5)


def _example(monkeypatch: pytest.MonkeyPatch, config_path: Path, api_url: str) -> ModuleType:
    monkeypatch.setenv("TOKEN_WORKER_CONFIG", str(config_path))
    monkeypatch.setenv("STITCH_API_URL", api_url)
    spec = importlib.util.spec_from_file_location("payments_api",
                                                  REPO / "examples" / "payments_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fastapi_example_pays_and_heals_a_401(
        refresher: Refresher, listener: Listener, emulator: Emulator, config_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    refresher.refresh_profile("payments")
    api = _example(monkeypatch, config_path, emulator.base_url + "/api")
    with TestClient(api.app) as client:
        health = client.get("/healthz").json()["payments"]
        assert health["expires_in"] > 60 and len(health["fingerprint"]) == 12
        paid = client.post("/payments", json={"amount": 100}).json()
        assert paid["status"] == 200
        # Stitch revokes the token early: the request heals itself with one new token
        emulator.revoke(emulator.issued_tokens[-1])
        calls = emulator.calls
        healed = client.post("/payments", json={"amount": 100}).json()
        assert healed["status"] == 200 and emulator.calls == calls + 1
        assert client.get("/healthz").json()["payments"]["fingerprint"] != \
            health["fingerprint"]
