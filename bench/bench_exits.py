"""MMIO exits per second for real guest loops, with vmmio's full emulation against references.

Rows (one run, same machine):
  vmmio       guest on Unicorn, every MMIO access emulated by vmmio's kernel and served by the machine
  uc-mmio     the same guest code on raw Unicorn with `mmio_map` callbacks (Unicorn decodes itself)
  bare cycle  the UnicornBackend stop/restart cycle alone: fault, set RIP past the 2-byte `mov`, resume
  kvm         the same guest under KVM (Linux's emulator produces the exits), when /dev/kvm works

Loops: `mov eax, [testdev]` reads, and `rep movsd` from the test device to RAM (one exit per element).
Usage: .venv/bin/python bench/bench_exits.py [--count N]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vmmio.backends.base import NpfEvent
from vmmio.machine import LOAD_ADDR, TESTDEV_MMIO, Machine
from vmmio.x86.state import DIRTY_RIP

LOOPS = {
    "mov read": """
        mov rbx, {dev}
        mov ecx, {n}
    1:  mov eax, [rbx]
        dec ecx
        jnz 1b
        out 0xf4, al
        hlt
    """,
    "rep movsd": """
        mov edx, {n} / 1024
    2:  mov rsi, {dev}
        mov rdi, 0x400000
        mov ecx, 1024
        rep movsd
        dec edx
        jnz 2b
        xor eax, eax
        out 0xf4, al
        hlt
    """,
}


def assemble(source: str) -> bytes:
    """Flat 64-bit machine code for `source` (GNU as, Intel syntax)."""
    with tempfile.TemporaryDirectory() as tmp:
        s, o, b = (Path(tmp) / name for name in ("g.s", "g.o", "g.bin"))
        s.write_text(".intel_syntax noprefix\n.code64\n" + source)
        subprocess.run(["as", "--64", str(s), "-o", str(o)], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(o), str(b)], check=True)
        return b.read_bytes()


def vmmio_rate(code: bytes, n: int, backend: str = "unicorn") -> float:
    m = Machine()
    vcpu = m.vcpu(m.load(code), backend)
    t0 = time.perf_counter()
    result = m.run(vcpu)
    elapsed = time.perf_counter() - t0
    assert result.reason == "exit", result
    return n / elapsed


def uc_mmio_rate(code: bytes, n: int) -> float:
    from unicorn import x86_const as ux
    from unicorn.unicorn_const import UC_ARCH_X86, UC_MODE_64
    from unicorn.unicorn_py3.unicorn import Uc

    emu = Uc(UC_ARCH_X86, UC_MODE_64)
    emu.mem_map(0, 32 << 20)
    emu.mem_write(LOAD_ADDR, code)
    data = bytes(range(256)) * 32

    def read(_uc: object, offset: int, size: int, _ud: object) -> int:
        return int.from_bytes(data[offset : offset + size], "little")

    def write(_uc: object, offset: int, size: int, value: int, _ud: object) -> None:
        return None

    emu.mmio_map(TESTDEV_MMIO, 0x2000, read, None, write, None)
    emu.reg_write(ux.UC_X86_REG_RSP, (32 << 20) - 16)
    end = LOAD_ADDR + code.index(b"\xe6\xf4")  # stop at `out 0xf4, al`
    t0 = time.perf_counter()
    emu.emu_start(LOAD_ADDR, end)
    return n / (time.perf_counter() - t0)


def bare_cycle_rate(code: bytes, n: int) -> float:
    """The backend alone: each fault is 'handled' by skipping the 2-byte `mov eax, [rbx]`."""
    m = Machine()
    vcpu = m.vcpu(m.load(code))
    hw = vcpu.backend  # type: ignore[attr-defined]
    faults = 0
    t0 = time.perf_counter()
    while True:
        event = hw.run()
        if type(event) is not NpfEvent:
            break
        regs = hw.get_regs()
        regs.rip += 2
        hw.set_regs(regs, DIRTY_RIP)
        faults += 1
    elapsed = time.perf_counter() - t0
    assert faults == n, faults
    return n / elapsed


def kvm_rate(code: bytes, n: int) -> float:
    return vmmio_rate(code, n, "kvm")


def kvm_usable() -> bool:
    try:
        import vmmio.reference.kvm  # noqa: F401

        with open("/dev/kvm", "rb"):
            return True
    except (ImportError, OSError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20000, help="MMIO accesses per loop")
    args = parser.parse_args()
    n = args.count // 1024 * 1024  # the rep loop copies 1024 elements (4 KiB of the device) at a time
    have_kvm = kvm_usable()
    table: list[tuple[str, str, float | None]] = []
    for loop, source in LOOPS.items():
        code = assemble(source.format(dev=TESTDEV_MMIO, n=n))
        rates: dict[str, Callable[[bytes, int], float] | None] = {
            "vmmio": vmmio_rate,
            "uc-mmio": uc_mmio_rate,
            "bare cycle": bare_cycle_rate if loop == "mov read" else None,
            "kvm": kvm_rate if have_kvm else None,
        }
        for name, fn in rates.items():
            table.append((loop, name, fn(code, n) if fn is not None else None))
    print(f"{'loop':10} {'path':11} {'exits/s':>10} {'vmmio / path':>13}")
    for loop, name, rate in table:
        ref = next(r for lp, nm, r in table if lp == loop and nm == "vmmio")
        if rate is None:
            why = "n/a (needs a 2-byte insn)" if name == "bare cycle" else "n/a (no usable /dev/kvm)"
            print(f"{loop:10} {name:11} {why}")
            continue
        assert ref is not None
        print(f"{loop:10} {name:11} {rate:10,.0f} {ref / rate:12.2f}x")
    print(f"\n{n} MMIO accesses per loop")


if __name__ == "__main__":
    main()
