"""Exits per second and REP throughput against the references, measured in one run.

Each row is timed REPEAT times, rows interleaved, as CPU time of this process (user + system: KVM's
guest time included); the table shows medians, and ratios are between medians of the same run. The load
average is printed: on a shared machine the ratios matter, not the absolute numbers.

Exit rows, all on the loop `1: mov eax, [dev]; dec ecx; jnz 1b` (one MMIO read per iteration):
  vmmio/unicorn   Machine.run over vmmio's kernel on Unicorn: every read an MmioExit answered by the
                  test device model (the goal: >= 160k/s, >= 0.3x the bare cycle, >= 1.5x raw KVM;
                  with the native exit path vmmio._fastpath, >= 0.7x the bare cycle)
  ... Python      the same without the native exit path (VMMIO_FASTPATH=0): the reference path
  bare C-API      the floor: Unicorn's C API through ctypes, exits enabled with an empty exit list, no
                  hook: uc_emu_start faults on the unmapped read, RIP is read, the run restarts past it
  uc mmio_map     Unicorn's own MMIO callbacks (its Python binding): Unicorn decodes, no exit at all
  raw KVM_RUN     the same guest under KVM, a bare ioctl loop (Linux's emulator, nothing answered)
  vmmio/kvm       Machine.run over vmmio's KVM reference (KvmVcpu), the same device answering

REP rows: bytes/s of 4 KiB `rep movsb` RAM->device, `rep stosd` to the device and `rep insw` from a
port device, on Unicorn, one element per exit and with Capability.REP_BATCH (the goal for movsb: >= 50
MB/s in <= 2 exits with batching; without it no slower than before).

Usage: .venv/bin/python bench/bench_exits.py [--count N] [--repeat R]
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmmio.abi import Capability
from vmmio.devices import MemoryDevice
from vmmio.machine import LOAD_ADDR, TESTDEV_MMIO, Machine

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

PORT = 0x1F0  # the port device of the `rep insw` row
RAM_BUF = 0x40_0000  # page-aligned RAM the REP rows copy from (and the device copies go nowhere else)
REP_LOOPS = {
    "rep movsb": "mov rsi, {ram}\n mov rdi, {dev}\n mov ecx, 4096\n rep movsb",
    "rep stosd": "mov eax, 0x5a5a5a5a\n mov rdi, {dev}\n mov ecx, 1024\n rep stosd",
    "rep insw": "mov dx, {port}\n mov rdi, {ram}\n mov ecx, 2048\n rep insw",
}
REP_GUEST = """
        mov ebx, {k}
    3:  {body}
        dec ebx
        jnz 3b
        xor eax, eax
        out 0xf4, al
        hlt
