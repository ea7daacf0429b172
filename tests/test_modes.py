"""A `mov` from MMIO through the whole kernel in every CPU mode, on the scripted backend.

Each row sets up a mode (real, 16/32-bit protected with and without paging, compatibility, 64-bit),
queues the nested page fault the hardware would report, and checks the GPA of the MmioExit and the
register after fulfillment; the fault rows check the exception injected for a limit violation (or its
64-bit counterpart) and that nothing of the instruction was committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from test_paging import Tables

from vmmio.abi import FulfillMmio, HltExit, MmioExit
from vmmio.backends.base import NpfEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.vm import Vm
from vmmio.x86.faults import GP, PF, SS
from vmmio.x86.regs import RFLAGS_FIXED1, Seg
from vmmio.x86.state import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    Control,
    Regs,
    Segment,
)

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
CS, SSR, DS, FS = int(Seg.CS), int(Seg.SS), int(Seg.DS), int(Seg.FS)
CODE = 0x1000
MMIO = 0xB_0000  # a hole in RAM below 1 MiB, so that real mode reaches it too
POOL = 0x20_0000
LA = 0xC000_0000  # where paged modes map the MMIO page
P, RW = 1, 2

Setup = Callable[[Vm], Control]
GP0, SS0 = (GP, 0, None), (SS, 0, None)


def real_mode(vm: Vm) -> Control:
    ctl = Control()
    ctl.segs = [Segment(selector=MMIO >> 4, base=MMIO, type=3) for _ in range(6)]
    ctl.segs[CS] = Segment(selector=0, base=0, type=11)
    return ctl


def protected(bits: int, ds_base: int = 0, ds_limit: int = 0xFFFF_FFFF) -> Control:
    big = bits == 32
    ctl = Control(cr0=CR0_PE)
    ctl.segs = [Segment(selector=0x10, limit=0xFFFF_FFFF, type=3, db=big, g=True) for _ in range(6)]
    ctl.segs[DS] = Segment(selector=0x18, base=ds_base, limit=ds_limit, type=3, db=big)
    ctl.segs[CS] = Segment(selector=0x08, limit=0xFFFF_FFFF if big else 0xFFFF, type=11, db=big, g=big)
    return ctl


def pm16(vm: Vm) -> Control:
    return protected(16, ds_base=MMIO, ds_limit=0xFFF)


def pm32(vm: Vm) -> Control:
    return protected(32, ds_limit=0xFFF_FFFF)


def paged(kind: str, bits: int = 32, pdptes: bool = False, ds_limit: int = 0xFFFF_FFFF) -> Setup:
    """Protected mode with `kind` paging (32, pae, 4l), code identity-mapped, LA -> MMIO."""

    def setup(vm: Vm) -> Control:
        tables = Tables(vm, kind, POOL)
        tables.map(CODE, CODE, 0x1000, P | RW)
        tables.map(LA, MMIO, 0x1000, P | RW)
        ctl = protected(bits, ds_limit=ds_limit if bits != 64 else 0)  # 64-bit mode ignores it
        ctl.cr0 |= CR0_PG | CR0_WP
        ctl.cr3 = tables.root
        if kind != "32":
            ctl.cr4 = CR4_PAE
            ctl.efer = EFER_NXE
        if kind == "4l":
            ctl.efer |= EFER_LME | EFER_LMA
            ctl.segs[CS].l = bits == 64
            ctl.segs[CS].db = bits != 64
        if pdptes:
            pdpt = tables.root
            read = vm.memory.read_int
            ctl.pdptes = (read(pdpt, 8), read(pdpt + 8, 8), read(pdpt + 16, 8), read(pdpt + 24, 8))
            vm.memory.write(pdpt, bytes(32))  # only the registers hold them now
        return ctl

    return setup


def with_fs_base(setup: Setup, base: int) -> Setup:
    def wrapped(vm: Vm) -> Control:
        ctl = setup(vm)
        ctl.segs[FS].base = base
        return ctl

    return wrapped


@dataclass(frozen=True)
class Case:
    name: str
    setup: Setup
    code: str  # hex
    gprs: dict[int, int] = field(default_factory=dict)
    gpa: int = MMIO  # the MmioExit's GPA
    size: int = 4
    reg: int = RAX
    inject: tuple[int, int | None, int | None] | None = None  # the fault instead of an exit


CASES = [
    Case("real mode: mov ax,[bx]", real_mode, "8b07", {RBX: 0x10}, MMIO + 0x10, 2),
    Case("real mode: mov eax,[di+4] (operand-size prefix)", real_mode, "668b4504", {RDI: 0x20}, MMIO + 0x24),
    Case("real mode: 16-bit offset wraps", real_mode, "8b4702", {RBX: 0xFFFE}, MMIO, 2),
    Case("16-bit protected: mov ax,[bx+si]", pm16, "8b00", {RBX: 0x100, RSI: 0x8}, MMIO + 0x108, 2),
    Case("32-bit protected, no paging: mov eax,[ebx]", pm32, "8b03", {RBX: MMIO + 0x40}, MMIO + 0x40),
    Case("32-bit protected, 32-bit paging", paged("32"), "8b03", {RBX: LA + 0x80}, MMIO + 0x80),
    Case("32-bit protected, PAE paging", paged("pae"), "8b4b10", {RBX: LA}, MMIO + 0x10, reg=RCX),
    Case("32-bit protected, PAE PDPTE registers", paged("pae", pdptes=True), "8b03", {RBX: LA + 4}, MMIO + 4),
    Case("16-bit code, 32-bit paging, addr32", paged("32", 16), "67668b03", {RBX: LA + 8}, MMIO + 8),
    Case("compatibility mode", paged("4l"), "8b03", {RBX: LA + 0xC}, MMIO + 0xC),
    Case("64-bit mode", paged("4l", 64), "488b03", {RBX: LA + 0x18}, MMIO + 0x18, 8),
    Case("64-bit mode, FS base", with_fs_base(paged("4l", 64), LA), "648b03", {RBX: 0x20}, MMIO + 0x20),
    # Faults: limit violations (canonical violations in 64-bit mode) and a page fault.
    Case("real mode: word at 0xFFFF", real_mode, "8b07", {RBX: 0xFFFF}, inject=GP0),
    Case("real mode: stack word at 0xFFFF", real_mode, "8b4600", {RBP: 0xFFFF}, inject=SS0),
    Case("16-bit protected: past DS limit", pm16, "8b07", {RBX: 0xFFF}, inject=GP0),
    Case("32-bit protected: past DS limit", pm32, "8b03", {RBX: 0x1000_0000}, inject=GP0),
    Case("32-bit paging: past DS limit", paged("32", ds_limit=LA - 1), "8b03", {RBX: LA}, inject=GP0),
    Case("PAE paging: not present", paged("pae"), "8b03", {RBX: LA + 0x1000}, inject=(PF, 0, LA + 0x1000)),
    Case("compat mode: past DS limit", paged("4l", ds_limit=LA + 2), "8b03", {RBX: LA}, inject=GP0),
    Case("64-bit mode: DS limit ignored", paged("4l", 64), "8b03", {RBX: LA + 0x1000 - 4}, MMIO + 0xFFC),
    Case("64-bit mode: non-canonical", paged("4l", 64), "8b03", {RBX: 1 << 47}, inject=GP0),
    Case("64-bit mode: non-canonical stack", paged("4l", 64), "8b04e4", {RSP: 1 << 47}, inject=SS0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_mov_from_mmio(case: Case) -> None:
    vm = Vm()
    vm.add_ram(0, MMIO)
    vm.add_ram(0x10_0000, 0x30_0000)
    ctl = case.setup(vm)
    vm.memory.write(CODE, bytes.fromhex(case.code))
    regs = Regs(rip=CODE, rflags=RFLAGS_FIXED1)
    for n, value in case.gprs.items():
        regs.gprs[n] = value
    backend = ScriptedBackend(regs, ctl, [NpfEvent(case.gpa if case.inject is None else MMIO)])
    vcpu = vm.create_vcpu(backend)
    before = backend.regs.copy()
    ex = vcpu.run()
    if case.inject is not None:
        assert isinstance(ex, HltExit)
        assert backend.injected == [case.inject]
        assert backend.regs == before
        return
    assert ex == MmioExit(case.gpa, case.size, False, 0)
    value = 0x1122_3344_5566_7788 & ((1 << (8 * case.size)) - 1)
    assert isinstance(vcpu.run(FulfillMmio(case.gpa, case.size, False, value)), HltExit)
    assert backend.injected == []
    assert backend.regs.gprs[case.reg] & ((1 << (8 * case.size)) - 1) == value
    assert backend.regs.rip == CODE + len(bytes.fromhex(case.code))


def test_fetch_past_the_cs_limit_injects_gp() -> None:
    """The decoded length is checked against the CS limit: an instruction straddling it faults."""
    vm = Vm()
    vm.add_ram(0, MMIO)
    ctl = protected(32)
    ctl.segs[CS].limit = CODE + 1  # `mov eax,[ebx]` at CODE has its second byte at the limit
    vm.memory.write(CODE, bytes.fromhex("8b4304"))
    backend = ScriptedBackend(Regs(rip=CODE), ctl, [NpfEvent(MMIO)])
    vcpu = vm.create_vcpu(backend)
    assert isinstance(vcpu.run(), HltExit)
    assert backend.injected == [(GP, 0, None)]
