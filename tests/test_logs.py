"""``--log-format json``: one object per line, the refresh fields as fields, nothing secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from token_worker.testing.emulator import Emulator

from .support import SECRET, env_with

TOKEN_WORKER = str(Path(sys.executable).parent / "token-worker")


def json_lines(stderr: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records, stderr
    return records


def refresh_json(config_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                          list[dict[str, Any]]]:
    out = subprocess.run([TOKEN_WORKER, "--log-format", "json", "--config", str(config_path),
                          "refresh", *args, "--local"], capture_output=True, text=True,
                         env=env_with(), timeout=60)
    return out, json_lines(out.stderr)


def test_json_log_line_per_refresh_carries_structured_fields(config_path: Path,
                                                             emulator: Emulator) -> None:
    out, records = refresh_json(config_path, "--all")
    assert out.returncode == 0, out.stderr
    refreshed = {r["profile"]: r for r in records if r.get("outcome") == "refreshed"}
    assert set(refreshed) == {"payments", "refunds"}
    for record in refreshed.values():
        assert record["logger"] == "token_worker.refresh"
        assert record["level"] == "INFO"
        assert isinstance(record["duration"], float) and record["duration"] >= 0
        assert len(record["fingerprint"]) == 12
        assert record["error_code"] is None
        assert record["message"].startswith("refresh profile=")


def test_json_log_line_for_a_failure_names_the_error_code(config_path: Path,
                                                          emulator: Emulator) -> None:
    emulator.set_faults([{"mode": "oauth_error", "error": "invalid_client"}])
    out, records = refresh_json(config_path, "payments")
    assert out.returncode == 1
    (failed,) = [r for r in records if r.get("outcome") == "failed"]
    assert failed["profile"] == "payments"
    assert failed["error_code"] == "invalid_client"
    assert failed["fingerprint"] is None
    assert failed["level"] == "ERROR"


def test_json_logs_hold_no_token_or_secret(config_path: Path, emulator: Emulator) -> None:
    outputs = []
    for faults, args in (([], ["--all"]), ([], ["--all", "--force"]),
                         ([{"mode": "echo"}], ["--all", "--force"])):  # echo: reflects the form
        emulator.set_faults(faults)
        out, _ = refresh_json(config_path, *args)
        outputs.append(out.stdout + out.stderr)
    assert len(emulator.issued_tokens) >= 4
    text = "\n".join(outputs)
    assert SECRET not in text
    assert not [t[:12] for t in emulator.issued_tokens if t in text]
