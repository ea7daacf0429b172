"""Run a case on KVM: one small long-mode guest, reused for every case, with the window as an MMIO hole.

Guest physical layout (identity-mapped by `vmmio.machine.page_tables`, 2 MiB pages over the first 4 GiB).
Only three ranges are RAM; every other GPA is a hole, so a wrong address computed by Linux's emulator
shows up as a device request outside the window instead of silently reading or corrupting RAM:

    0x0000 .. 0x0068   the TSS KVM's reset TR points at (base 0): only IST1 (offset 0x24) is used
    0x0800             GDT (`vmmio.machine.GDT`: 64-bit code 0x08, data 0x10)
    0x1000 .. 0x7000   page tables
    0x8000             IDT: vectors 0-31, interrupt gates on IST1, each to its own `hlt` stub
    0x9000             the stubs, 16 bytes apart (vector = (RIP after the hlt - 1 - 0x9000) / 16)
    0xA000 .. 0xC000   the IST1 stack: an exception frame lands here whatever RSP the case holds
    RAM, CODE          the cases' RAM area (0x200000, 8 KiB) and code page (0x300000), as on every oracle
    WINDOW             not RAM: every access is a KVM_EXIT_MMIO served by `WindowDevice`

Per case: the instruction is written at CODE followed by `hlt` (then UD2s), the RAM area is rewritten,
GPRs/RIP/RFLAGS are set with KVM_SET_REGS and the segment caches (FS/GS bases) with KVM_SET_SREGS.
The CPU runs the instruction natively until its first touch of the hole; Linux's emulator then decodes
it from guest memory and performs it, one KVM_EXIT_MMIO per device access, each answered from the
memory-like device model (reads return its bytes, writes are applied). The run ends at the `hlt`
after the instruction (completed: RIP reported as the address of that `hlt`) or at an exception stub
(the state is taken from the exception frame: RIP and RSP at the faulting instruction).

The GDT and page tables are written with their accessed/dirty bits set, so the CPU never changes them;
after each case the structures below the exception stack are compared with their pristine copy, and a
change (Linux's emulator writing RAM it should not, see deviations.KVM_DEVIATIONS) is reported as the
case's error, the structures restored and the VM rebuilt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from kvm_util import deadline
from oracles.gen import CODE, PAGE, RAM, RAM_SIZE, WINDOW, WINDOW_SIZE, Case
from oracles.gen_ctl import (
    GDT_BASE,
    GDT_LIMIT,
    IDTR,
    KERNEL_CS,
    KERNEL_SS,
    TR_SELECTOR,
    USER_CS,
    USER_SS,
    gdt_bytes,
)
from oracles.outcome import Outcome, Request
from oracles.vmmio_run import CODED, control_state, exception_name

from vmmio.abi import FulfillMmio, HltExit, MmioExit, VmExit
from vmmio.machine import Image, Layout, default_entry_state
from vmmio.memory import GuestMemory
from vmmio.reference.kvm import KvmError, KvmExitError, KvmIo, KvmMmio, KvmVcpu, kvm_usable
from vmmio.x86.cpuid import CpuidTable
from vmmio.x86.state import Control, CpuState, Regs, Segment, flat_segment

__all__ = ["KvmOutcome", "KvmRunner", "WindowDevice", "unavailable_reason"]

SYSTEM_SIZE = 0x10000  # RAM at 0 holding the TSS, GDT, page tables, IDT, stubs and exception stack
IDT_BASE = 0x8000
STUBS = 0x9000
STUB_STRIDE = 16
VECTORS = 32
IST_TOP = 0xC000
IST_BOTTOM = 0xA000
TSS_IST1 = 0x24
HLT = b"\xf4"
RFLAGS_RF = 1 << 16
PTE_ACCESSED_DIRTY = 0x60
PTE_USER = 0x4
GP_VECTOR = 13
# Exceptions that push an error code (the frame is one quadword deeper).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
MAX_EXITS = 4096
CTL_MAX_EXITS = 256  # no gen_ctl case needs 70 (ENTER, level 31); Linux's LGDT from MMIO loops forever
CASE_SECONDS = 10.0

assert SYSTEM_SIZE <= RAM and RAM + RAM_SIZE <= CODE and CODE + PAGE <= WINDOW
assert IDTR == (IDT_BASE, 16 * VECTORS - 1)


def unavailable_reason() -> str | None:
    """Why KVM cannot serve as an oracle here, or None."""
    why = kvm_usable()
    return None if why is None else f"KVM oracle needs a usable /dev/kvm: {why}"


@dataclass
class WindowDevice:
    """The memory-like MMIO device: the window's bytes; anything outside it reads as all ones."""

    data: bytearray = field(default_factory=lambda: bytearray(WINDOW_SIZE))
    trace: list[Request] = field(default_factory=list)

    def serve(self, ex: MmioExit) -> FulfillMmio:
        off = ex.gpa - WINDOW
        inside = off >= 0 and off + ex.size <= WINDOW_SIZE
        if ex.is_write:
            if inside:
                self.data[off : off + ex.size] = ex.data.to_bytes(ex.size, "little")
            self.trace.append(Request(ex.gpa, ex.size, True, ex.data))
            return ex.fulfill()
        value = int.from_bytes(self.data[off : off + ex.size], "little") if inside else (1 << 8 * ex.size) - 1
        self.trace.append(Request(ex.gpa, ex.size, False, value))
        return ex.fulfill(value)


