"""events.py: the events channel's wire format, against what Redis really carries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from token_worker.events import Event
from token_worker.store import TokenStore
from token_worker.tokens import fingerprint

from .support import make_token, wait_until


def heard(rds: redis.Redis, action: Callable[[], object]) -> str:
    """The raw line ``action`` puts on the channel (a plain subscriber: the wire itself)."""
    pubsub = rds.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("stitch:events")
    try:
        wait_until(lambda: pubsub.get_message(timeout=0.05) is None, 0.2)
        action()
        message = wait_until(lambda: pubsub.get_message(timeout=0.1), 2)
        assert message, "nothing was published"
        return str(message["data"])
    finally:
        pubsub.close()


def test_parse_reads_what_the_publish_script_sends(store: TokenStore, rds: redis.Redis) -> None:
    # the Lua in scripts.PUBLISH builds this line itself: events.py is its twin
    token = make_token(store, 120)
    data = heard(rds, lambda: store.publish("payments", token))
    assert data == f"payments {token.fingerprint}"
    assert Event.parse(data) == Event.published("payments", token.fingerprint)
    assert Event.published("payments", token.fingerprint).encode() == data


def test_purge_and_forget_send_the_purged_line(store: TokenStore, rds: redis.Redis) -> None:
    store.publish("payments", make_token(store, 120))
    assert heard(rds, lambda: store.purge("payments")) == "payments purged"
    assert heard(rds, lambda: store.forget("payments")) == "payments purged"
    assert Event.parse("payments purged") == Event.purged("payments")


def test_report_rejected_sends_the_rejected_line(store: TokenStore, rds: redis.Redis) -> None:
    fp = fingerprint("tok-refused")
    data = heard(rds, lambda: store.report_rejected("payments", fp))
    assert data == f"payments rejected:{fp}"
    assert Event.parse(data) == Event.rejected("payments", fp)


@pytest.mark.parametrize("event", [Event.published("p-1", "0123456789ab"), Event.purged("p"),
                                   Event.rejected("refunds", "ba9876543210")])
def test_every_event_survives_encode_and_parse(event: Event) -> None:
    assert Event.parse(event.encode()) == event
    assert Event.parse(event.encode().encode()) == event  # a client without decoding


@pytest.mark.parametrize("junk", [None, 7, b"\xff\xfe", "", " ", "payments", "payments ",
                                  " 0123456789ab", "payments a b", "payments rejected:",
                                  "payments rejected:a:b", "payments future:kind", ["x"],
                                  "payments purged\n"])
def test_parse_never_raises_on_junk(junk: object) -> None:
    # anyone who can PUBLISH can write on the channel: junk is ignored, never fatal
    assert Event.parse(junk) is None
