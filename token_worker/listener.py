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
import threading

import redis

from .refresh import Refresher

__all__ = ["REJECTED_PREFIX", "Listener"]

log = logging.getLogger("token_worker.listener")

# the event ``store.report_rejected`` publishes: "<profile> rejected:<fingerprint>"
REJECTED_PREFIX = "rejected:"
# notice a Redis restart within a second, without spinning while it stays down
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 1.0


class Listener(threading.Thread):
    """Refreshes rejected tokens at once, and due profiles when the store comes back.

    Args:
        refresher: used by this thread only (its own Redis and HTTP connections).
    """

    def __init__(self, refresher: Refresher) -> None:
        super().__init__(name="token_worker-listener", daemon=True)
        self.refresher = refresher
        self.subscribed = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        backoff = RECONNECT_MIN_SECONDS
        down = False
        store = self.refresher.store
        while not self._stopping.is_set():
            pubsub = store.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(store.keys.events())
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        backoff = RECONNECT_MIN_SECONDS
                        self.subscribed.set()
                        if down:
                            down = False
                            self._catch_up()
                    elif message["type"] == "message":
                        self._handle(str(message["data"]))
            except (redis.RedisError, OSError) as exc:
                if not down:  # once per outage, not once per reconnect attempt
                    log.warning("listener: token store unreachable, retrying: %s", exc)
                down = True
            except Exception:
                # a bug or an odd message must not end prompt refreshes for this worker's
                # lifetime: log it, resubscribe, and catch up on what may have been missed
                log.exception("listener: unexpected error; resubscribing")
                down = True
            finally:
                self.subscribed.clear()
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    def _catch_up(self) -> None:
        """The store is back: refresh what is due (everything, if it came back empty)."""
        try:
            self.refresher.sync_profiles()
            due = self.refresher.due_profiles()
        except (redis.RedisError, OSError) as exc:
            log.warning("listener: token store back but not answering: %s", exc)
            return
        log.info("listener: token store reachable again; due profiles=%s",
                 ",".join(due) or "none")
        for profile in due:
            self._refresh(profile, "store back")

    def _handle(self, data: str) -> None:
        profile, _, event = data.partition(" ")
        if not event.startswith(REJECTED_PREFIX) or profile not in self.refresher.config.profiles:
            return
        # not forced: due only while the rejected token is still the current one, so a
        # report of a token already replaced costs nothing
        self._refresh(profile, f"token rejected fingerprint={event[len(REJECTED_PREFIX):]}")

    def _refresh(self, profile: str, why: str) -> None:
        try:
            # scheduled: when another worker's listener attempted first and failed, its
            # backoff stands (every worker hears each report)
            result = self.refresher.refresh_profile(profile, scheduled=True)
        except (redis.RedisError, OSError) as exc:
            # the schedule still says due: beat retries once Redis answers
            log.warning("listener: profile=%s (%s) refresh skipped, token store "
                        "unreachable: %s", profile, why, exc)
            return
        except Exception:
            # whatever went wrong, the listener must keep listening
            log.exception("listener: profile=%s (%s) refresh raised", profile, why)
            return
        log.info("listener: profile=%s (%s) refresh outcome=%s", profile, why, result.outcome)

    def stop(self, timeout: float | None = None) -> None:
        """Stop listening; waits up to ``timeout`` for the thread (a refresh may be running)."""
        self._stopping.set()
        if timeout is not None and self.is_alive():
            self.join(timeout)
