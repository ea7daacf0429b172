"""Booting Linux on the PC machine: time to the shell and to the reboot, exits per second and per device.

Boots the guest `make linux` builds (Debian's cloud kernel, a busybox initramfs whose /init reboots) on
each backend asked for, and prints per backend: wall and CPU time to the kernel's first line, to the
shell's first line ("vmmio-linux: shell up") and to the reset; exits by device with their share of the
exits and the time the device models took. The load average is printed with the table: the machine is
shared, and wall times move with it.

Usage: .venv/bin/python bench/bench_linux.py [--backend unicorn] [--backend kvm] [--timeout S]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections import Counter
from pathlib import Path

from vmmio.abi import InoutExit, MmioExit
from vmmio.machine import RunControl, Serviced
from vmmio.pc import LINUX_CMDLINE, PcMachine, pc_layout

REPO = Path(__file__).resolve().parent.parent
MARKS = (("kernel", b"Linux version"), ("shell", b"vmmio-linux: shell up"))


def _guest() -> tuple[bytes, bytes]:
    path = REPO / "guests" / "linux" / "linux_guest.py"
    spec = importlib.util.spec_from_file_location("linux_guest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    guest = module.build()
    return guest.kernel.read_bytes(), guest.initrd.read_bytes()


def boot(backend: str, kernel: bytes, initrd: bytes, timeout: float) -> None:
    out = bytearray()
    seen: dict[str, tuple[float, float]] = {}
    start_wall, start_cpu = time.perf_counter(), time.process_time()

    def sink(data: bytes) -> None:
        out.extend(data)
        for name, mark in MARKS:
            if name not in seen and mark in out:
                seen[name] = (time.perf_counter() - start_wall, time.process_time() - start_cpu)

    machine = PcMachine(pc_layout(256 << 20), uart_sink=sink)
    image = machine.load(kernel, name="vmlinuz", cmdline=LINUX_CMDLINE, initrd=initrd)
    vcpu = machine.vcpu(image, backend)
    devices: Counter[str] = Counter()
    device_ns: Counter[str] = Counter()

    def observe(s: Serviced) -> None:
        ex = s.exit
        if isinstance(ex, MmioExit):
            hit = machine.mmio.find(ex.gpa)
            name = f"mmio {type(hit[0]).__name__}" if hit is not None else "mmio (unclaimed)"
        elif isinstance(ex, InoutExit):
            hit = machine.ports.find(ex.port)
            name = f"port {type(hit[0]).__name__}" if hit is not None else f"port {ex.port:#x} (unclaimed)"
        else:
            name = type(ex).__name__
        devices[name] += 1
        device_ns[name] += s.device_ns

    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with RunControl(vcpu, timeout) as control:
        result = machine.run(vcpu, control=control, observe=observe)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    print(f"\n== {backend}: {result.reason} {result.detail} after {result.exits} exits")
    print(f"{'milestone':22} {'wall s':>8} {'cpu s':>8}")
    for name, _ in MARKS:
        w, c = seen.get(name, (float("nan"), float("nan")))
        print(f"{'first ' + name + ' line':22} {w:8.2f} {c:8.2f}")
    print(f"{'end (' + result.reason + ')':22} {wall:8.2f} {cpu:8.2f}")
    print(f"exits/s over the boot: {result.exits / wall:,.0f}")
    print(f"{'exits by device':34} {'count':>7} {'share':>6} {'device ms':>10}")
    for name, count in devices.most_common():
        share = 100 * count / max(result.exits, 1)
        print(f"  {name:32} {count:7} {share:5.1f}% {device_ns[name] / 1e6:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", action="append", choices=["unicorn", "kvm"], help="default: unicorn")
    parser.add_argument("--timeout", type=float, default=900, help="give up on a boot after this long")
    args = parser.parse_args()
    kernel, initrd = _guest()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    for backend in args.backend or ["unicorn"]:
        boot(backend, kernel, initrd, args.timeout)


if __name__ == "__main__":
    main()
