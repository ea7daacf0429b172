"""`python -m fuzz`: run the targets with the given counts and print the summary (see fuzz.runner)."""

from __future__ import annotations

import argparse
import sys

from fuzz.runner import main_loop
from fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    for t in TARGETS.values():
        parser.add_argument(f"--{t.name}", type=int, default=t.default, metavar="N", help=f"{t.unit}s to run")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--seed", type=int, default=1, help="base seed; each shard derives its own")
    parser.add_argument("--only", default="", help="comma-separated targets to run (default: all)")
    args = parser.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    unknown = only - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    counts = [(t, getattr(args, t.name)) for t in TARGETS.values() if not only or t.name in only]
    text, failed = main_loop(counts, args.seed, args.jobs)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
