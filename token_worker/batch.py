"""Several claimed refreshes in one task: each under its own lock, with its own outcome.

What beat's batches (:mod:`token_worker.plan`) run. The refreshes run on a few threads
at once, so a batch costs the endpoint's latency a few times over, not once per profile;
each goes through :meth:`Refresher.refresh_profile` exactly as a one-profile task does
(its lock, re-check, status record, metrics and claim release).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .exceptions import ConfigError, StoreError
from .outcomes import RefreshResult
from .plan import BATCH_THREADS
from .refresh import Refresher

__all__ = ["BatchItem", "refresh_batch"]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One profile of a batch: its result, or why it did not run."""

    profile: str
    result: RefreshResult | None = None
    unknown: ConfigError | None = None  # not in this worker's config: hand it on
    unreachable: StoreError | None = None  # the store failed; the claim lapses


def refresh_batch(refresher: Refresher, profiles: list[str], *,
                  threads: int = BATCH_THREADS) -> list[BatchItem]:
    """Refresh each of ``profiles`` as beat's claimed, scheduled refresh; in order."""
    names = list(dict.fromkeys(profiles))  # a name twice is one refresh

    def one(profile: str) -> BatchItem:
        try:
            return BatchItem(profile, refresher.refresh_profile(profile, scheduled=True,
                                                                claimed=True))
        except ConfigError as exc:
            return BatchItem(profile, unknown=exc)
        except StoreError as exc:
            return BatchItem(profile, unreachable=exc)

    if len(names) <= 1 or threads <= 1:
        return [one(p) for p in names]
    with ThreadPoolExecutor(max_workers=min(threads, len(names)),
                            thread_name_prefix="token_worker-batch") as pool:
        return list(pool.map(one, names))