"""


def assemble(source: str) -> bytes:
    """Flat 64-bit machine code for `source` (GNU as, Intel syntax)."""
    with tempfile.TemporaryDirectory() as tmp:
        s, o, b = (Path(tmp) / name for name in ("g.s", "g.o", "g.bin"))
        s.write_text(".intel_syntax noprefix\n.code64\n" + source + "\n")
        subprocess.run(["as", "--64", str(s), "-o", str(o)], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(o), str(b)], check=True)
        return b.read_bytes()


def cpu_seconds(fn: Callable[[], object]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def machine(code: bytes, batching: bool = False, native: bool = True) -> tuple[Machine, object]:
    """The machine and vCPU of a row; `native` False: without the native exit path (the Python one)."""
    m = Machine()
    m.testdev.record = False  # a device with a log grows it: the rows measure the path, not the log
    m.add_port(PORT, 2, MemoryDevice(0x10, b"\x34\x12", record=False))
    saved = os.environ.get("VMMIO_FASTPATH")
    os.environ["VMMIO_FASTPATH"] = "1" if native else "0"
    try:
        vcpu = m.vcpu(m.load(code))
    finally:
        if saved is None:
            del os.environ["VMMIO_FASTPATH"]
        else:
            os.environ["VMMIO_FASTPATH"] = saved
    if batching:
        vcpu.enable(Capability.REP_BATCH)  # type: ignore[attr-defined]
    return m, vcpu


# -- exit rows (seconds per exit) -----------------------------------------------------------------------


def native_built() -> bool:
    try:
        import vmmio._fastpath  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("VMMIO_FASTPATH", "1") != "0"


def vmmio_unicorn(code: bytes, n: int, native: bool = True) -> float:
    m, vcpu = machine(code, native=native)
    result = None

    def go() -> None:
        nonlocal result
        result = m.run(vcpu)  # type: ignore[arg-type]

    secs = cpu_seconds(go)
    assert result is not None and result.reason == "exit" and result.exits == n + 1, result
    return secs / n


def bare_capi(code: bytes, n: int) -> float:
    """Unicorn's C API alone: no hook, exits enabled with an empty exit list (as UnicornBackend runs)."""
    from unicorn import unicorn_const as ucc
    from unicorn import x86_const as ux
    from unicorn.unicorn_py3.unicorn import Uc
    from unicorn.unicorn_py3.unicorn import uclib as lib

    loop = assemble(f"mov rbx, {TESTDEV_MMIO}\n1: mov eax, [rbx]\njmp 1b\n")
    uc = Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_64)
    uc.mem_map(0, 32 << 20)
    uc.mem_write(LOAD_ADDR, loop)
    uc.ctl_exits_enabled(True)
    h = uc._uch
    until, timeout, count = ctypes.c_uint64(0), ctypes.c_uint64(0), ctypes.c_size_t(0)
    lib.uc_emu_start(h, ctypes.c_uint64(LOAD_ADDR), until, timeout, count)  # to the first fault
    mov_len = 2
    rip = ctypes.c_uint64()
    ref = ctypes.byref(rip)
    lib.uc_reg_read(h, ux.UC_X86_REG_RIP, ref)
    begin = ctypes.c_uint64(rip.value + mov_len)
    start, read, rip_id = lib.uc_emu_start, lib.uc_reg_read, ux.UC_X86_REG_RIP
    errors = set()

    def go() -> None:
        for _ in range(n):
            errors.add(start(h, begin, until, timeout, count))  # faults again at the read
            read(h, rip_id, ref)

    secs = cpu_seconds(go)
    assert errors == {ucc.UC_ERR_READ_UNMAPPED}, errors
    return secs / n


def uc_mmio_map(code: bytes, n: int) -> float:
    from unicorn import unicorn_const as ucc
    from unicorn import x86_const as ux
    from unicorn.unicorn_py3.unicorn import Uc

    emu = Uc(ucc.UC_ARCH_X86, ucc.UC_MODE_64)
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
    return cpu_seconds(lambda: emu.emu_start(LOAD_ADDR, end)) / n


def raw_kvm(code: bytes, n: int) -> float:
    """KVM_RUN in a bare loop on the vCPU the KVM reference set up (after its first exit)."""
    from vmmio.reference.kvm import KVM_EXIT_MMIO, KVM_RUN

    m = Machine()
    vcpu = m.vcpu(m.load(code), "kvm")
    vcpu.run()  # the state is loaded and the guest stopped at its first read
    fd, run = vcpu._fd, vcpu._run  # type: ignore[attr-defined]
    ioctl = fcntl.ioctl
    reasons = set()

    def go() -> None:
        for _ in range(n - 1):
            ioctl(fd, KVM_RUN, 0)
        reasons.add(int.from_bytes(run[8:12], "little"))

    secs = cpu_seconds(go)
    assert reasons == {KVM_EXIT_MMIO}, reasons
    return secs / (n - 1)


def vmmio_kvm(code: bytes, n: int) -> float:
    m = Machine()
    m.testdev.record = False
    vcpu = m.vcpu(m.load(code), "kvm")
    result = None

    def go() -> None:
        nonlocal result
        result = m.run(vcpu)

    secs = cpu_seconds(go)
    assert result is not None and result.reason == "exit", result
    return secs / n


def kvm_usable() -> bool:
    from vmmio.reference.kvm import kvm_usable as why_not

    return why_not() is None


# -- REP rows (seconds per 4 KiB, exits per instruction) ------------------------------------------------


@dataclass
class RepResult:
    secs: float  # per 4 KiB instruction
    exits: float  # per instruction


