"""A/B of one in-process refresh (forced, REFRESHED path) between two checkouts.

    PYTHONPATH=/tmp/base .venv/bin/python bench/ab_refresh.py   # a `git worktree` of the base
    .venv/bin/python bench/ab_refresh.py                           # this checkout

Prints CPU ms per refresh (min and median of 5 rounds of 300, after 50 warm-up calls),
against a private redis-server and the emulator in the same process. Run the two
alternately, several times: the machine's noise is larger than small differences.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    import token_worker

    root = str(Path(token_worker.__file__ or "?").parent.parent)
    from token_worker.config import load_config
    from token_worker.refresh import Refresher
    from token_worker.testing import CLIENT_ID, Emulator, RedisServer, write_config

    secret = "s3cret-for-the-a-b-bench"  # noqa: S105 - a test credential for the emulator
    os.environ["STITCH_CLIENT_SECRET"] = secret
    with RedisServer() as server:
        emulator = Emulator(clients={CLIENT_ID: secret}).start()
        config = write_config(Path(tempfile.mkdtemp()) / "c.toml", redis_url=server.url,
                              token_url=emulator.url)
        refresher = Refresher.from_config(load_config(config))
        for _ in range(50):
            refresher.refresh_profile("payments", force=True)
        rounds = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(300):
                refresher.refresh_profile("payments", force=True)
            rounds.append((time.process_time() - started) / 300 * 1000)
        refresher.close()
        emulator.stop()
    print(f"{root}: CPU ms per refresh min {min(rounds):.3f} "
          f"median {statistics.median(rounds):.3f}")


if __name__ == "__main__":
    main()