@dataclass
class KvmOutcome:
    """KVM's outcome of one case, with Linux's exits exactly as reported (before vmmio-style splitting)."""

    outcome: Outcome
    raw: list[KvmMmio | KvmIo]
    seconds: float


def _gate(handler: int) -> tuple[int, int]:
    """A 64-bit interrupt gate (type 0xE, DPL 0, present) to `handler` through KERNEL_CS on IST1."""
    low = handler & 0xFFFF | KERNEL_CS << 16 | 1 << 32 | 0x8E << 40 | (handler >> 16 & 0xFFFF) << 48
    return low, handler >> 32


class KvmRunner:
    """One KVM VM and vCPU for every case: a case costs two register ioctls and the KVM_RUNs it needs.

    Building a VM costs about 5 ms here (a software KVM); it is rebuilt only after a run that went wrong
    (an exit vmmio's ABI has no name for, a request left pending, a timeout, a triple fault, a stray
    write into the guest's tables), so no shadow-paging or TLB state derived from damage survives.
    """

    def __init__(self) -> None:
        self.memory = GuestMemory()
        mem = self.memory
        mem.add_ram(0, SYSTEM_SIZE)
        mem.add_ram(RAM, RAM_SIZE)
        mem.add_ram(CODE, PAGE)
        # Accessed/dirty bits preset, so that the CPU never writes these structures: any change to them
        # after a case is a stray write by the emulator (or, for the GDT, LTR's busy bit: compared).
        # The GDT is gen_ctl's (Linux's layout), pages are user-accessible for the CPL 3 cases.
        mem.write(GDT_BASE, gdt_bytes())
        for gpa, entry in Layout().page_table_entries().items():
            mem.write_int(gpa, 8, entry | PTE_ACCESSED_DIRTY | PTE_USER)
        for vector in range(VECTORS):
            stub = STUBS + STUB_STRIDE * vector
            low, high = _gate(stub)
            mem.write_int(IDT_BASE + 16 * vector, 8, low)
            mem.write_int(IDT_BASE + 16 * vector + 8, 8, high)
            mem.write(stub, HLT)
        state = default_entry_state(Image(CODE, 64), Layout(ram_size=SYSTEM_SIZE))
        ctl = state.control
        ctl.idtr = IDTR
        ctl.gdtr = (GDT_BASE, GDT_LIMIT)
        null = Segment(0, 0, 0, 0, s=False, present=False, unusable=True)
        ctl.segs = [
            null,
            flat_segment(KERNEL_CS, code=True, bits=64),
            flat_segment(KERNEL_SS),
            null,
            null,
            null,
        ]
        ctl.tr = Segment(TR_SELECTOR, 0, 0x67, 0xB, s=False)  # IST1 at TSS offset 0x24, below
        ctl.ldtr = Segment(0, 0, 0, 0x2, s=False, present=False, unusable=True)
        self.regs, self.ctl = state.regs, ctl
        self.gdt = gdt_bytes()
        self.device = WindowDevice()
        self.vcpu: KvmVcpu | None = None
        self.rebuilds = 0
        self._open()

    def _open(self) -> KvmVcpu:
        # Every case's memory operand is in the MMIO window, so Linux's emulator always has the
        # instruction: its guest keeps every feature KVM supports, CX16 included even where KVM cannot run
        # CMPXCHG16B on RAM (what `cmpxchg16b_runs` hides from guests such as Linux).
        vcpu = KvmVcpu(self.memory, CpuState(self.regs, self.ctl), record_raw=True, probe_cpuid=False)
        # TR (base 0) is the 64-bit TSS: only IST1 is read, on exception delivery.
        self.memory.write_int(self.ctl.tr.base + TSS_IST1, 8, IST_TOP)
        self.system = self.memory.read(0, IST_BOTTOM)
        self.vcpu = vcpu
        return vcpu

    @property
    def cpuid(self) -> CpuidTable:
        """The guest's CPUID: vmmio is judged on a CPU with the same features (without MOVBE, Linux's
        emulator raises #UD for it; without BMI1/ABM, F3 0F BC/BD are BSF/BSR; ...)."""
        return (self.vcpu or self._open()).cpuid

    def close(self) -> None:
        if self.vcpu is not None:
            self.vcpu.close()
            self.vcpu = None

    def _control(self, case: Case) -> Control:
        segs = list(self.ctl.segs)
        segs[4] = replace(segs[4], base=case.fs_base)
        segs[5] = replace(segs[5], base=case.gs_base)
        if case.env == "user":
            segs[1] = flat_segment(USER_CS, code=True, bits=64, dpl=3)
            segs[2] = flat_segment(USER_SS, dpl=3)
        return replace(self.ctl, cr2=0, segs=segs, cpl=3 if case.env == "user" else 0)

    def run(self, case: Case, seconds: float = CASE_SECONDS) -> KvmOutcome:
        """Run `case` to the `hlt` after it (or to an exception stub) and report what KVM did."""
        vcpu = self.vcpu or self._open()
        assert vcpu.raw_exits is not None
        vcpu.raw_exits.clear()
        mem = self.memory
        end = case.next_rip or CODE + len(case.code)
        # HLTs after the instruction and wherever a branch of it may land (at CPL 3 the HLT raises #GP).
        mem.write(CODE, case.code + HLT * (PAGE - len(case.code)))
        mem.write(IST_BOTTOM, bytes(IST_TOP - IST_BOTTOM))
        mem.write(RAM, case.ram())
        self.device.data[:] = case.window()
        self.device.trace = []
        error = ""
        started = time.perf_counter()
        try:
            vcpu.set_control(self._control(case))
            vcpu.set_regs(Regs(list(case.gprs), CODE, case.rflags))
            if case.vector is not None:
                vcpu.set_vector(case.vector)  # KVM_SET_XSAVE (see vmmio/reference/kvm.py)
            with deadline(seconds):
                last = self._run_to_stop(vcpu, CTL_MAX_EXITS if case.env else MAX_EXITS)
        except (KvmError, KvmExitError, TimeoutError) as exc:
            error = f"KVM: {type(exc).__name__}: {exc}"
            last = None
        seconds = time.perf_counter() - started
        raw = list(vcpu.raw_exits)
        if last is not None and not isinstance(last, HltExit):
            error = f"KVM stopped with {last!r}"
        regs = vcpu.get_regs() if not error else Regs(list(case.gprs), CODE, case.rflags)
        vector_state = vcpu.get_vector() if case.vector is not None and not error else None
        gprs, rip, rflags, fault = list(regs.gprs), regs.rip, regs.rflags, ""
        coded: int | None = None
        gdt_after = b""
        frame_cs = frame_ss = -1
        stub = regs.rip - 1 - STUBS
        # The GDT: compared with vmmio's for gen_ctl cases (LTR sets a busy bit), else it must not change.
        gdt = mem.read(GDT_BASE, GDT_LIMIT + 1)
        mem.write(GDT_BASE, self.gdt)
        if case.env:
            gdt_after = gdt
        elif gdt != self.gdt and not error:
            error = f"KVM changed the guest's system structures (the GDT: {gdt.hex()})"
        system = mem.read(0, IST_BOTTOM)
        if system != self.system and not error:
            at = next(n for n in range(IST_BOTTOM) if system[n] != self.system[n])
            error = f"KVM changed the guest's system structures (first byte at {at:#x})"
        if error:
            # Rebuild from scratch: a fresh VM has no shadow/TLB state derived from damaged tables.
            mem.write(0, self.system)
            self.close()
            self.rebuilds += 1
        elif regs.rip == end + 1:
            rip = end
        elif 0 <= stub < STUB_STRIDE * VECTORS and stub % STUB_STRIDE == 0:
            vector = stub // STUB_STRIDE
            frame = IST_TOP - 40 - (8 if vector in ERROR_CODE_VECTORS else 0)
            error_code = mem.read_int(frame, 8) if vector in ERROR_CODE_VECTORS else None
            top = frame + (8 if vector in ERROR_CODE_VECTORS else 0)
            rip, frame_cs, rflags, gprs[4], frame_ss = (mem.read_int(top + 8 * n, 8) for n in range(5))
            rflags &= ~RFLAGS_RF  # set in the pushed image of a fault; not architectural state
            cr2 = vcpu.get_sregs().control.cr2 if vector == 14 else None
            if not (case.env == "user" and vector == GP_VECTOR and rip == end != CODE):
                # (else: the HLT after the instruction, at CPL 3: the instruction completed)
                fault = exception_name([(vector, error_code, cr2)])
                coded = error_code if vector in CODED else None
        else:
            error = f"KVM halted at an unexpected rip {regs.rip:#x} (the instruction ends at {end:#x})"
        outcome = Outcome(
            gprs=gprs,
            rip=rip,
            rflags=rflags,
            window=bytes(self.device.data),
            ram=mem.read(RAM, RAM_SIZE),
            error=error,
            fault=fault,
            requests=list(self.device.trace),
            error_code=coded,
            state=self._state(vcpu, frame_cs, frame_ss) if case.env and not error else {},
            gdt=gdt_after,
            vector=vector_state,
        )
        return KvmOutcome(outcome, raw, seconds)

    @staticmethod
    def _state(vcpu: KvmVcpu, frame_cs: int, frame_ss: int) -> dict[str, object]:
        """The control state compared after a gen_ctl case; CS and SS from the exception frame when the
        run ended in a handler (which runs at CPL 0 on a null SS)."""
        state = control_state(vcpu.get_control())
        if frame_cs >= 0:
            state.update(cs=frame_cs & 0xFFFF, ss=frame_ss & 0xFFFF)
        return state

    def _run_to_stop(self, vcpu: KvmVcpu, limit: int) -> VmExit:
        """KVM_RUN, answering MMIO exits from the device, until any other exit."""
        ex = vcpu.run()
        for _ in range(limit):
            if not isinstance(ex, MmioExit):
                return ex
            ex = vcpu.run(self.device.serve(ex))
        raise KvmError(0, f"more than {limit} MMIO exits")
