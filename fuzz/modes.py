"""CPU modes for the instruction target: control state and page tables, as data, for the scripted backend.

Every mode shares one guest-physical map: RAM [0, RAM_END) with code anywhere in it and page tables at
PT_POOL, userspace MMIO right after RAM (and everywhere else unclaimed), an in-kernel memory-like
device at KDEV and in-kernel ports KPORT..KPORT+3. Paging modes identity-map the low 4 GiB with large
pages, except windows that test the page-level checks (not present, read-only, supervisor, NX; each
maps to physical 0, so it reaches RAM and MMIO), and the top 4 KiB page, which maps to a RAM page so
code can run at EIP 0xFFFFFxxx and wrap. Templates of RAM are built once per mode and copied per case.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from vmmio.x86.state import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    Control,
    Segment,
)

RAM_END = 0xA_0000
MMIO = 0xA_0000  # userspace: the first byte after RAM
KDEV = 0xC_0000
KPORT = 0x70
PT_POOL = 0x9_0000
TOP_CODE = 0x8_F000  # the RAM page the top linear page maps to
P, RW, US, PS = 1, 2, 4, 0x80
NX = 1 << 63
LARGE = 1 << 22  # window granularity: one 32-bit PSE page, two PAE/4-level 2 MiB pages
WINDOWS = {0x8000_0000: 0, 0x8040_0000: P | US, 0x8080_0000: P | RW, 0x80C0_0000: P | RW | US | NX}
TOP = 0xFFFF_F000
CS, SS, DS = 1, 2, 3


@dataclass(frozen=True)
class Paging:
    """One paging structure format: entry size, index shift per level from the root, large-page shift."""

    entry: int
    shifts: tuple[int, ...]
    large: int
    nx: bool


PAGING = {
    "32": Paging(4, (22, 12), 22, False),
    "pae": Paging(8, (30, 21, 12), 21, True),
    "4l": Paging(8, (39, 30, 21, 12), 21, True),
}


class Tables:
    """Page tables written into a RAM image, one 4 KiB table at a time from PT_POOL."""

    def __init__(self, ram: bytearray, paging: Paging) -> None:
        self.ram, self.paging = ram, paging
        self.next = PT_POOL
        self.children: dict[int, int] = {}
        self.root = self._alloc()

    def _alloc(self) -> int:
        table = self.next
        self.next += 0x1000
        return table

    def _write(self, slot: int, value: int) -> None:
        self.ram[slot : slot + self.paging.entry] = value.to_bytes(self.paging.entry, "little")

    def map(self, la: int, pa: int, shift: int, flags: int) -> None:
        """Map the page of 2**shift bytes at `la` to `pa`."""
        p = self.paging
        table = self.root
        for level, s in enumerate(p.shifts):
            bits = (
                32 - s if level == 0 and p.entry == 8 and len(p.shifts) == 3 else (10 if p.entry == 4 else 9)
            )
            slot = table + ((la >> s) & ((1 << bits) - 1)) * p.entry
            if s == shift:
                leaf = flags if p.nx else flags & ~NX
                self._write(slot, pa | leaf | (PS if shift != 12 else 0))
                return
            child = self.children.get(slot)
            if child is None:
                child = self.children[slot] = self._alloc()
                # PAE PDPTEs have no RW/US bits (they are reserved there).
                upper = P if p.entry == 8 and len(p.shifts) == 3 and level == 0 else P | RW | US
                self._write(slot, child | upper)
            table = child


@cache
def template(kind: str) -> tuple[bytes, int]:
    """(RAM image with the page tables, CR3) for a paging kind."""
    ram = bytearray(RAM_END)
    paging = PAGING[kind]
    t = Tables(ram, paging)
    large = 1 << paging.large
    for la in range(0, 1 << 32, large):
        if la == (1 << 32) - large:
            continue  # the top: 4 KiB pages below
        window = la & ~(LARGE - 1)
        if window in WINDOWS:
            t.map(la, la - window, paging.large, WINDOWS[window])
        else:
            t.map(la, la, paging.large, P | RW | US)
    top = (1 << 32) - large
    for la in range(top, TOP, 0x1000):
        t.map(la, la, 12, P | RW | US)
    t.map(TOP, TOP_CODE, 12, P | RW | US)
    return bytes(ram), t.root


def _segment(base: int, limit: int, *, code: bool, bits: int, dpl: int) -> Segment:
    return Segment(
        selector=0x10 | dpl if not code else 0x08 | dpl,
        base=base,
        limit=limit,
        type=11 if code else 3,
        dpl=dpl,
        db=bits == 32,
        l=code and bits == 64,
        g=limit > 0xFFFFF,
    )


@dataclass(frozen=True)
class Mode:
    """A row of MODES: code size, paging kind (None: off), long mode."""

    bits: int
    paging: str | None
    long: bool = False

    def control(self, cpl: int, cs_base: int, bases: tuple[int, ...], limits: tuple[int, ...]) -> Control:
        """Control state with CS at `cs_base` and ES/SS/DS/FS/GS at `bases`/`limits` (in that order)."""
        if self.bits == 0:  # real mode: CPL 0, 64 KiB segments at selector * 16
            ctl = Control()
            ctl.segs = [
                Segment(selector=b >> 4 & 0xFFFF, base=(b >> 4 & 0xFFFF) << 4, type=3) for b in _five(bases)
            ]
            ctl.segs.insert(CS, Segment(selector=cs_base >> 4, base=cs_base, type=11))
            return ctl
        code_bits = self.bits
        ctl = Control(cr0=CR0_PE, cpl=cpl)
        data_bits = 16 if code_bits == 16 else 32
        data = zip(_five(bases), _five(limits, 0xFFFF_FFFF), strict=True)
        segs = [_segment(b, lim, code=False, bits=data_bits, dpl=cpl) for b, lim in data]
        code_limit = 0xFFFF if code_bits == 16 else 0xFFFF_FFFF
        segs.insert(CS, _segment(cs_base, code_limit, code=True, bits=code_bits, dpl=cpl))
        ctl.segs = segs
        if self.paging is not None:
            root = template(self.paging)[1]
            ctl.cr0 |= CR0_PG
            ctl.cr3 = root
            if self.paging == "32":
                ctl.cr4 = CR4_PSE
            else:
                ctl.cr4 = CR4_PAE
                ctl.efer = EFER_NXE
            if self.long:
                ctl.efer |= EFER_LME | EFER_LMA
        return ctl


def _five(values: tuple[int, ...], fill: int = 0) -> list[int]:
    return list((values + (fill,) * 5)[:5])


MODES: dict[str, Mode] = {
    "real": Mode(0, None),
    "pm16": Mode(16, None),
    "pm32": Mode(32, None),
    "pm32-paging32": Mode(32, "32"),
    "pm16-pae": Mode(16, "pae"),
    "pm32-pae": Mode(32, "pae"),
    "compat32": Mode(32, "4l", long=True),
    "compat16": Mode(16, "4l", long=True),
    "long64": Mode(64, "4l", long=True),
}
