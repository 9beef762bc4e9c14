"""``token-worker worker``: a Celery worker (with embedded beat) in this process.

The CLI side of :mod:`token_worker.celery_app`; kept out of :mod:`token_worker.tasks`,
which the app itself imports.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from .config import Config
from .constants import ENV_CONFIG

__all__ = ["run_worker"]


def run_worker(config: Config, beat: bool = True, concurrency: int | None = None,
               extra_args: list[str] | None = None) -> None:
    """Run a Celery worker (with embedded beat) on the configured queue, in this process.

    The worker is ``token_worker.celery_app``, configured by ``celeryconfig.py``;
    ``$TOKEN_WORKER_CONFIG`` is set to this config so both read the same file.

    Args:
        config: the loaded config (its path is handed to the worker).
        beat: embed beat (one beat per fleet is enough; more are harmless).
        concurrency: worker processes (default: Celery's, the number of CPUs).
        extra_args: more ``celery worker`` options, passed through.

    Raises:
        SystemExit: with the worker's exit status, when it is not 0.
    """
    if config.path:
        os.environ[ENV_CONFIG] = str(Path(config.path).resolve())
    # imported here: the app reads $TOKEN_WORKER_CONFIG (set above) when it is imported
    from .celery_app import app

    level = logging.getLevelName(logging.getLogger("token_worker").getEffectiveLevel())
    argv = ["worker", "-Q", config.celery.queue, "--loglevel", str(level)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    with tempfile.TemporaryDirectory(prefix="token_worker-beat-") as tmp:
        if beat:
            # should celeryconfig choose a persistent scheduler, its file stays out of the CWD
            argv += ["--beat", "--schedule", os.path.join(tmp, "celerybeat-schedule")]
        # start(), unlike worker_main(), hands back the worker's exit status
        code = app.start(argv + list(extra_args or []))
    if code:
        raise SystemExit(code)
