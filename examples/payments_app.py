"""A payments service's own Celery app, with token_worker wired in by one call.

Its tasks read Stitch client tokens with :class:`token_worker.TokenReader` and
never see the client secret; ``token_worker.register(app)`` adds the refresh tasks
and their beat entry next to the service's own. Run it (see README.md)::

    TOKEN_WORKER_CONFIG=token_worker.toml celery -A payments_app worker --beat -Q celery,tokens
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import requests
from celery import Celery

import token_worker
from token_worker import TokenReader, token_or_retry

STITCH_API_URL = os.environ.get("STITCH_API_URL", "http://127.0.0.1:8400/api")

app = Celery(
    "payments",
    broker=os.environ.get("PAYMENTS_BROKER_URL", "redis://127.0.0.1:6379/1"),
    backend=os.environ.get("PAYMENTS_RESULT_BACKEND") or None,
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="celery",
    task_routes={"payments.*": {"queue": "celery"}},
    beat_schedule={
        "payments.reconcile": {"task": "payments.reconcile",
                               "schedule": timedelta(minutes=5)},
    },
)
# token_worker.refresh_due / refresh_profile, routed to the config's queue ("tokens"),
# plus a beat entry; the settings above stay as they are
token_worker.register(app)

_reader: TokenReader | None = None


def reader() -> TokenReader:
    """One reader per process (it caches tokens and follows publishes)."""
    global _reader
    if _reader is None:
        # needs only the [redis] part of the config: no secret on this host
        _reader = TokenReader.from_config()
    return _reader


def _call_stitch(task: Any, profile: str, payload: dict[str, Any]) -> dict[str, Any]:
    token = token_or_retry(task, reader(), profile, countdown=2, wait=5)
    resp = requests.post(STITCH_API_URL, json=payload, timeout=10,
                         headers={"Authorization": f"{token.token_type} {token.access_token}"})
    if resp.status_code == 401:
        # revoked early: one report makes the fleet refresh it once; then try again
        reader().report_rejected(profile, token)
        raise task.retry(countdown=1)
    resp.raise_for_status()
    # what the service keeps: the outcome, never the token
    return {"status": resp.status_code, "scope": resp.json()["data"]["scope"], **payload}


@app.task(bind=True, name="payments.create_payment", max_retries=5)
def create_payment(self: Any, amount_cents: int, reference: str) -> dict[str, Any]:
    return _call_stitch(self, "payments", {"amount_cents": amount_cents,
                                           "reference": reference})


@app.task(bind=True, name="payments.create_refund", max_retries=5)
def create_refund(self: Any, payment_id: str, amount_cents: int) -> dict[str, Any]:
    return _call_stitch(self, "refunds", {"payment_id": payment_id,
                                          "amount_cents": amount_cents})


@app.task(bind=True, name="payments.create_disbursement", max_retries=5)
def create_disbursement(self: Any, account: str, amount_cents: int) -> dict[str, Any]:
    return _call_stitch(self, "disbursements", {"account": account,
                                                "amount_cents": amount_cents})


@app.task(name="payments.reconcile")
def reconcile() -> None:
    """The service's own periodic job, untouched by register()."""
