"""Metrics: scraped over HTTP, parsed with prometheus-client's parser, checked against Redis."""

from __future__ import annotations

import logging
import multiprocessing
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from token_worker import metrics
from token_worker.config import Config, load_config
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import REPO, env_with, free_port, wait_until

VENV_BIN = Path(sys.executable).parent
RULES = REPO / "ops" / "prometheus-rules.yml"
RUNBOOK = REPO / "ops" / "RUNBOOK.md"


def scrape(port: int) -> dict[str, list[Sample]]:
    """Family name -> samples, as Prometheus would parse them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(families: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    family = re.sub(r"_(total|bucket|count|sum)$", "", sample)
    found = [s.value for s in families.get(family, [])
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{sample}{labels}: {found}"
    return found[0]


def with_metrics_port(config_path: Path, port: int) -> Config:
    config_path.write_text(config_path.read_text()
                           + f'\n[metrics]\nport = {port}\nhost = "127.0.0.1"\n')
    return load_config(config_path)


# -- the sidecar: token-worker metrics --------------------------------------------------
@pytest.fixture
def sidecar(config_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = env_with(TOKEN_WORKER_CONFIG=str(config_path))
    env.pop("STITCH_CLIENT_SECRET")  # an exporter host holds no secret
    proc = subprocess.Popen([str(VENV_BIN / "token-worker"), "metrics", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def up() -> bool:
        try:
            scrape(port)
            return True
        except OSError:
            return False

    try:
        assert wait_until(up, 15), proc.stderr.read() if proc.poll() is not None else "timeout"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_sidecar_serves_per_profile_gauges_matching_redis(
        sidecar: tuple[subprocess.Popen[str], int], refresher: Refresher, rds: redis.Redis,
        emulator: Emulator, config: Config) -> None:
    proc, port = sidecar
    refresher.refresh_profile("payments")
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_client"}])
    for _ in range(2):
        refresher.refresh_profile("refunds", force=True)
    rds.set("stitch:lock:refunds", "someone", px=20_000)

    m = scrape(port)
    status = rds.hgetall("stitch:status:payments")
    assert value(m, "token_worker_up") == 1
    assert value(m, "token_worker_token_expires_in_seconds", profile="payments") == \
        pytest.approx(rds.pttl("stitch:token:payments") / 1000, abs=2)
    assert value(m, "token_worker_token_expires_in_seconds", profile="refunds") == 0
    assert value(m, "token_worker_token_refresh_in_seconds", profile="payments") == \
        pytest.approx(float(status["refresh_at"]) - time.time(), abs=5)
    assert value(m, "token_worker_last_success_timestamp_seconds", profile="payments") == \
        pytest.approx(float(status["last_success_at"]))
    assert value(m, "token_worker_last_success_timestamp_seconds", profile="refunds") == 0
    assert value(m, "token_worker_last_attempt_timestamp_seconds", profile="refunds") == \
        pytest.approx(float(rds.hget("stitch:status:refunds", "last_attempt_at") or 0))
    assert value(m, "token_worker_refresh_consecutive_failures", profile="refunds") == 2
    assert value(m, "token_worker_refresh_consecutive_failures", profile="payments") == 0
    assert value(m, "token_worker_token_state", profile="payments", state="valid") == 1
    assert value(m, "token_worker_token_state", profile="refunds", state="missing") == 1
    assert value(m, "token_worker_refresh_margin_seconds", profile="payments") == \
        config.margin_for("payments")
    assert value(m, "token_worker_refresh_interval_seconds", profile="refunds") == \
        config.refresh.interval_seconds
    assert 0 < value(m, "token_worker_refresh_lock_seconds", profile="refunds") <= 20
    assert value(m, "token_worker_refresh_lock_seconds", profile="payments") == 0
    # the exporter has no worker counters: those live in the worker's endpoint
    assert "token_worker_refresh" not in m
    # SIGTERM is a clean stop
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_redis_down_is_reported_as_a_gauge_not_a_failed_scrape() -> None:
    cfg = Config.model_validate({"redis": {"url": "redis://127.0.0.1:1/0",
                                           "socket_timeout_seconds": 1},
                                 "profiles": {"payments": {"scopes": ["client_refund"]}},
                                 "clients": {"main": {"client_id": "x",
                                                      "client_secret_env": "X"}}})
    from prometheus_client import generate_latest

    text = generate_latest(metrics.status_registry(cfg)).decode()
    families = {f.name: list(f.samples) for f in text_string_to_metric_families(text)}
    assert value(families, "token_worker_up") == 0
    assert "token_worker_token_expires_in_seconds" not in families


def test_metrics_command_port_in_use_is_one_line_exit_1(config_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([str(VENV_BIN / "token-worker"), "--log-level", "ERROR",
                              "--config", str(config_path), "metrics", "--port", str(port)],
                             capture_output=True, text=True, timeout=30, env=env_with())
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: "
                                               "Address already in use"]


# -- in the worker ------------------------------------------------------------------------
def _refresh_in_child(config_path: str) -> None:
    # a pool child: forked after start_worker_metrics, as Celery's prefork pool is
    refresher = Refresher.from_config(load_config(config_path))
    refresher.refresh_profile("refunds", force=True)
    refresher.close()


def test_worker_endpoint_sums_counters_across_forked_pool_processes(
        config_path: Path, emulator: Emulator, rds: redis.Redis) -> None:
    config = with_metrics_port(config_path, free_port())
    handle = metrics.start_worker_metrics(config)
    assert handle is not None
    refresher = Refresher.from_config(config)
    try:
        refresher.refresh_profile("payments")            # refreshed, here
        refresher.refresh_profile("payments")            # not_due
        child = multiprocessing.get_context("fork").Process(
            target=_refresh_in_child, args=(str(config_path),))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope", "count": 1}])
        refresher.refresh_profile("payments", force=True)  # failed

        m = scrape(config.metrics.port)
        assert value(m, "token_worker_refresh_total", profile="payments",
                     outcome="refreshed") == 1
        assert value(m, "token_worker_refresh_total", profile="refunds",
                     outcome="refreshed") == 1               # counted in the child
        assert value(m, "token_worker_refresh_total", profile="payments", outcome="not_due") == 1
        assert value(m, "token_worker_refresh_total", profile="payments", outcome="failed") == 1
        assert value(m, "token_worker_token_request_duration_seconds_count",
                     profile="payments", result="ok") == 1
        assert value(m, "token_worker_token_request_duration_seconds_count",
                     profile="payments", result="invalid_scope") == 1
        assert value(m, "token_worker_token_request_duration_seconds_bucket",
                     profile="refunds", result="ok", le="+Inf") == 1
        # and the Redis gauges on the same endpoint
        assert value(m, "token_worker_refresh_consecutive_failures", profile="payments") == 1
        assert value(m, "token_worker_token_state", profile="refunds", state="valid") == 1
    finally:
        refresher.close()
        handle.close()
    # closed: hooks are no-ops again, nothing left behind
    metrics.observe_refresh("payments", "refreshed")
    assert not Path(handle.directory).exists()


def test_worker_metrics_disabled_by_default_and_a_busy_port_never_stops_the_worker(
        config: Config, caplog: pytest.LogCaptureFixture) -> None:
    assert config.metrics.port == 0
    assert metrics.start_worker_metrics(config) is None
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with caplog.at_level(logging.ERROR, logger="token_worker.metrics"):
            assert metrics.start_worker_metrics(config, port=busy.getsockname()[1]) is None
    assert "running without metrics" in caplog.text


# -- the alert rules ----------------------------------------------------------------------
def exposed_names(config_path: Path, emulator: Emulator) -> set[str]:
    config = with_metrics_port(config_path, free_port())
    handle = metrics.start_worker_metrics(config)
    assert handle is not None
    refresher = Refresher.from_config(config)
    try:
        refresher.refresh_profile("payments")
        families = scrape(config.metrics.port)
    finally:
        refresher.close()
        handle.close()
    return {s.name for samples in families.values() for s in samples}


def test_alert_rules_parse_and_use_only_metrics_the_exporter_exposes(
        config_path: Path, emulator: Emulator) -> None:
    names = exposed_names(config_path, emulator)
    rules = yaml.safe_load(RULES.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {"TokenWorkerTokenExpiringSoon",
                                            "TokenWorkerRefreshFailing",
                                            "TokenWorkerRefreshNotAttempted"}
    runbook = RUNBOOK.read_text()
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", runbook, re.M)}
    for alert in alerts:
        used = set(re.findall(r"\btoken_worker_\w+", alert["expr"]))
        assert used, alert["alert"]
        assert used <= names, f"{alert['alert']} uses unexported {used - names}"
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"]
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{alert['alert']}: no RUNBOOK.md section #{anchor}"
    assert metrics.METRIC_NAMES >= {re.sub(r"_(total|bucket|count|sum|info)$", "", n)
                                    for n in names if n != "token_worker_build_info"}


def test_config_check_warns_when_metrics_are_on_but_the_extra_is_missing(
        config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from token_worker.config import config_warnings

    config = with_metrics_port(config_path, 9465)
    assert not [w for w in config_warnings(config) if w.startswith("metrics.")]
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    (warning,) = [w for w in config_warnings(config) if w.startswith("metrics.")]
    assert "token_worker[metrics]" in warning
    assert metrics.start_worker_metrics(config) is None  # logged; the worker runs on
