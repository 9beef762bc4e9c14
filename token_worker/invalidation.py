"""The reader's cache invalidation: a thread listening on the events channel.

Split from :mod:`token_worker.reader` to keep both small; imports only redis (through
the reader's store) and the standard library.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reader import TokenReader

__all__ = ["THREAD_NAME", "Invalidator"]

log = logging.getLogger("token_worker.reader")

THREAD_NAME = "token_worker-reader-invalidator"


class Invalidator(threading.Thread):
    """Listens on the events channel and drops cache entries as tokens change."""

    def __init__(self, reader: TokenReader) -> None:
        super().__init__(name=THREAD_NAME, daemon=True)
        self.reader = reader
        self.healthy = False
        self.stopping = threading.Event()

    def run(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            pubsub = self.reader.store.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(self.reader.store.keys.events())
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # anything published before now was missed: start clean
                        self.reader._invalidate_all()
                        self.healthy = True
                        backoff = 0.1
                    elif message["type"] == "message":
                        self.reader._invalidate(str(message["data"]).split(" ", 1)[0])
            except Exception as exc:  # noqa: BLE001
                # any failure (incl. a pool closed under us) means "channel down": the
                # cache is off until we are resubscribed; the thread itself must live on
                log.debug("invalidation channel down (%s); cache off until resubscribed",
                          type(exc).__name__)
            finally:
                self.healthy = False
                self.reader._invalidate_all()
                with contextlib.suppress(Exception):  # already broken; we reconnect
                    pubsub.close()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self.stopping.set()
