"""Prompt refreshes between beat ticks: rejected tokens and a token store come back.

A thread in the main process of every worker that consumes the token queue,
subscribed to the events channel. It refreshes, without waiting for beat:

- a profile whose token the API refused: :meth:`token_worker.TokenReader.report_rejected`
  marks a token once (``SET NX``) and publishes ``"<profile> rejected:<fp>"``; it
  writes nothing else (readers cannot touch the schedule). Every listener in the
  fleet hears it; the fleet-wide lock and the re-check of the rejected marker under
  it leave one endpoint call per rejected token. Beat's due check sees the marker
  too, so a report no listener heard is refreshed at the next tick.
- every due profile once the store answers again after being unreachable: a Redis
  that restarted empty has lost every token, and the worker's broker connection
  (when the broker is that same Redis) reconnects on Celery's slower backoff.

Both go through :meth:`token_worker.refresh.Refresher.refresh_profile`, unforced.
Nothing depends on the listener: a report missed while it reconnected is still
marked, so beat picks it up at its next tick.
"""

from __future__ import annotations

import logging

from .events import Event
from .exceptions import StoreError
from .refresh import Refresher
from .subscriber import Subscriber

__all__ = ["Listener"]

log = logging.getLogger("token_worker.listener")

# notice a Redis restart within a second, without spinning while it stays down
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 1.0


class Listener(Subscriber):
    """Refreshes rejected tokens at once, and due profiles when the store comes back.

    Args:
        refresher: used by this thread only (its own Redis and HTTP connections).
    """

    def __init__(self, refresher: Refresher) -> None:
        super().__init__(refresher.store, self._on_event, on_subscribe=self._on_subscribe,
                         on_down=self._on_down, name="token_worker-listener",
                         min_backoff=RECONNECT_MIN_SECONDS, max_backoff=RECONNECT_MAX_SECONDS)
        self.refresher = refresher
        self._down_since_subscribed = False

    def _on_subscribe(self) -> None:
        if self._down_since_subscribed:
            self._down_since_subscribed = False
            self._catch_up()

    def _on_down(self, error: Exception | None) -> None:
        if error is None:
            return  # stopped
        if isinstance(error, StoreError):
            if not self._down_since_subscribed:  # once per outage, not once per attempt
                log.warning("listener: token store unreachable, retrying: %s", error)
        else:
            # a bug or an odd message must not end prompt refreshes for this worker's
            # lifetime: log it, resubscribe, and catch up on what may have been missed
            log.error("listener: unexpected error; resubscribing", exc_info=error)
        self._down_since_subscribed = True

    def _on_event(self, event: Event) -> None:
        self._handle(event)  # looked up per event: a handler replaced on the instance applies

    def _catch_up(self) -> None:
        """The store is back: refresh what is due (everything, if it came back empty)."""
        try:
            self.refresher.sync_profiles()
            due = self.refresher.due_profiles()
        except StoreError as exc:
            log.warning("listener: token store back but not answering: %s", exc)
            return
        log.info("listener: token store reachable again; due profiles=%s",
                 ",".join(due) or "none")
        for profile in due:
            self._refresh(profile, "store back")

    def _handle(self, event: Event) -> None:
        if event.kind != "rejected" or event.profile not in self.refresher.config.profiles:
            return
        # not forced: due only while the rejected token is still the current one, so a
        # report of a token already replaced costs nothing
        self._refresh(event.profile, f"token rejected fingerprint={event.fingerprint}")

    def _refresh(self, profile: str, why: str) -> None:
        try:
            # scheduled: when another worker's listener attempted first and failed, its
            # backoff stands (every worker hears each report)
            result = self.refresher.refresh_profile(profile, scheduled=True)
        except StoreError as exc:
            # the schedule still says due: beat retries once Redis answers
            log.warning("listener: profile=%s (%s) refresh skipped, token store "
                        "unreachable: %s", profile, why, exc)
            return
        except Exception:
            # whatever went wrong, the listener must keep listening
            log.exception("listener: profile=%s (%s) refresh raised", profile, why)
            return
        log.info("listener: profile=%s (%s) refresh outcome=%s reason=%s", profile, why,
                 result.outcome, result.reason)
