"""The one long-lived subscriber to the events channel: a thread that reconnects forever.

The reader's cache invalidator (:mod:`token_worker.invalidation`) and the worker's
listener (:mod:`token_worker.listener`) are this thread with their own callbacks.
Waiting for a condition (``get(wait=)``, ``--wait``) is :meth:`TokenStore.wait_for`
instead: it subscribes for as long as the wait lasts.

Imports only the standard library and the event type (the reader imports it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .events import Event

if TYPE_CHECKING:
    from .store import TokenStore

__all__ = ["Subscriber"]

log = logging.getLogger("token_worker.subscriber")

# how long one read blocks: how soon stop() is noticed, and a dead link with it
POLL_SECONDS = 1.0


def _nothing() -> None:
    pass


class Subscriber(threading.Thread):
    """Subscribes to the events channel, hands each event over, resubscribes after any loss.

    Args:
        store: whose channel (and Redis) to subscribe to; a pub/sub connection is its
            own connection, taken from the store's pool for each subscription.
        on_event: each well-formed event, in order; anything else on the channel is
            dropped.
        on_subscribe: on each (re)subscription, before ``healthy`` turns True (what was
            published while not subscribed was missed: start clean or catch up here).
        on_down: each time a subscription ends or cannot be made, after ``healthy``
            turns False: with the exception, or None when stopped.
        min_backoff, max_backoff: seconds between attempts, doubling from the first
            to the second while the channel stays down; back to the first once
            subscribed.

    An exception from a callback counts as a loss (it is passed to ``on_down`` and the
    thread resubscribes): the thread itself never ends before :meth:`stop`.
    """

    def __init__(
        self,
        store: TokenStore,
        on_event: Callable[[Event], None],
        *,
        on_subscribe: Callable[[], None] = _nothing,
        on_down: Callable[[Exception | None], None] | None = None,
        name: str = "token_worker-subscriber",
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.store = store
        self._on_event = on_event
        self._on_subscribe = on_subscribe
        self._on_down = on_down
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        # True only while subscribed (cleared before the thread can exit)
        self.healthy = False
        self.subscribed = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        backoff = self.min_backoff
        while not self.stopping.is_set():
            pubsub = None
            error: Exception | None = None
            try:
                pubsub = self.store.pubsub(ignore_subscribe_messages=False)
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._on_subscribe()
                        self.healthy = True
                        self.subscribed.set()
                        backoff = self.min_backoff
                    elif message["type"] == "message":
                        event = Event.parse(message["data"])
                        if event is None:
                            log.debug("events channel: ignored a message that is no event")
                        else:
                            self._on_event(event)
            except Exception as exc:  # noqa: BLE001
                # a Redis error, a pool closed under us, a bug in a callback: the channel
                # is down until we are resubscribed; the thread itself must live on
                error = exc
            finally:
                self.healthy = False
                self.subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # already broken; we reconnect
                        pubsub.close()
            self._down(error)
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _down(self, error: Exception | None) -> None:
        if self._on_down is None:
            return
        try:
            self._on_down(error)
        except Exception:  # noqa: BLE001
            log.exception("events channel: the down callback raised")

    def stop(self, timeout: float | None = None) -> None:
        """Stop; waits up to ``timeout`` for the thread (it wakes within a second)."""
        self.stopping.set()
        if timeout is not None and self.is_alive() and self is not threading.current_thread():
            self.join(timeout)
