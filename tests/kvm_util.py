"""Helpers for the KVM reference vCPU: guests assembled at test time, traced runs, the exits/s benchmark.

`mmio_exits_per_second` is what a `bench/` script imports (put `tests/` on sys.path, as
bench/bench_emulate.py does) to fill the benchmark table.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from vmmio.abi import HltExit, InoutExit, MmioExit, VmExit
from vmmio.machine import TESTDEV_MMIO, ExitSource, Machine, RunResult

# A guest that reads the test device forever: mov ebx, TESTDEV_MMIO; 1: mov eax, [rbx]; jmp 1b.
# Written as bytes so the benchmark needs no assembler.
READ_LOOP = b"\xbb" + TESTDEV_MMIO.to_bytes(4, "little") + b"\x8b\x03\xeb\xfc"

# A guest subroutine (GNU as, Intel syntax) that writes a 64-bit interrupt gate: rdi the IDT, ecx the
# vector, rax the handler; code selector 0x08, present, DPL 0. Clobbers rdx and r8.
SET_GATE = """
set_gate:
    mov edx, ecx
    shl edx, 4
    add rdx, rdi
    mov [rdx], ax
    mov word ptr [rdx + 2], 0x08
    mov word ptr [rdx + 4], 0x8e00
    mov r8, rax
    shr r8, 16
    mov [rdx + 6], r8w
    shr r8, 16
    mov [rdx + 8], r8d
    mov dword ptr [rdx + 12], 0
    ret
"""

# One entry of a device trace: ("mmio", gpa, size, is_write, data) or ("io", port, size, is_in, data).
Access = tuple[str, int, int, bool, int]


def have_assembler() -> bool:
    return all(shutil.which(tool) for tool in ("as", "objcopy"))


@functools.cache
def assemble(src: str) -> bytes:
    """Assemble Intel-syntax 64-bit `src` into a flat binary (position-independent: use rip-relative data)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "g.s").write_text(f".intel_syntax noprefix\n.code64\n{src}\n")
        done = subprocess.run(["as", "--64", "-o", d / "g.o", d / "g.s"], capture_output=True, text=True)
        if done.returncode:
            raise ValueError(f"as rejected the guest:\n{done.stderr}")
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", d / "g.o", d / "g.bin"], check=True)
        return (d / "g.bin").read_bytes()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError if the block (e.g. a KVM_RUN that never exits) runs longer than `seconds`."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"guest still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def access(ex: VmExit) -> Access | None:
    """The device-visible part of an exit, or None for exits that are not device accesses."""
    if isinstance(ex, MmioExit):
        return ("mmio", ex.gpa, ex.size, ex.is_write, ex.data)
    if isinstance(ex, InoutExit):
        return ("io", ex.port, ex.size, ex.is_in, ex.data)
    return None


@dataclass
class Traced:
    """A finished run: the machine (devices, RAM), the result and every exit in order."""

    machine: Machine
    result: RunResult
    exits: list[VmExit] = field(default_factory=list)

    @property
    def accesses(self) -> list[Access]:
        return [a for a in map(access, self.exits) if a is not None]


def run_guest(
    code: bytes,
    backend: str,
    setup: Callable[[Machine], None] | None = None,
    max_exits: int = 10_000,
    timeout: float = 30.0,
) -> Traced:
    """Load `code` at the machine's load address, run it to the end on `backend`, recording every exit."""
    m = Machine(uart_sink=lambda _: None)
    image = m.load(code)
    if setup is not None:
        setup(m)
    traced = Traced(m, RunResult(0, "", 0))
    vcpu = m.vcpu(image, backend=backend)
    try:
        with deadline(timeout):
            traced.result = m.run(vcpu, trace=traced.exits.append, max_exits=max_exits)
    finally:
        close = getattr(vcpu, "close", None)
        if close is not None:
            close()
    return traced


def mmio_exits_per_second(backend: str = "kvm", seconds: float = 1.0) -> float:
    """MMIO read exits per second for READ_LOOP, each answered at once (the bare run/fulfill round trip).

    Measures the vCPU alone: no device model, no Machine.run bookkeeping.
    """
    m = Machine(uart_sink=lambda _: None)
    vcpu: ExitSource = m.vcpu(m.load(READ_LOOP), backend=backend)
    try:
        with deadline(seconds + 30.0):
            ex = vcpu.run()
            for _ in range(100):  # warm up (page faults on first touch, decode caches)
                assert isinstance(ex, MmioExit), ex
                ex = vcpu.run(ex.fulfill(0))
            count = 0
            start = time.perf_counter()
            end = start + seconds
            now = start
            while now < end:
                for _ in range(200):
                    assert isinstance(ex, MmioExit), ex
                    ex = vcpu.run(ex.fulfill(0))
                count += 200
                now = time.perf_counter()
        return count / (now - start)
    finally:
        close = getattr(vcpu, "close", None)
        if close is not None:
            close()


def hlt_result(traced: Traced) -> bool:
    return bool(traced.exits) and isinstance(traced.exits[-1], HltExit)
