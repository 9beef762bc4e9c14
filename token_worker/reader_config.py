"""What ``TokenReader.from_config()`` takes from the worker's config file.

Split from :mod:`token_worker.reader`, which imports only this module's constants and
:func:`gapless_min_ttl`'s name: the config layer (pydantic) loads only when a reader is
built from a config file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

__all__ = ["DEFAULT_CACHE_MAX_AGE", "DEFAULT_MIN_TTL", "gapless_min_ttl", "reader_options"]

# a token with less than this left is not handed out (a payment call takes a while)
DEFAULT_MIN_TTL = 5.0
# bound on serving from the cache should the invalidation channel fail silently (a
# half-open connection): under the 100 ms promise, and still ~200x fewer Redis reads
DEFAULT_CACHE_MAX_AGE = 0.08


def gapless_min_ttl(config: Config, profile: str) -> float:
    """The largest ``min_ttl`` (capped at the default) that leaves readers no gap.

    At ``refresh_at`` the old token has at least ``margin`` seconds left (jitter only
    moves ``refresh_at`` earlier). Beat notices within one ``interval``, and a
    successful call is published within one request deadline (``timeout_seconds``,
    enforced on the whole request). So the new token is in Redis while the old one
    still has ``margin - interval - timeout`` left; a reader refusing less than that
    never sees a window where the old token is refused and the new one is missing.
    """
    room = (config.margin_for(profile) - config.refresh.interval_seconds
            - config.stitch.timeout_seconds)
    return max(0.0, min(DEFAULT_MIN_TTL, room))


def reader_options(path: str | None, options: dict[str, Any],
                   connect: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """``TokenReader`` keyword arguments for the config at ``path``, ``options`` winning.

    Each profile's ``min_ttl`` is :func:`gapless_min_ttl` unless ``min_ttl=`` is given.
    ``connect`` builds the client from the ``[redis]`` settings (default: the sync one).
    """
    from .config import load_config
    from .connection import client_for

    config = load_config(path)
    out = dict(options)
    if "min_ttl" not in out:
        out.setdefault("min_ttls", {name: gapless_min_ttl(config, name)
                                    for name in config.profiles})
    r = config.redis
    if r.encryption_keys_env or r.encryption_keys_file:
        from .crypto import codec_for

        out.setdefault("codec", codec_for(config))
    out.setdefault("profiles", list(config.profiles))
    out.setdefault("prefix", r.prefix)
    out.setdefault("redis_url", r.url)  # for messages; the client is built here
    if "client" not in out:
        out["client"] = (connect or client_for)(r)
    return out