def rep(body: str, k: int, batching: bool) -> RepResult:
    code = assemble(REP_GUEST.format(k=k, body=body.format(ram=RAM_BUF, dev=TESTDEV_MMIO, port=PORT)))
    m, vcpu = machine(code, batching)
    result = None

    def go() -> None:
        nonlocal result
        result = m.run(vcpu)  # type: ignore[arg-type]

    secs = cpu_seconds(go)
    assert result is not None and result.reason == "exit", result
    return RepResult(secs / k, (result.exits - 1) / k)


# -- the table ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20000, help="MMIO reads per exit-row run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per row (medians are shown)")
    args = parser.parse_args()
    n, repeat = args.count, args.repeat
    code = assemble(LOOPS["mov read"].format(dev=TESTDEV_MMIO, n=n))
    have_kvm = kvm_usable()
    native = native_built()
    rows: dict[str, Callable[[bytes, int], float]] = {
        "vmmio/unicorn": vmmio_unicorn,
        "vmmio/unicorn Python": lambda code, n: vmmio_unicorn(code, n, native=False),
        "bare C-API": bare_capi,
        "uc mmio_map": uc_mmio_map,
    }
    if have_kvm:
        rows |= {"raw KVM_RUN": raw_kvm, "vmmio/kvm": vmmio_kvm}
    if not native:  # not built: the first row is the Python path itself
        del rows["vmmio/unicorn Python"]
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in rows}
    reps: dict[tuple[str, bool], list[RepResult]] = {
        (name, b): [] for name in REP_LOOPS for b in (False, True)
    }
    for _ in range(repeat):  # interleaved: every row sees the same load
        for name, fn in rows.items():
            times[name].append(fn(code, n))
        for (name, batching), results in reps.items():
            results.append(rep(REP_LOOPS[name], 40 if batching else 4, batching))
    load_after = os.getloadavg()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs; "
        f"python {sys.version.split()[0]}; CPU-time medians of {repeat} runs, rows interleaved"
    )
    print(f"\n{'exits (mov eax, [dev])':24} {'exits/s':>10} {'us/exit':>8} {'vmmio/unicorn vs row':>21}")
    ref = med["vmmio/unicorn"]
    for name, t in med.items():
        print(f"{name:24} {1 / t:10,.0f} {t * 1e6:8.2f} {t / ref:20.3f}x")
    if not have_kvm:
        print(f"{'raw KVM_RUN, vmmio/kvm':24} n/a (no usable /dev/kvm)")
    print(f"\n{'4 KiB REP (Unicorn)':24} {'one element':>22} {'batched':>22} {'batched vs one':>15}")
    rep_med: dict[tuple[str, bool], tuple[float, float]] = {}
    for (name, batching), results in reps.items():
        rep_med[name, batching] = (
            statistics.median(4096 / r.secs for r in results),
            statistics.median(r.exits for r in results),
        )
    for name in REP_LOOPS:
        (one, one_exits), (batched, batched_exits) = rep_med[name, False], rep_med[name, True]
        one_col = f"{one / 1e6:8.3f} MB/s {one_exits:5.0f} ex"
        batched_col = f"{batched / 1e6:8.2f} MB/s {batched_exits:5.0f} ex"
        print(f"{name:24} {one_col} {batched_col} {batched / one:14.0f}x")
    bare = med["bare C-API"]
    movsb, movsb_exits = rep_med["rep movsb", True]
    if not native:
        print("\n(the native exit path is not built: pip install -e . where a C compiler exists)")
    python = med.get("vmmio/unicorn Python", ref)
    print("\ngoals (vmmio/unicorn with the native exit path; the Python path alone in brackets)")
    print(f"  vmmio/unicorn >= 160k exits/s          {1 / ref:10,.0f}/s  ({1 / python:,.0f}/s)")
    print(f"  vmmio/unicorn >= 0.3x bare C-API cycle {bare / ref:10.3f}x  ({bare / python:.3f}x)")
    print(f"  with the native path >= 0.7x bare      {bare / ref:10.3f}x")
    if have_kvm:
        raw = med["raw KVM_RUN"]
        print(f"  vmmio/unicorn >= 1.5x raw KVM_RUN      {raw / ref:10.3f}x  ({raw / python:.3f}x)")
    print(f"  4 KiB rep movsb batched >= 50 MB/s     {movsb / 1e6:10.2f} MB/s in {movsb_exits:.0f} exit(s)")


if __name__ == "__main__":
    main()
