"""Segmentation as data: one row per check of `linear_address`, in every mode it applies to.

Each row names the mode, the segment register and its descriptor cache (as VMX holds it: byte-granular
limit), the offset, size and kind of the access, and expects the linear address or the exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from vmmio.x86.faults import AC, GP, PFEC_I, PFEC_W, SS, GuestFault
from vmmio.x86.regs import AC as RFLAGS_AC
from vmmio.x86.regs import RFLAGS_FIXED1, Seg
from vmmio.x86.segmentation import linear_address
from vmmio.x86.state import CR0_AM, CR0_PE, CR0_PG, CR4_LA57, CR4_PAE, EFER_LMA, EFER_LME, Control, Segment

ES, CS, SSR, DS, FS, GS = (int(s) for s in Seg)
R, W, X = 0, PFEC_W, PFEC_I
# Descriptor types.
DATA_RO, DATA_RW, DATA_RO_DOWN, DATA_RW_DOWN = 1, 3, 5, 7
CODE_XO, CODE_XR = 9, 11
FLAT = 0xFFFF_FFFF
LA57 = CR4_LA57


def control(mode: str) -> Control:
    """Control state of a mode: real, pm16, pm32, compat, long (paging on where long mode needs it)."""
    ctl = Control()
    if mode == "real":
        ctl.segs = [Segment(selector=0x1000, base=0x1_0000, type=DATA_RW) for _ in range(6)]
        ctl.segs[CS] = Segment(selector=0xF000, base=0xF_0000, type=CODE_XR)
        return ctl
    ctl.cr0 = CR0_PE
    big = mode != "pm16"
    limit = FLAT if big else 0xFFFF
    ctl.segs = [Segment(selector=0x10, limit=limit, type=DATA_RW, db=big, g=big) for _ in range(6)]
    ctl.segs[CS] = Segment(selector=0x08, limit=limit, type=CODE_XR, db=big, g=big)
    if mode in ("compat", "long"):
        ctl.cr0 |= CR0_PG
        ctl.cr4 = CR4_PAE
        ctl.efer = EFER_LME | EFER_LMA
        ctl.segs[CS].l = mode == "long"
        ctl.segs[CS].db = mode != "long"
    return ctl


@dataclass(frozen=True)
class Row:
    name: str
    mode: str
    seg: int
    offset: int
    want: int | str  # the linear address, or "GP" / "SS" / "AC"
    size: int = 4
    access: int = R
    desc: dict[str, Any] = field(default_factory=dict)  # descriptor-cache fields to change
    cpl: int = 0
    rflags: int = RFLAGS_FIXED1
    cr0: int = 0  # extra CR0 bits
    cr4: int = 0  # extra CR4 bits
    ac: bool = False  # alignment checking on: CPL 3, CR0.AM, RFLAGS.AC


AC_ON = RFLAGS_FIXED1 | RFLAGS_AC
DOWN = {"type": DATA_RW_DOWN, "limit": 0xFFF}  # expand-down, 16-bit
DOWN32 = {"type": DATA_RW_DOWN, "limit": 0xFFF, "db": True}
RO_DOWN = {**DOWN, "type": DATA_RO_DOWN}
RO_DOWN32_AT_8K = {**DOWN32, "type": DATA_RO_DOWN, "base": 0x2000}
V86_CS = {"type": DATA_RW, "dpl": 3, "base": 0x1_0000}

ROWS = [
    # Real mode: base = selector * 16 from the descriptor cache, 16-bit limits, no A20 wrap.
    Row("real: base plus offset", "real", DS, 0x1234, 0x1_1234),
    Row("real: last byte at 0xFFFF", "real", DS, 0xFFFF, 0x1_FFFF, size=1),
    Row("real: word at 0xFFFF crosses the limit", "real", DS, 0xFFFF, "GP", size=2),
    Row("real: stack word at 0xFFFF", "real", SSR, 0xFFFF, "SS", size=2),
    Row("real: above 1 MiB, no A20 masking", "real", DS, 0xFFFF, 0x10_FFEF, size=1, desc={"base": 0xF_FFF0}),
    Row("real: unreal-mode 4 GiB limit", "real", DS, 0x20_0000, 0x21_0000, desc={"limit": FLAT}),
    Row("real: write through CS", "real", CS, 0x10, 0xF_0010, access=W),
    Row("real: fetch from a data-type CS (reset)", "real", CS, 0xFFF0, 0xF_FFF0, 1, X, {"type": DATA_RW}),
    Row("real: read-only data cache refuses writes", "real", ES, 0, "GP", access=W, desc={"type": DATA_RO}),
    Row("real: fetch past the CS limit", "real", CS, 0xFFFE, "GP", size=3, access=X),
    # Limits, expand-up.
    Row("pm32: flat", "pm32", DS, 0x1234_5678, 0x1234_5678),
    Row("pm32: base wraps at 4 GiB", "pm32", DS, 0x2000, 0x1000, desc={"base": 0xFFFF_F000}),
    Row("pm32: last byte at the limit", "pm32", DS, 0xFFC, 0x1_0FFC, desc={"base": 0x1_0000, "limit": 0xFFF}),
    Row("pm32: one byte past the limit", "pm32", DS, 0xFFD, "GP", desc={"limit": 0xFFF}),
    Row("pm32: offset past the limit", "pm32", ES, 0x1000, "GP", size=1, desc={"limit": 0xFFF}),
    Row("pm32: SS past the limit", "pm32", SSR, 0x1000, "SS", desc={"limit": 0xFFF}),
    Row("pm32: FS past the limit", "pm32", FS, 0x1000, "GP", desc={"limit": 0xFFF}),
    Row("pm32: 4 GiB segment, access wraps", "pm32", DS, 0xFFFF_FFFE, 0xFFFF_FFFE),
    Row("pm16: 64 KiB limit", "pm16", DS, 0xFFFF, "GP", size=2),
    Row("pm16: within the limit", "pm16", GS, 0xFFFE, 0x2_FFFE, size=2, desc={"base": 0x2_0000}),
    Row("compat: limit checked", "compat", DS, 0x1_0000, "GP", desc={"limit": 0xFFFF}),
    Row("compat: base applies", "compat", DS, 0x10, 0x8000_0010, desc={"base": 0x8000_0000}),
    Row("pm32: fetch past the CS limit", "pm32", CS, 0xFFF, "GP", size=2, access=X, desc={"limit": 0xFFF}),
    # Expand-down: valid offsets are limit+1 .. 0xFFFF (D/B=0) or 0xFFFFFFFF (D/B=1).
    Row("down: offset at the limit", "pm32", DS, 0xFFF, "GP", 1, desc=DOWN),
    Row("down: first valid offset", "pm32", DS, 0x1000, 0x1000, 1, desc=DOWN),
    Row("down: straddles the limit", "pm32", DS, 0xFFE, "GP", desc=DOWN),
    Row("down: 16-bit top", "pm16", DS, 0xFFFC, 0xFFFC, desc=DOWN),
    Row("down: past 0xFFFF with D/B=0", "pm16", DS, 0xFFFE, "GP", desc=DOWN),
    Row("down: past 0xFFFF with D/B=1", "pm32", DS, 0xFFFE, 0xFFFE, desc=DOWN32),
    Row("down: top with D/B=1", "pm32", DS, FLAT, 0x1FFF, 1, desc=RO_DOWN32_AT_8K),
    Row("down: stack below the limit", "pm32", SSR, 0x800, "SS", desc=DOWN),
    Row("down: read-only refuses writes", "pm32", DS, 0x2000, "GP", access=W, desc=RO_DOWN),
    # Null (unusable) selectors.
    Row("null DS", "pm32", DS, 0, "GP", desc={"unusable": True, "selector": 0}),
    Row("null ES, write", "pm16", ES, 0, "GP", access=W, desc={"unusable": True, "selector": 0}),
    Row("null SS", "pm32", SSR, 0, "SS", desc={"unusable": True, "selector": 0}),
    Row("null GS in compatibility mode", "compat", GS, 0, "GP", desc={"unusable": True, "selector": 0}),
    Row("null DS is fine in 64-bit mode", "long", DS, 0x1000, 0x1000, desc={"unusable": True}),
    Row("null SS is fine in 64-bit mode", "long", SSR, 0x1000, 0x1000, desc={"unusable": True}),
    # Types.
    Row("write to read-only data", "pm32", DS, 0, "GP", access=W, desc={"type": DATA_RO}),
    Row("read of read-only data", "pm32", DS, 0, 0, desc={"type": DATA_RO}),
    Row("write to read-only stack", "pm32", SSR, 0, "SS", access=W, desc={"type": DATA_RO}),
    Row("write to a code segment", "pm32", CS, 0, "GP", access=W),
    Row("write to a code segment via DS", "compat", DS, 0, "GP", access=W, desc={"type": CODE_XR}),
    Row("read of readable code", "pm32", CS, 0x40, 0x40),
    Row("read of execute-only code", "pm32", CS, 0x40, "GP", desc={"type": CODE_XO}),
    Row("read of execute-only code via ES", "pm16", ES, 0x40, "GP", desc={"type": CODE_XO}),
    Row("fetch from execute-only code", "pm32", CS, 0x40, 0x40, size=1, access=X, desc={"type": CODE_XO}),
    Row("fetch from a data segment", "pm32", CS, 0x40, "GP", size=1, access=X, desc={"type": DATA_RW}),
    Row("fetch, virtual-8086 CS", "pm16", CS, 0x40, 0x1_0040, size=1, access=X, desc=V86_CS),
    Row("system descriptor", "pm32", DS, 0, "GP", desc={"s": False, "type": 2}),
    # 64-bit mode: bases only for FS/GS, no limits or types, canonical addresses.
    Row("long: DS base ignored", "long", DS, 0x1000, 0x1000, desc={"base": 0x10_0000, "limit": 0}),
    Row("long: FS base", "long", FS, 0x10, 0xFFFF_8000_0000_0010, desc={"base": 0xFFFF_8000_0000_0000}),
    Row("long: GS base", "long", GS, 0x8, 0x7FFF_0008, desc={"base": 0x7FFF_0000}),
    Row("long: write via CS", "long", CS, 0x1000, 0x1000, access=W),
    Row("long: read-only DS ignored", "long", DS, 0x1000, 0x1000, access=W, desc={"type": DATA_RO}),
    Row("long: non-canonical", "long", DS, 0x8000_0000_0000, "GP"),
    Row("long: non-canonical high", "long", ES, 0xFFFF_7FFF_FFFF_FFF0, "GP"),
    Row("long: non-canonical stack", "long", SSR, 0x8000_0000_0000, "SS"),
    Row("long: last byte non-canonical", "long", DS, 0x7FFF_FFFF_FFFC, "GP", size=8),
    Row("long: last byte canonical", "long", DS, 0x7FFF_FFFF_FFF8, 0x7FFF_FFFF_FFF8, size=8),
    Row("long: FS base makes it non-canonical", "long", FS, 0x10, "GP", desc={"base": 0x7FFF_FFFF_FFF8}),
    Row("long: 57-bit canonical with LA57", "long", DS, 0xFF_8000_0000_0000, 0xFF_8000_0000_0000, cr4=LA57),
    Row("long: 57-bit address without LA57", "long", DS, 0xFF_8000_0000_0000, "GP"),
    Row("long: non-canonical with LA57", "long", SSR, 0x100_0000_0000_0000, "SS", cr4=LA57),
    Row("long: fetch non-canonical", "long", CS, 0x8000_0000_0000, "GP", size=1, access=X),
    # Alignment check: CR0.AM, RFLAGS.AC and CPL 3 together, on the linear address, not for fetches.
    Row("#AC: misaligned dword", "pm32", DS, 0x1002, "AC", ac=True),
    Row("#AC: misaligned word", "long", DS, 0x1001, "AC", size=2, ac=True),
    Row("#AC: misaligned qword", "compat", DS, 0x1004, "AC", size=8, ac=True),
    Row("#AC: write", "pm32", DS, 0x1002, "AC", access=W, ac=True),
    Row("#AC: aligned", "pm32", DS, 0x1004, 0x1004, ac=True),
    Row("#AC: bytes are always aligned", "pm32", DS, 0x1003, 0x1003, size=1, ac=True),
    Row("#AC: on the linear address", "pm32", DS, 0x1002, 0x1004, desc={"base": 2}, ac=True),
    Row("#AC: 10-byte operand needs 8", "pm32", DS, 0x1008, 0x1008, size=10, ac=True),
    Row("#AC: not at CPL 0", "pm32", DS, 0x1002, 0x1002, cr0=CR0_AM, rflags=RFLAGS_FIXED1 | RFLAGS_AC),
    Row("#AC: not without CR0.AM", "pm32", DS, 0x1002, 0x1002, cpl=3, rflags=RFLAGS_FIXED1 | RFLAGS_AC),
    Row("#AC: not without RFLAGS.AC", "pm32", DS, 0x1002, 0x1002, cpl=3, cr0=CR0_AM),
    Row("#AC: not for fetches", "pm32", CS, 0x1001, 0x1001, size=2, access=X, ac=True),
    Row("#AC: the limit check comes first", "pm32", DS, 0xFFE, "GP", desc={"limit": 0xFFF}, ac=True),
    Row("#AC: canonical check comes first", "long", SSR, 0x8000_0000_0002, "SS", ac=True),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_linear_address(row: Row) -> None:
    ctl = control(row.mode)
    ctl.segs[row.seg] = replace(ctl.segs[row.seg], **row.desc)
    ctl.cpl = 3 if row.ac else row.cpl
    ctl.cr0 |= row.cr0 | (CR0_AM if row.ac else 0)
    ctl.cr4 |= row.cr4
    rflags = AC_ON if row.ac else row.rflags
    if ctl.cpl == 3 and row.mode != "real":
        for seg in ctl.segs:
            seg.dpl = 3
    mode = ctl.code_size
    assert mode == {"real": 16, "pm16": 16, "pm32": 32, "compat": 32, "long": 64}[row.mode]
    if isinstance(row.want, int):
        assert linear_address(ctl, mode, row.seg, row.offset, row.size, row.access, rflags) == row.want
        return
    with pytest.raises(GuestFault) as info:
        linear_address(ctl, mode, row.seg, row.offset, row.size, row.access, rflags)
    vector = {"GP": GP, "SS": SS, "AC": AC}[row.want]
    assert (info.value.vector, info.value.error_code, info.value.cr2) == (vector, 0, None)
