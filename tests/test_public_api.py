"""The public surface: a short sorted __all__, and a reader import that stays light."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

import token_worker
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import env_with, python

HEAVY = ("requests", "celery", "pydantic", "token_worker.client")


def test_all_is_sorted_and_unique() -> None:
    assert token_worker.__all__ == sorted(token_worker.__all__)
    assert len(set(token_worker.__all__)) == len(token_worker.__all__)


def test_every_name_in_all_is_importable() -> None:
    for name in token_worker.__all__:
        assert getattr(token_worker, name) is not None, name


def test_contract_names_are_exported() -> None:
    for name in ("TokenReader", "TokenUnavailable", "TokenWorkerError", "ConfigError",
                 "TokenRequestError", "register"):
        assert name in token_worker.__all__
    assert issubclass(token_worker.TokenUnavailable, token_worker.TokenWorkerError)
    assert issubclass(token_worker.ConfigError, token_worker.TokenWorkerError)
    assert issubclass(token_worker.TokenRequestError, token_worker.TokenWorkerError)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        token_worker.no_such_name  # noqa: B018


def _loaded_after(code: str, *argv: str) -> dict[str, object]:
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules],
                           "result": result}}))
    """)
    proc = subprocess.run([python(), "-c", script, *argv], capture_output=True, text=True,
                          timeout=30, env=env_with())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_is_light() -> None:
    out = _loaded_after("import token_worker\nresult = token_worker.__version__\n")
    assert out["heavy"] == []


def test_reading_a_token_loads_no_http_client_celery_or_pydantic(
        refresher: Refresher, redis_url: str, emulator: Emulator) -> None:
    refresher.refresh_profile("payments")
    out = _loaded_after("""
        import sys
        from token_worker import TokenReader, TokenUnavailable
        reader = TokenReader(redis_url=sys.argv[1], prefix="stitch")
        token = reader.get("payments")
        reader.get_access_token("payments")
        reader.auth("payments")
        try:
            reader.get("refunds")
        except TokenUnavailable as exc:
            missing = exc.reason
        result = [token.token_type, token.scope, missing]
    """, redis_url)
    assert out["result"] == ["Bearer", "client_paymentrequest", "never_fetched"]
    assert out["heavy"] == []


def test_reader_from_config_loads_no_http_client_celery_or_pydantic(
        config_path: Path, refresher: Refresher) -> None:
    refresher.refresh_profile("payments")
    out = _loaded_after("""
        import sys
        from token_worker import TokenReader
        result = TokenReader.from_config(sys.argv[1]).get("payments").token_type
    """, str(config_path))
    assert out["result"] == "Bearer"
    # the config file is read without pydantic (settings_rules), the token client and Celery
    assert out["heavy"] == []
