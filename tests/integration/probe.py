"""A reader process for the rotation scenario: reads every profile in a loop.

Usage: python probe.py REDIS_URL PREFIX SECONDS PROFILE... ; prints one JSON object:
per profile the reads, errors (TokenUnavailable messages), the fingerprints seen in
order, and the least lifetime any token had left when read.
"""

from __future__ import annotations

import json
import sys
import time

from token_worker import TokenReader, TokenUnavailable


def main() -> None:
    url, prefix, seconds, *profiles = sys.argv[1:]
    # 1s floor: the reader must never be handed a token about to expire
    reader = TokenReader(url, prefix, min_ttl=1.0)
    stats = {p: {"reads": 0, "errors": [], "fingerprints": [], "min_left": None}
             for p in profiles}
    for p in profiles:  # start counting once the fleet has published
        reader.get(p, wait=60)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        for p in profiles:
            s = stats[p]
            try:
                token = reader.get(p)
            except TokenUnavailable as exc:
                s["errors"].append(f"{time.time():.3f} {exc}")
                continue
            s["reads"] += 1
            left = token.expires_in
            s["min_left"] = left if s["min_left"] is None else min(s["min_left"], left)
            if not s["fingerprints"] or s["fingerprints"][-1] != token.fingerprint:
                s["fingerprints"].append(token.fingerprint)
        time.sleep(0.02)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
