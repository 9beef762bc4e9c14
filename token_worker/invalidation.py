"""The reader's cache invalidation: the events subscriber, dropping entries as tokens change.

Split from :mod:`token_worker.reader` to keep both small; imports only the standard
library and the subscriber (the reader's store is the only door to Redis).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .events import Event
from .subscriber import Subscriber

if TYPE_CHECKING:
    from .reader import TokenReader

__all__ = ["THREAD_NAME", "Invalidator"]

log = logging.getLogger("token_worker.reader")

THREAD_NAME = "token_worker-reader-invalidator"


class Invalidator(Subscriber):
    """Drops cache entries as tokens change; ``healthy`` only while subscribed.

    The reader serves from its cache only while ``healthy``; every (re)subscription
    and every loss empties it, since anything published meanwhile was missed.
    """

    def __init__(self, reader: TokenReader) -> None:
        super().__init__(reader.store, self._on_event, on_subscribe=reader._invalidate_all,
                         on_down=self._on_down, name=THREAD_NAME, min_backoff=0.1,
                         max_backoff=5.0)
        self.reader = reader

    def _on_event(self, event: Event) -> None:
        if event.kind == "purged":
            self.reader._forget_last(event.profile)
        else:
            self.reader._invalidate(event.profile)

    def _on_down(self, error: Exception | None) -> None:
        if error is not None:
            log.debug("invalidation channel down (%s); cache off until resubscribed",
                      type(error).__name__)
        self.reader._invalidate_all()
