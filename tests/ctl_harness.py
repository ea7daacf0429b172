"""A guest in any CPU mode with a GDT, for the stack, control-transfer, segment and system rows.

Modes: "64" (long mode, 64-bit code), "compat" (long mode, 32-bit code), "32" and "16" (protected mode,
paging off), "real", "vm86" (virtual-8086 mode, paging off). Physical layout:

    0x1000   code                     0x3000   the GDT (`GDT`, limit GDT_LIMIT)
    0x5000   a TSS                    0x6000   an LDT (three descriptors)
    0xA0000  LOW: the device for real, 16-bit and virtual-8086 rows (64 KiB)
    0x100000 page tables (long mode)  0x200000 STACK: a RAM stack (RSP = STACK + 0x100)
    MMIO     the device for the other modes (8 KiB)
    HIGH     long mode only, 4 KiB pages: +0 the GDT page, +0x1000 not present, +0x2000 the device's
             second page (the GDT of `gdt_in_device` rows), +0x3000 the GDT page read-only

Long mode maps the first 4 GiB with 1 GiB pages, user-accessible (the CPL 3 rows need it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness import MemDevice

from vmmio.abi import HltExit, InstEmulExit, MmioExit, VmEntry, VmExit
from vmmio.backends.base import NpfEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.vmm.vm import Vm
from vmmio.x86.descriptors import segment_from_descriptor
from vmmio.x86.pagetables import PAGE_1G, PAGE_4K, RW, US, P, PageTables
from vmmio.x86.regs import VM, Seg
from vmmio.x86.state import (
    CR0_ET,
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

CODE = 0x1000
GDT = 0x3000
TSS = 0x5000
LDT = 0x6000
LOW = 0xA0000
LOW_SIZE = 0x10000
PT_POOL = 0x10_0000
STACK = 0x20_0000
MMIO = 0x4000_0000
MMIO_SIZE = 0x2000
HIGH = 0x80_0000_0000
ES, CS, SS, DS, FS, GS = (int(s) for s in Seg)


def desc(
    base: int = 0,
    limit: int = 0xFFFFF,
    type: int = 0x3,
    *,
    s: bool = True,
    dpl: int = 0,
    p: bool = True,
    l: bool = False,
    db: bool = True,
    g: bool = True,
) -> int:
    """A legacy 8-byte descriptor as a 64-bit value."""
    lo = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    hi = (base >> 16) & 0xFF | type << 8 | s << 12 | dpl << 13 | p << 15 | (limit >> 16 & 0xF) << 16
    hi |= l << 21 | db << 22 | g << 23 | (base >> 24 & 0xFF) << 24
    return hi << 32 | lo


# The GDT every row sees (selector -> descriptor); system descriptors take 16 bytes (the upper half
# zero) so that they are valid in IA-32e mode too.
C64, D0, C32, C16, D16, C64U, D3, C32U = 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40
RO, NPD, XO, CONF, TSSA, TSSB, LDTD, GATE = 0x48, 0x50, 0x58, 0x60, 0x68, 0x78, 0x88, 0x98
D1, DEVD, C64NA, EXPD, TSS16, CLD, DNA, CNP = 0xA0, 0xA8, 0xB0, 0xB8, 0xC0, 0xC8, 0xD0, 0xD8
GDT_LIMIT = 0xDF
GDT_ENTRIES = {
    C64: desc(type=0xB, l=True, db=False),
    D0: desc(),
    C32: desc(type=0xB),
    C16: desc(limit=0xFFFF, type=0xB, db=False, g=False),
    D16: desc(limit=0xFFFF, db=False, g=False),
    C64U: desc(type=0xB, dpl=3, l=True, db=False),
    D3: desc(type=0x2, dpl=3),  # not accessed: a load sets the bit
    C32U: desc(type=0xB, dpl=3),
    RO: desc(type=0x1),
    NPD: desc(p=False),
    XO: desc(type=0x9),
    CONF: desc(type=0xF),  # conforming, readable, 32-bit
    TSSA: desc(TSS, 0x67, 0x9, s=False, db=False, g=False),
    TSSB: desc(TSS, 0x67, 0xB, s=False, db=False, g=False),
    LDTD: desc(LDT, 0x17, 0x2, s=False, db=False, g=False),
    GATE: desc(0x0008_1000 & 0xFFFF, 0, 0xC, s=False, db=False, g=False),  # a call gate's shape
    D1: desc(dpl=1),
    DEVD: desc(LOW, 0xFFFF, db=False, g=False),
    C64NA: desc(type=0xA, l=True, db=False),
    EXPD: desc(limit=0xFFF, type=0x7, g=False),  # expand-down: valid offsets 0x1000..0xFFFFFFFF
    TSS16: desc(TSS, 0x2B, 0x1, s=False, db=False, g=False),
    CLD: desc(type=0xB, l=True, db=True),  # L and D together: invalid in IA-32e mode
    DNA: desc(0x1234_5000, type=0x2),  # base for FS/GS loads, not accessed
    CNP: desc(type=0xB, l=True, db=False, p=False),
}
LDT_ENTRIES = {0x04: desc(type=0x3), 0x0C: desc(0x7000, type=0x2), 0x14: desc(type=0xB, dpl=3)}


def gdt_bytes() -> bytes:
    buf = bytearray(GDT_LIMIT + 1)
    for sel, d in GDT_ENTRIES.items():
        buf[sel : sel + 8] = d.to_bytes(8, "little")
    return bytes(buf)


def seg_of(selector: int, table: dict[int, int] = GDT_ENTRIES) -> Segment:
    d = table[selector & ~3]
    return segment_from_descriptor(selector, d & 0xFFFF_FFFF, d >> 32)


def ldtr() -> Segment:
    return seg_of(LDTD)


def tr() -> Segment:
    seg = seg_of(TSSB)
    seg.selector = TSSB
    return seg


def control_for(mode: str, cpl: int) -> Control:
    """The control state of a row's mode; CS/SS of DPL `cpl` (and data segments of DPL 0, or 3 at CPL 3)."""
    ctl = Control(gdtr=(GDT, GDT_LIMIT), idtr=(0x8000, 0xFFF), tr=tr(), ldtr=ldtr())
    data = seg_of(D3 | 3) if cpl == 3 else seg_of(D0)
    data.type |= 1
    if mode in ("64", "compat"):
        ctl.cr0 = CR0_PE | CR0_PG | CR0_WP | CR0_ET
        ctl.cr4 = CR4_PAE
        ctl.efer = EFER_LME | EFER_LMA | EFER_NXE
        code = (C64U if mode == "64" else C32U) | 3 if cpl == 3 else (C64 if mode == "64" else C32)
        ctl.segs = [data, seg_of(code), data, data, data, data]
    elif mode in ("32", "16"):
        ctl.cr0 = CR0_PE | CR0_ET
        if mode == "32":
            code = C32U | 3 if cpl == 3 else C32
            ctl.segs = [data, seg_of(code), data, data, data, data]
        else:
            dev = seg_of(DEVD)
            ctl.segs = [dev, seg_of(C16), dev, dev, dev, dev]
    elif mode == "real":
        ctl.cr0 = CR0_ET
        low = Segment(LOW >> 4, LOW, 0xFFFF)
        ctl.segs = [low, Segment(0, 0, 0xFFFF, 0xB), low, low, Segment(0, 0, 0xFFFF), Segment()]
    elif mode == "vm86":
        ctl.cr0 = CR0_PE | CR0_ET
        ctl.cpl = 3
        low = Segment(LOW >> 4, LOW, 0xFFFF, 3, dpl=3)
        ctl.segs = [low, Segment(0, 0, 0xFFFF, 3, dpl=3), low, low, low, low]
    else:
        raise ValueError(mode)
    if mode != "vm86":
        ctl.cpl = cpl
    return ctl


