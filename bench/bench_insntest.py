"""insntest, the shipped guest that runs every emulated instruction form against the test device and against
RAM, timed end to end per backend (wall time and CPU time, medians of repeated runs, backends
interleaved), with its exits per second and its verdict line.

Usage: .venv/bin/python bench/bench_insntest.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

from vmmio.guests import load
from vmmio.machine import Machine, RunResult
from vmmio.reference.kvm import kvm_usable


def run(backend: str) -> tuple[float, float, RunResult, str]:
    out = bytearray()
    m = Machine(uart_sink=out.extend)
    image = m.load(load("insntest"))
    wall, cpu = time.perf_counter(), time.process_time()
    vcpu = m.vcpu(image, backend)
    result = m.run(vcpu)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    summary = re.search(rb"insntest: \d+ cases[^\n]*", bytes(out))
    return wall, cpu, result, summary[0].decode() if summary else "(no summary)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    backends = ["unicorn"] + (["kvm"] if kvm_usable() is None else [])
    load_before = os.getloadavg()[0]
    runs: dict[str, list[tuple[float, float, RunResult, str]]] = {b: [] for b in backends}
    for _ in range(args.repeat):
        for backend in backends:
            runs[backend].append(run(backend))
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.2f} before, {load_after:.2f} after; medians of {args.repeat} runs")
    print(f"{'backend':8} {'wall s':>8} {'CPU s':>8} {'exits':>7} {'exits/s (wall)':>15}  verdict")
    for backend, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        result, summary = results[0][2], results[0][3]
        print(f"{backend:8} {wall:8.3f} {cpu:8.3f} {result.exits:7} {result.exits / wall:15,.0f}  {summary}")
    if len(backends) == 1:
        print("kvm      n/a (no usable /dev/kvm)")


if __name__ == "__main__":
    main()
