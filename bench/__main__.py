"""Run the benchmarks, print the table, and write it into BENCHMARKS.md.

    .venv/bin/python -m bench                 # all five, writes BENCHMARKS.md
    .venv/bin/python -m bench reader due      # some of them (prints only)
    .venv/bin/python -m bench --quick         # smaller and shorter, for a smoke run (prints only)

Names: reader, due, footprint, fleet, throughput (also runnable alone:
``python -m bench.reader_latency`` and so on).
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable

from . import due_checks, fleet, footprint, reader_latency, scale, throughput
from .common import REPO, Row, machine, table

BENCHES: dict[str, Callable[[bool], list[Row]]] = {
    "reader": reader_latency.run,
    "due": due_checks.run,
    "footprint": footprint.run,
    "fleet": fleet.run,
    "throughput": throughput.run,
    "scale": scale.run,
}
BEGIN, END = "<!-- bench:results -->", "<!-- /bench:results -->"
COMMAND = ".venv/bin/python -m bench   # or: bench/run"


def results_block(rows: list[Row], seconds: float, quick: bool) -> str:
    m = machine()
    lines = [
        BEGIN,
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds / 60:.1f} "
        f"min{' (--quick)' if quick else ''}. Reproduce from the repository root with "
        f"`{COMMAND}`.",
        "",
        "| machine | |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in m.items()),
        "",
        table(rows),
        END,
    ]
    return "\n".join(lines)


def write_markdown(block: str) -> None:
    path = REPO / "BENCHMARKS.md"
    if path.exists() and BEGIN in (text := path.read_text()) and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(head + block + tail)
    else:
        path.write_text("# Benchmarks\n\n" + block + "\n")
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description="token_worker benchmarks")
    ap.add_argument("names", nargs="*", choices=[*BENCHES, []], metavar="NAME",
                    help=f"which to run (default all): {', '.join(BENCHES)}")
    ap.add_argument("--quick", action="store_true", help="smaller, shorter runs")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    names = args.names or list(BENCHES)
    rows: list[Row] = []
    started = time.monotonic()
    for name in names:
        t = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            got = BENCHES[name](args.quick)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            traceback.print_exc()
            got = [Row(name, f"FAILED: {type(exc).__name__}: {exc}", float("nan"), float("nan"),
                       "", met=False)]
        rows += got
        print(table(got), flush=True)
        print(f"   ({time.monotonic() - t:.0f} s)", flush=True)
    seconds = time.monotonic() - started
    print("\n" + table(rows))
    if not args.no_write and not args.names and not args.quick:
        write_markdown(results_block(rows, seconds, args.quick))


if __name__ == "__main__":
    main()
