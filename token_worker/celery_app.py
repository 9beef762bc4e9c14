"""The ready Celery app: ``celery -A token_worker.celery_app worker --beat -Q tokens``.

Settings come from the top-level ``celeryconfig.py`` (the file operators copy
and edit; Celery looks in the current directory first, then the installed
copy), token_worker's tasks and beat entry from :func:`token_worker.register`.
Both read the token_worker config: ``$TOKEN_WORKER_CONFIG``, else
``./token_worker.toml``.
"""

from __future__ import annotations

from celery import Celery

from .tasks import register

__all__ = ["app"]

app = Celery("token_worker")
app.config_from_object("celeryconfig")
register(app)
