"""Run a case on vmmio: the scripted-backend guest of tests/harness.py, operand in the MMIO device."""

from __future__ import annotations

from harness import DATA, MMIO, Guest

from oracles.gen import CODE, RAM, RAM_SIZE, WINDOW, WINDOW_SIZE, Case, first_mmio
from oracles.gen_ctl import (
    GDT_BASE,
    GDT_LIMIT,
    IDTR,
    KERNEL_CS,
    KERNEL_SS,
    ORACLE_CR0,
    TR_SELECTOR,
    USER_CS,
    USER_SS,
    gdt_bytes,
)
from oracles.outcome import Outcome, Request, iterations
from oracles.vector_state import prepare as prepare_vector
from vmmio.abi import HltExit, MmioExit, VmExit
from vmmio.x86.cpuid import ALL_FEATURES, CpuidTable
from vmmio.x86.pagetables import US
from vmmio.x86.state import Control, Segment, flat_segment

# The oracles map the same layout; the harness guest is identity-mapped, so linear == physical.
assert (MMIO, DATA) == (WINDOW, RAM)

FILLER = b"\x0f\x0b" * 8  # UD2s after the instruction, on every executor
MAX_REENTRIES = 64


VECTORS = {
    0: "#DE",
    6: "#UD",
    7: "#NM",
    10: "#TS",
    11: "#NP",
    12: "#SS",
    13: "#GP",
    14: "#PF",
    16: "#MF",
    17: "#AC",
}
CODED = frozenset((10, 11, 12, 13, 17))  # vectors whose error code the oracles compare


def exception_name(injected: list[tuple[int, int | None, int | None]]) -> str:
    """'#PF at 0x...' style text for what vmmio injected (several: all of them, raw)."""
    if len(injected) != 1:
        return f"injected {injected!r}"
    vector, _code, cr2 = injected[0]
    name = VECTORS.get(vector, f"vector {vector}")
    return f"{name} at {cr2:#x}" if vector == 14 and cr2 is not None else name


def run_vmmio(case: Case, cpuid: CpuidTable = ALL_FEATURES) -> Outcome:
    """Fault on the case's first MMIO access and let vmmio emulate the instruction to completion, on a
    CPU with `cpuid`'s features (every one vmmio knows, unless an oracle's CPU lacks some)."""
    guest = Guest(b"\xf4", dict(enumerate(case.gprs)), rflags=case.rflags, cpuid=cpuid)
    assert guest.device.size == WINDOW_SIZE
    guest.vm.memory.write(CODE, case.code + FILLER)
    guest.regs.rip = CODE
    if case.env:
        enter_env(guest, case.env)
    guest.backend.control.segs[4].base = case.fs_base
    guest.backend.control.segs[5].base = case.gs_base
    guest.device.data[:] = case.window()
    guest.vm.memory.write(RAM, case.ram())
    if case.vector is not None:
        prepare_vector(guest, case.vector)
    guest.fault(case.fault_gpa)
    error = ""
    exits: list[VmExit] = []  # of the last entry into the guest
    for _ in range(MAX_REENTRIES):
        try:
            exits = guest.run_to_halt()
        except Exception as exc:  # an assertion in the device or a bug in the kernel: report, do not crash
            error = f"vmmio raised {type(exc).__name__}: {exc}"
            break
        halted_mid_rep = case.rep and isinstance(exits[-1], HltExit) and guest.regs.rip == CODE
        if not halted_mid_rep or guest.backend.injected:
            break
        # The kernel returned to the guest between REP iterations (its per-exit work budget) with RIP
        # still at the instruction: the guest re-executes it and faults on the next iteration's first
        # MMIO access. The registers say how far it got.
        done = iterations(case, case.gprs[1], guest.regs.gprs[1])
        following = case.expected_accesses(done + 1)[done * len(case.accesses) :]
        guest.fault(first_mmio(following))
    if not error:
        last = exits[-1]
        others = [e for e in exits[:-1] if not isinstance(e, MmioExit)]
        if not isinstance(last, HltExit) or others:
            error = f"vmmio stopped with {last!r}" + (f" after {others!r}" if others else "")
    fault = ""
    error_code = None
    injected = guest.backend.injected
    if not error and injected:
        fault = exception_name(injected)
        if len(injected) == 1 and injected[0][0] in CODED:
            error_code = injected[0][1]
    regs = guest.regs
    return Outcome(
        gprs=list(regs.gprs),
        rip=regs.rip,
        rflags=regs.rflags,
        window=bytes(guest.device.data),
        ram=guest.vm.memory.read(RAM, RAM_SIZE),
        error=error,
        fault=fault,
        requests=[Request(g, s, w, d) for g, s, w, d in guest.device.trace],
        error_code=error_code,
        state=control_state(guest.backend.control) if case.env else {},
        gdt=guest.vm.memory.read(GDT_BASE, GDT_LIMIT + 1) if case.env else b"",
        vector=guest.backend.vector.copy() if case.vector is not None else None,
    )


def enter_env(guest: Guest, env: str) -> None:
    """The gen_ctl environment: ORACLE_GDT, CPL 3 ("user", pages user-accessible) or 0 ("kernel"),
    the selectors of a Linux process (DS/ES/FS/GS null), TR 0x40, no LDT, Linux's CR0."""
    mem = guest.vm.memory
    mem.write(GDT_BASE, gdt_bytes())
    for gpa, entry in guest.pt.entries.items():
        mem.write_int(gpa, 8, entry | US)
    ctl = guest.backend.control
    user = env == "user"
    ctl.cpl = 3 if user else 0
    ctl.cr0 = ORACLE_CR0
    ctl.gdtr = (GDT_BASE, GDT_LIMIT)
    ctl.idtr = IDTR
    dpl = ctl.cpl
    null = [Segment(0, 0, 0, 0, False, 0, False, unusable=True) for _ in range(6)]
    null[1] = flat_segment(USER_CS if user else KERNEL_CS, code=True, bits=64, dpl=dpl)
    null[2] = flat_segment(USER_SS if user else KERNEL_SS, dpl=dpl)
    ctl.segs = null
    ctl.tr = Segment(TR_SELECTOR, 0, 0x67, 0xB, s=False)
    ctl.ldtr = Segment(0, 0, 0, 0x2, s=False, present=False, unusable=True)


def control_state(ctl: Control) -> dict[str, object]:
    """What the oracles compare of the control state after a gen_ctl case."""
    state: dict[str, object] = {name: seg.selector for name, seg in zip(SEG_NAMES, ctl.segs, strict=True)}
    state.update(
        gdtr=ctl.gdtr, idtr=ctl.idtr, ldtr=ctl.ldtr.selector, tr=ctl.tr.selector, cr0=ctl.cr0 & 0xFFFF
    )
    return state


SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
