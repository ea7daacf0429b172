"""Run `make verify`'s oracle modules on every core, with a progress line: cases done, rate, time left.

Usage: .venv/bin/python bench/verify_run.py --log LOG [--jobs N] MODULE...

The modules run under pytest-xdist (`-n JOBS`, default: all cores), each worker with its own oracle
processes and KVM vCPU. Every judged case appends a row to LOG (VMMIO_VERIFY_LOG); the progress line
counts them against the cases the budgets promise (VMMIO_ORACLE_CASES split over the families, per
oracle that can run here), so its "time left" is an estimate: the KVM oracle does not log the known
KVM behaviours it meets, and generators may stop a family short. pytest's own output is held back and
printed when it ends, so it does not tear the progress line. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

INTERVAL_TTY = 0.5  # seconds between progress updates on a terminal
INTERVAL_LOG = 30.0  # ... and in a log file (CI), one line each


def expected_cases(modules: list[str]) -> int:
    """Cases the budgets promise for the oracle modules (or node ids naming one family: `...[mov]`)
    that can run here."""
    from oracles.drive import budget  # tests/ is not a package: it is on sys.path above
    from oracles.gen import FAMILIES
    from oracles.native_run import unavailable_reason as native_why
    from oracles_kvm.judge import kvm_budget
    from oracles_kvm.kvm_run import unavailable_reason as kvm_why

    wanted: set[tuple[str, str]] = set()
    for module in modules:
        path, _, node = module.partition("::")
        family = node.partition("[")[2].rstrip("]")
        name = Path(path).name
        wanted.update((name, f) for f in ([family] if family in FAMILIES else FAMILIES))
    total = 0
    for name, family in wanted:
        if name == "test_oracle_kvm.py":
            total += 0 if kvm_why() else kvm_budget(family)
        elif name == "test_oracle_native.py":
            total += 0 if native_why() else budget(family)
        else:
            total += budget(family)
    return total


def _count_rows(log: Path) -> int:
    try:
        with log.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_line(done: int, expected: int, elapsed: float) -> str:
    """`12345/150000 cases (8%)  410 cases/s  2:03 elapsed  5:12 left`."""
    rate = done / elapsed if elapsed > 0 else 0.0
    share = f"{100 * done / expected:.0f}%" if expected else "?"
    left = _clock(max(expected - done, 0) / rate) if rate > 0 and expected else "?"
    return f"{done}/{expected} cases ({share})  {rate:.0f} cases/s  {_clock(elapsed)} elapsed  {left} left"


def run(modules: list[str], log: Path, jobs: str, out: IO[str]) -> int:
    expected = expected_cases(modules)
    env = {**os.environ, "VMMIO_VERIFY_LOG": str(log)}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", jobs, *modules]  # -q: pyproject
    tty = out.isatty()
    started = time.monotonic()
    last_line = started
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=pipe, stderr=subprocess.STDOUT, env=env, cwd=ROOT, text=True)
    held: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: held.extend(proc.stdout or ()), daemon=True)
    reader.start()
    while proc.poll() is None:
        time.sleep(INTERVAL_TTY)
        now = time.monotonic()
        line = progress_line(_count_rows(log), expected, now - started)
        if tty:
            out.write(f"\r[verify] {line}\033[K")
            out.flush()
        elif now - last_line >= INTERVAL_LOG:
            out.write(f"[verify] {line}\n")
            out.flush()
            last_line = now
    reader.join()
    final = progress_line(_count_rows(log), expected, time.monotonic() - started)
    out.write(("\r" if tty else "") + f"[verify] done: {final}" + ("\033[K\n" if tty else "\n"))
    out.write("".join(held))
    out.flush()
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="+", help="oracle test modules (or pytest node ids)")
    parser.add_argument("--log", type=Path, required=True, help="the verify log (VMMIO_VERIFY_LOG)")
    parser.add_argument("--jobs", default="auto", help="pytest-xdist workers (default: one per core)")
    args = parser.parse_args()
    try:
        return run(args.modules, args.log.resolve(), args.jobs, sys.stderr)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