@dataclass
class Run:
    exits: list[VmExit]
    trace: list[tuple[int, int, bool, int]]  # offsets from the device's base
    before: Control
    backend: ScriptedBackend
    vm: Vm


@dataclass
class Setup:
    code: bytes
    mode: str = "64"
    cpl: int = 0
    gprs: dict[int, int] = field(default_factory=dict)
    rflags: int = 0x2
    device: dict[int, bytes] = field(default_factory=dict)
    ram: dict[int, bytes] = field(default_factory=dict)
    fault: int = 0  # offset in the device of the access the hardware reports
    gdt_in_device: bool = False  # GDTR = device + 0x1000, holding the same GDT
    control: dict[str, Any] = field(default_factory=dict)  # attribute overrides of the Control


def device_base(mode: str) -> int:
    return LOW if mode in ("real", "16", "vm86") else MMIO


def build(setup: Setup) -> tuple[Vm, ScriptedBackend, MemDevice]:
    vm = Vm()
    vm.add_ram(0, LOW)
    vm.add_ram(0x10_0000, 0x30_0000)
    mem = vm.memory
    mem.write(GDT, gdt_bytes())
    for sel, d in LDT_ENTRIES.items():
        mem.write_int(LDT + (sel & ~7), 8, d)
    pt = PageTables(PT_POOL)
    for n in range(4):
        pt.map(n * PAGE_1G, n * PAGE_1G, PAGE_1G, P | RW | US)
    pt.map(HIGH, GDT & ~0xFFF, PAGE_4K, P | RW | US)
    pt.map(HIGH + 0x2000, MMIO + 0x1000, PAGE_4K, P | RW | US)
    pt.map(HIGH + 0x3000, GDT & ~0xFFF, PAGE_4K, P | US)
    for gpa, entry in pt.entries.items():
        mem.write_int(gpa, 8, entry)
    mem.write(CODE, setup.code)
    for gpa, data in setup.ram.items():
        mem.write(gpa, data)
    base = device_base(setup.mode)
    device = MemDevice(base, LOW_SIZE if base == LOW else MMIO_SIZE)
    for off, data in setup.device.items():
        device.load(off, data)
    ctl = control_for(setup.mode, setup.cpl)
    ctl.cr3 = pt.root
    if setup.gdt_in_device:
        device.load(0x1000, gdt_bytes())
        ctl.gdtr = (base + 0x1000, GDT_LIMIT)
    for name, value in setup.control.items():
        setattr(ctl, name, value)
    regs = Regs(rip=CODE, rflags=setup.rflags)
    if setup.mode == "vm86":
        regs.rflags |= VM
    regs.gprs[4] = STACK + 0x100
    regs.gprs[3] = base
    for n, v in setup.gprs.items():
        regs.gprs[n] = v & ((1 << 64) - 1)
    backend = ScriptedBackend(regs, ctl)
    backend.events.append(NpfEvent(base + setup.fault))
    return vm, backend, device


def run(setup: Setup) -> Run:
    vm, backend, device = build(setup)
    before = backend.control.copy()
    vcpu = vm.create_vcpu(backend)
    exits: list[VmExit] = []
    entry: VmEntry | None = None
    for _ in range(1000):
        ex = vcpu.run(entry)
        exits.append(ex)
        if isinstance(ex, MmioExit):
            entry = device.serve(ex)
        elif isinstance(ex, HltExit | InstEmulExit):
            break
        else:
            raise AssertionError(f"unexpected exit {ex}")
    trace = [(g - device.base, s, w, d) for g, s, w, d in device.trace]
    return Run(exits, trace, before, backend, vm)
