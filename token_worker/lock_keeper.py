"""Keeping a refresh lock alive while its holder works."""

from __future__ import annotations

import threading

from .exceptions import StoreError
from .store import TokenStore

__all__ = ["LockKeeper"]


class LockKeeper:
    """Extends the refresh lock while this holder works, so a slow Redis or a long run of
    retries never lets it lapse under a live holder; stops at the first failed extend."""

    def __init__(self, store: TokenStore, profile: str, owner: str, ttl: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(store, profile, owner, ttl),
                                        name="token_worker-lock-keeper", daemon=True)
        self._thread.start()

    def _run(self, store: TokenStore, profile: str, owner: str, ttl: float) -> None:
        while not self._stop.wait(ttl / 3):
            try:
                if not store.extend_lock(profile, owner, ttl):
                    return  # taken over: the publish fence refuses our result
            except StoreError:
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
