"""``token-worker demo``: its options; the demo itself is :mod:`token_worker.demo`.

Apart from :mod:`token_worker.cli` so that the command line's main module keeps room;
``cli`` adds this command to its group.
"""

from __future__ import annotations

import click

from .cli_support import Seconds, State, break_list
from .cli_support import errors as _errors

__all__ = ["demo"]

pass_state = click.make_pass_decorator(State)


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Emulator port (default: a free one).")
@click.option("--lifetime", type=Seconds(min=5, max=604800), default=30, show_default=True,
              help="Token lifetime the emulator issues, in seconds.")
@click.option("--duration", type=Seconds(min=1), default=None, metavar="SECONDS",
              help="Stop by itself after this many seconds (CI, scripts); default: until "
                   "q or Ctrl-C, or with --break once the last break has recovered.")
@click.option("--log", "log_mode", is_flag=True, default=None,
              help="Plain lines, not the live view (default when stdout is not a terminal).")
@click.option("--break", "breaks", callback=break_list, metavar="LIST",
              help="Breaks to run one after the other: outage,redis,kill,401.")
@click.option("--private-redis", is_flag=True,
              help="Start a private redis-server even when one answers (to restart it).")
@pass_state
@_errors
def demo(state: State, port: int, lifetime: float, duration: float | None,
         log_mode: bool | None, breaks: list[str] | None, private_redis: bool) -> None:
    """Emulator, two workers with beat, payment tasks, and a live view with keys that
    break things."""
    from .demo import run_demo

    run_demo(state.config_path, port=port, lifetime=lifetime, duration=duration,
             breaks=breaks, log_mode=log_mode, private_redis=private_redis)
