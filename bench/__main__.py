"""Runs every benchmark: ``python -m bench [--quick]`` (``make bench``, ``make bench-quick``).

Each benchmark is a module of this package with ``main(quick: bool)``; it prints its tables
and writes its JSON result under bench/results/. A module that does not exist (yet) is
skipped with a line; a benchmark that raises, or whose ``main`` returns a non-zero int, makes
the whole run exit with status 1 (CI fails on a crash, never on speed).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench.common import machine_line

# In the order they run; each module's main(quick) does the whole benchmark.
BENCHMARKS = (
    "bench.journey",  # cost per update and latency against an echo bot (issue 6, §1)
    "bench.mixed_load",  # interactive replies during a broadcast, the send budget (§2)
    "bench.stats_bench",  # /stats and /export on a seeded data set (§3)
    "bench.resources",  # peak RSS and start-up time (§4)
    "bench.outbox_retention",  # the outbox stays bounded by OUTBOX_RETENTION (issue 13, item 20)
)


def run_all(quick: bool, names: tuple[str, ...] = BENCHMARKS) -> int:
    print(f"Machine: {machine_line()}", flush=True)
    failed: list[str] = []
    timings: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but one of its imports is missing
                raise
            print(f"\n=== {name}: not written yet, skipped", flush=True)
            continue
        print(f"\n=== {name}{' --quick' if quick else ''}", flush=True)
        started = time.monotonic()
        try:
            outcome = module.main(quick)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            traceback.print_exc()
            failed.append(name)
        else:
            if isinstance(outcome, int) and not isinstance(outcome, bool) and outcome != 0:
                failed.append(name)
        timings.append(f"{name} {time.monotonic() - started:.0f} s")
        sys.stdout.flush()
    print(f"\nBenchmarks run: {', '.join(timings) or 'none'}")
    if failed:
        print(f"FAILED (crashed): {', '.join(failed)}")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (CI)")
    parser.add_argument("names", nargs="*", help="only these modules (e.g. journey resources)")
    arguments = parser.parse_args()
    names = tuple(f"bench.{n.removeprefix('bench.')}" for n in arguments.names) or BENCHMARKS
    sys.exit(run_all(arguments.quick, names))


if __name__ == "__main__":
    main()
