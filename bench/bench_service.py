"""MMIO exits per second across the process boundary, against the same loop in process (one run).

Rows: the `mov eax, [testdev]` loop of bench_exits.py, every read an exit to userspace, served by
  in-process   Machine over an in-process Vcpu (device model in Python)
  python       Machine over RemoteVcpu: the kernel in `vmmio serve`, run pages and eventfd doorbells
  c            clients/c/example_vmm (device model in C) over the same server, test device in userspace

The pieces of one remote exit come from the server's STATS counters: time inside `Vcpu.run`, the rest
of the server's handling of a post (decode the entry, encode the exit, publish), and what is left of
the wall time per exit: two doorbell wake-ups (the context switches) and the client's own work.

Usage: .venv/bin/python bench/bench_service.py [--count N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_exits import LOOPS, assemble

from vmmio.machine import TESTDEV_MMIO, Machine
from vmmio.service.client import Client, RemoteMachine
from vmmio.service.fuzz import start_server

REPO = Path(__file__).resolve().parents[1]


def in_process(code: bytes, n: int) -> tuple[float, None]:
    m = Machine()
    vcpu = m.vcpu(m.load(code))
    t0 = time.perf_counter()
    result = m.run(vcpu)
    assert result.reason == "exit", result
    return n / (time.perf_counter() - t0), None


def python_client(path: str, code: bytes, n: int) -> tuple[float, tuple[int, int, int]]:
    with Client.connect(path) as client:
        m = RemoteMachine(client)
        vcpu = m.vcpu(m.load(code))
        t0 = time.perf_counter()
        result = m.run(vcpu)
        elapsed = time.perf_counter() - t0
        assert result.reason == "exit", result
        posts, _, run_ns, serve_ns = vcpu.stats()
    return n / elapsed, (posts, run_ns, serve_ns)


def c_client(path: str, exe: Path, image: Path, n: int) -> tuple[float, tuple[int, int, int]]:
    proc = subprocess.run([str(exe), path, str(image), "--user-testdev"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    secs = float(re.search(r"in ([0-9.]+) s", proc.stderr)[1])  # type: ignore[index]
    stats = re.search(r"posts (\d+) rejected \d+ run_ns (\d+) serve_ns (\d+)", proc.stderr)
    assert stats is not None, proc.stderr
    return n / secs, (int(stats[1]), int(stats[2]), int(stats[3]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20000, help="MMIO reads in the loop")
    args = parser.parse_args()
    n = args.count
    code = assemble(LOOPS["mov read"].format(dev=TESTDEV_MMIO, n=n))
    rows: list[tuple[str, float, tuple[int, int, int] | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "loop.bin"
        image.write_bytes(code)
        exe = Path(tmp) / "example_vmm"
        gcc = shutil.which("gcc")
        if gcc is not None:
            sources = [str(REPO / "clients/c/example_vmm.c"), str(REPO / "clients/c/vmmio_client.c")]
            subprocess.run([gcc, "-std=c11", "-O2", "-o", str(exe), *sources], check=True)
        path = os.path.join(tmp, "vmm.sock")
        server = start_server(path)
        try:
            rows.append(("in-process", *in_process(code, n)))
            rows.append(("python", *python_client(path, code, n)))
            if gcc is not None:
                rows.append(("c", *c_client(path, exe, image, n)))
        finally:
            server.terminate()
            server.wait(10)
    base = rows[0][1]
    print(f"{n} MMIO reads (`mov eax, [testdev]`), {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'path':11} {'exits/s':>9} {'vs in-process':>14} {'us/exit':>8} {'kernel run':>11} "
          f"{'server rest':>12} {'doorbells+client':>17}")  # fmt: skip
    for name, rate, stats in rows:
        per = 1e6 / rate
        if stats is None:
            pieces = f"{'':>11} {'':>12} {'':>17}"
        else:
            posts, run_ns, serve_ns = stats
            run, serve = run_ns / posts / 1000, serve_ns / posts / 1000
            pieces = f"{run:10.1f}u {serve - run:11.1f}u {per - serve:16.1f}u"
        print(f"{name:11} {rate:9,.0f} {rate / base:13.2f}x {per:8.1f} {pieces}")


if __name__ == "__main__":
    main()
