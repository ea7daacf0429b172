"""Page walks over real tables in guest RAM: every paging mode, every #PF cause, A/D bits, the cache.

Tables are built per mode by `Tables` (32-bit, PAE, 4-level, 5-level) in a `Vm`'s RAM; each row names
the mode, the mapping, one change to one entry and the access, and expects either the GPA or the
#PF error code (CR2 is always the linear address). A sample of random walks is cross-checked against
Unicorn 2.1.4 (QEMU's MMU) at the end of the file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmmio.vmm.vm import Vm
from vmmio.x86.faults import PF, PFEC_I, PFEC_U, PFEC_W, GuestFault
from vmmio.x86.paging import TranslationError, Updates, Walker, apply_updates
from vmmio.x86.state import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_LA57,
    CR4_PAE,
    CR4_PKE,
    CR4_PSE,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    Control,
)

P, RW, US, PWT, A, D, PS = 1, 2, 4, 8, 0x20, 0x40, 0x80
NX = 1 << 63
K4, M2, M4, G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30
R, W, U, I = 0, PFEC_W, PFEC_U, PFEC_I
# Error-code bits as the expected values spell them.
EP, EW, EU, ERSVD, EI, EPK = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20

RAM_SIZE = 16 << 20
POOL = 0x10_0000
PA = 1 << 30  # aligned for every page size; translation never touches the target

# Paging-structure layout per mode: entry size and the shifts from the root down.
LAYOUT = {
    "32": (4, (22, 12)),
    "pae": (8, (30, 21, 12)),
    "4l": (8, (39, 30, 21, 12)),
    "5l": (8, (48, 39, 30, 21, 12)),
}
# Linear bases with non-zero indices at every level, aligned to 1 GiB (4 MiB for 32-bit modes).
BASE = {"32": 0xC040_0000, "pae": 0xC040_0000, "4l": 0x7F80_4000_0000, "5l": 0xAB_7F80_4000_0000}
OFFSET = {K4: 0x123, M2: 0x1_2345, M4: 0x23_4567, G1: 0x1234_5678}


def layout_of(kind: str) -> str:
    return "32" if kind.startswith("32") else kind


class Tables:
    """Page tables of one paging mode, written straight into guest RAM."""

    def __init__(self, vm: Vm, kind: str, pool: int = POOL) -> None:
        self.vm = vm
        self.kind = layout_of(kind)
        self.esize, self.shifts = LAYOUT[self.kind]
        self._next = pool
        self._children: dict[int, int] = {}
        self.root = self._alloc()

    def _alloc(self) -> int:
        table = self._next
        self._next += K4
        self.vm.memory.write(table, bytes(K4))
        return table

    def read(self, slot: int) -> int:
        return self.vm.memory.read_int(slot, self.esize)

    def write(self, slot: int, value: int) -> None:
        self.vm.memory.write_int(slot, self.esize, value)

    def frame(self, pa: int, size: int) -> int:
        if self.kind == "32" and size == M4:
            return (pa & 0xFFC0_0000) | ((pa >> 32) & 0xFF) << 13  # PSE-36
        return pa

    def map(
        self, va: int, pa: int, size: int = K4, leaf: int = P | RW, table: int = P | RW | US
    ) -> list[int]:
        """Map `va` to `pa`; returns the addresses of the entries on the path, root first."""
        path = []
        t = self.root
        for depth, shift in enumerate(self.shifts):
            slot = t + ((va >> shift) & 0x3FF if self.kind == "32" else (va >> shift) & 0x1FF) * self.esize
            path.append(slot)
            if 1 << shift == size:
                self.write(slot, self.frame(pa, size) | leaf | (PS if size != K4 else 0))
                return path
            child = self._children.get(slot)
            if child is None:
                child = self._children[slot] = self._alloc()
            # PAE PDPTEs have no R/W or U/S bits: those positions are reserved.
            self.write(slot, child | (P if self.kind == "pae" and depth == 0 else table))
            t = child
        raise ValueError(f"no {size:#x} pages in {self.kind} paging")

    def snapshot(self) -> bytes:
        return self.vm.memory.read(POOL, self._next - POOL)


def control(
    kind: str, cr3: int, *, wp: bool = True, nxe: bool = True, cr4: int = 0, cpl: int = 0, pkru: int = 0
) -> Control:
    """Control state for a paging mode: 32, 32pse, pae, 4l, 5l."""
    cr4 |= {"32": 0, "32pse": CR4_PSE, "pae": CR4_PAE, "4l": CR4_PAE, "5l": CR4_PAE | CR4_LA57}[kind]
    efer = EFER_NXE if nxe else 0
    if kind in ("4l", "5l"):
        efer |= EFER_LME | EFER_LMA
    cr0 = CR0_PE | CR0_PG | (CR0_WP if wp else 0)
    return Control(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer, cpl=cpl, pkru=pkru)


def setup(
    kind: str, size: int, pa: int = PA, leaf: int = P | RW, table: int = P | RW | US
) -> tuple[Vm, Tables, int, list[int]]:
    vm = Vm(RAM_SIZE)
    tables = Tables(vm, kind)
    base = BASE[layout_of(kind)]
    path = tables.map(base, pa, size, leaf, table)
    return vm, tables, base + OFFSET[size], path


# -- translation and A/D bits -----------------------------------------------------------------------


@dataclass(frozen=True)
class Map:
    name: str
    kind: str
    size: int
    access: int = R
    pa: int = PA
    leaf: int = P | RW | US
    poke: tuple[int, int] = (0, 0)  # (path index, bits set in that entry after mapping)


MAPS = [
    Map("32-bit 4K read", "32", K4),
    Map("32-bit 4K write", "32", K4, W),
    Map("32-bit 4K user write", "32", K4, W | U),
    Map("32-bit PSE off: PS bit ignored", "32", K4, poke=(0, PS)),
    Map("32-bit 4M read", "32pse", M4),
    Map("32-bit 4M write", "32pse", M4, W),
    Map("32-bit 4M PSE-36 above 4 GiB", "32pse", M4, pa=0x12_3440_0000),
    Map("32-bit 4M PAT bit 12 is not address", "32pse", M4, poke=(0, 1 << 12)),
    Map("PAE 4K read", "pae", K4),
    Map("PAE 4K write", "pae", K4, W),
    Map("PAE 2M write", "pae", M2, W),
    Map("PAE 4K above 4 GiB", "pae", K4, pa=0x3_2100_0000),
    Map("PAE fetch, XD clear", "pae", K4, I),
    Map("4-level 4K read", "4l", K4),
    Map("4-level 4K write", "4l", K4, W),
    Map("4-level 2M write", "4l", M2, W),
    Map("4-level 1G write", "4l", G1, W),
    Map("4-level 1G user read", "4l", G1, U),
    Map("4-level 4K PAT bit 7 is not PS", "4l", K4, poke=(3, PS)),
    Map("4-level bits 62:52 ignored without PKE", "4l", K4, W, poke=(3, 0x7FF << 52)),
    Map("5-level 4K write", "5l", K4, W),
    Map("5-level 2M read", "5l", M2),
    Map("5-level 1G write", "5l", G1, W),
]


@pytest.mark.parametrize("row", MAPS, ids=[m.name for m in MAPS])
def test_translation_and_accessed_dirty_bits(row: Map) -> None:
    vm, tables, la, path = setup(row.kind, row.size, row.pa, row.leaf)
    index, bits = row.poke
    if bits:
        tables.write(path[index], tables.read(path[index]) | bits)
    ctl = control(row.kind, tables.root, cpl=3 if row.access & U else 0)
    before = [tables.read(slot) for slot in path]
    gpa = vm.walker.translate(ctl, la, row.access, False)
    assert gpa == row.pa + OFFSET[row.size]
    after = [tables.read(slot) for slot in path]
    pdpte = row.kind == "pae"
    for n, (old, new) in enumerate(zip(before, after, strict=True)):
        want = old if pdpte and n == 0 else old | A  # PAE PDPTEs have no accessed bit
        if n == len(path) - 1 and row.access & W:
            want |= D
        assert new == want, f"entry {n}: {new:#x} != {want:#x}"
    # The same walk again: a cache hit, same address, nothing left to update.
    assert vm.walker.walk(ctl, la, row.access, False) == (gpa, [])


def test_pae_pdptes_come_from_control_when_given() -> None:
    vm, tables, la, path = setup("pae", K4)
    ctl = control("pae", tables.root)
    pdpte = tables.read(path[0])
    tables.write(path[0], 0)  # guest RAM changed after CR3 was loaded: the registers still hold it
    ctl.pdptes = (0, 0, 0, pdpte) if (la >> 30) == 3 else (pdpte, pdpte, pdpte, pdpte)
    assert vm.walker.translate(ctl, la, R, False) == PA + OFFSET[K4]
    ctl.pdptes = (0, 0, 0, 0)
    with pytest.raises(GuestFault) as info:
        vm.walker.translate(ctl, la, W, False)
    assert (info.value.vector, info.value.error_code, info.value.cr2) == (PF, EW, la)


def test_paging_off_is_identity() -> None:
    vm = Vm(RAM_SIZE)
    assert vm.walker.walk(Control(cr0=CR0_PE), 0x1_2345_6789, W, False) == (0x2345_6789, [])
    assert vm.walker.walk(Control(), 0x10_FFEF, R, False) == (0x10_FFEF, [])  # real mode: no A20 wrap


# -- page faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    kind: str
    access: int
    ec: int | None  # None: the access succeeds
    size: int = K4
    leaf: int = P | RW
    table: int = P | RW | US
    at: int = -1  # path index of the entry changed: 0 is the root level, -1 the leaf
    set: int = 0
    clear: int = 0
    cpl: int = 0
    ac: bool = False
    wp: bool = True
    nxe: bool = True
    cr4: int = 0
    pkru: int = 0


UP = P | RW | US  # a user page
KEY5 = 5 << 59  # protection key 5 in a leaf
AD5, WD5 = 1 << 10, 1 << 11

FAULTS = [
    # Not present, at each level.
    Fault("32 PDE not present", "32", R, 0, at=0, clear=P),
    Fault("32 PTE not present, write", "32", W, EW, clear=P),
    Fault("32 4M PDE not present, user", "32pse", U, EU, size=M4, clear=P),
    Fault("PAE PDPTE not present", "pae", W, EW, at=0, clear=P),
    Fault("PAE PDE not present", "pae", R, 0, at=1, clear=P),
    Fault("PAE PTE not present, user write", "pae", U | W, EU | EW, clear=P),
    Fault("4l PML4E not present", "4l", R, 0, at=0, clear=P),
    Fault("4l PDPTE not present", "4l", W, EW, at=1, clear=P),
    Fault("4l PDE not present", "4l", R, 0, at=2, clear=P),
    Fault("4l PTE not present", "4l", W, EW, clear=P),
    Fault("5l PML5E not present", "5l", R, 0, at=0, clear=P),
    Fault("5l 1G PDPTE not present", "5l", W, EW, size=G1, clear=P),
    # I/D: reported with NXE under PAE/IA-32e paging, or with SMEP; never otherwise.
    Fault("fetch not present, 32-bit", "32", I, 0, clear=P),
    Fault("fetch not present, 32-bit with NXE (no effect)", "32", I, 0, clear=P),
    Fault("fetch not present, 32-bit with SMEP", "32", I, EI, clear=P, cr4=CR4_SMEP),
    Fault("fetch not present, PAE without NXE", "pae", I, 0, clear=P, nxe=False),
    Fault("fetch not present, PAE with NXE", "pae", I, EI, clear=P),
    Fault("fetch not present, 4l without NXE", "4l", I, 0, clear=P, nxe=False),
    Fault("fetch not present, 4l with NXE", "4l", I, EI, clear=P),
    # R/W, U/S and CR0.WP.
    Fault("supervisor write to read-only, WP", "4l", W, EP | EW, leaf=P),
    Fault("supervisor write to read-only, no WP", "4l", W, None, leaf=P, wp=False),
    Fault("supervisor write to read-only user page, no WP", "32", W, None, leaf=P | US, wp=False),
    Fault("supervisor write, R/W clear in PDE, WP", "pae", W, EP | EW, at=1, clear=RW),
    Fault("user read of supervisor page", "4l", U, EP | EU, leaf=P | RW),
    Fault("user read, U/S clear in PML4E", "4l", U, EP | EU, leaf=UP, at=0, clear=US),
    Fault("user write to read-only user page", "32", U | W, EP | EU | EW, leaf=P | US),
    Fault("user write to read-only user page, no WP", "pae", U | W, EP | EU | EW, leaf=P | US, wp=False),
    Fault("user write, R/W clear in 4M PDE", "32pse", U | W, EP | EU | EW, size=M4, leaf=P | US),
    Fault(
        "user write, R/W clear in PDPTE of a 2M page",
        "4l",
        U | W,
        EP | EU | EW,
        size=M2,
        leaf=UP,
        at=1,
        clear=RW,
    ),
    Fault("user read of user page", "5l", U, None, leaf=UP),
    # NX.
    Fault("fetch from XD leaf", "4l", I, EP | EI, set=NX),
    Fault("fetch, XD in PML4E", "4l", I, EP | EI, at=0, set=NX),
    Fault("user fetch from XD 2M page", "pae", U | I, EP | EU | EI, size=M2, leaf=UP, set=NX),
    Fault("read from XD page", "4l", R, None, set=NX),
    Fault("XD bit without NXE is reserved", "4l", R, EP | ERSVD, set=NX, nxe=False),
    Fault("XD bit without NXE is reserved (PAE)", "pae", W, EP | EW | ERSVD, set=NX, nxe=False),
    # SMEP.
    Fault("SMEP: supervisor fetch from user page", "4l", I, EP | EI, leaf=UP, cr4=CR4_SMEP),
    Fault("SMEP: 32-bit paging too", "32", I, EP | EI, leaf=UP, cr4=CR4_SMEP),
    Fault("SMEP off: supervisor fetch from user page", "4l", I, None, leaf=UP),
    Fault("SMEP: user fetch from user page", "4l", U | I, None, leaf=UP, cr4=CR4_SMEP),
    Fault("SMEP: data read of user page", "4l", R, None, leaf=UP, cr4=CR4_SMEP),
    # SMAP.
    Fault("SMAP: supervisor read of user page", "4l", R, EP, leaf=UP, cr4=CR4_SMAP),
    Fault("SMAP: supervisor write of user page", "32", W, EP | EW, leaf=UP, cr4=CR4_SMAP),
    Fault("SMAP: RFLAGS.AC allows it", "pae", W, None, leaf=UP, cr4=CR4_SMAP, ac=True),
    Fault("SMAP: implicit access at CPL 3 ignores AC", "4l", R, EP, leaf=UP, cr4=CR4_SMAP, cpl=3, ac=True),
    Fault("SMAP: supervisor fetch is SMEP's business", "4l", I, None, leaf=UP, cr4=CR4_SMAP),
    Fault("SMAP: user access unaffected", "4l", U | W, None, leaf=UP, cr4=CR4_SMAP),
    # Reserved bits (MAXPHYADDR 46).
    Fault("PS in PML4E", "4l", R, EP | ERSVD, at=0, set=PS),
    Fault("PS in PML5E", "5l", W, EP | EW | ERSVD, at=0, set=PS),
    Fault("bit 51 in PTE", "4l", R, EP | ERSVD, set=1 << 51),
    Fault("bit 46 (MAXPHYADDR) in PDE", "4l", R, EP | ERSVD, at=2, set=1 << 46),
    Fault("bit 45 in PTE is address", "4l", R, None, set=1 << 45),
    Fault("2M page bit 13", "4l", R, EP | ERSVD, size=M2, set=1 << 13),
    Fault("2M page bit 12 is PAT", "4l", R, None, size=M2, set=1 << 12),
    Fault("1G page bit 29", "5l", R, EP | ERSVD, size=G1, set=1 << 29),
    Fault("1G page bit 13", "4l", W, EP | EW | ERSVD, size=G1, set=1 << 13),
    Fault("reserved bit, user write", "4l", U | W, EP | EU | EW | ERSVD, leaf=UP, set=1 << 50),
    Fault("reserved bit, fetch with NXE", "4l", I, EP | EI | ERSVD, set=1 << 50),
    Fault("reserved bit wins over not-writable", "4l", W, EP | EW | ERSVD, leaf=P, set=1 << 50),
    Fault("PAE PDE bit 55 reserved", "pae", R, EP | ERSVD, at=1, set=1 << 55),
    Fault("PAE 2M page bit 20", "pae", R, EP | ERSVD, size=M2, set=1 << 20),
    Fault("PAE PDPTE bit 1 reserved", "pae", R, EP | ERSVD, at=0, set=RW),
    Fault("PAE PDPTE bit 5 reserved", "pae", R, EP | ERSVD, at=0, set=A),
    Fault("PAE PDPTE bit 63 reserved even with NXE", "pae", R, EP | ERSVD, at=0, set=NX),
    Fault("PAE PDPTE PWT is fine", "pae", R, None, at=0, set=PWT),
    Fault("32-bit 4M page bit 21 reserved", "32pse", R, EP | ERSVD, size=M4, set=1 << 21),
    Fault("32-bit 4M page bit 20 is PSE-36 address", "32pse", R, None, size=M4, set=1 << 20),
    Fault("32-bit 4K PTE has no reserved bits", "32", R, None, set=0xF000_0000),
    # Protection keys (IA-32e paging, user-mode addresses, data accesses).
    Fault("PK: AD denies user read", "4l", U, EP | EU | EPK, leaf=UP | KEY5, cr4=CR4_PKE, pkru=AD5),
    Fault("PK: AD denies supervisor read", "4l", R, EP | EPK, leaf=UP | KEY5, cr4=CR4_PKE, pkru=AD5),
    Fault("PK: WD denies user write", "5l", U | W, EP | EU | EW | EPK, leaf=UP | KEY5, cr4=CR4_PKE, pkru=WD5),
    Fault("PK: WD allows user read", "4l", U, None, leaf=UP | KEY5, cr4=CR4_PKE, pkru=WD5),
    Fault(
        "PK: WD denies supervisor write with WP",
        "4l",
        W,
        EP | EW | EPK,
        leaf=UP | KEY5,
        cr4=CR4_PKE,
        pkru=WD5,
    ),
    Fault(
        "PK: WD allows supervisor write without WP",
        "4l",
        W,
        None,
        leaf=UP | KEY5,
        cr4=CR4_PKE,
        pkru=WD5,
        wp=False,
    ),
    Fault("PK: fetches are not checked", "4l", U | I, None, leaf=UP | KEY5, cr4=CR4_PKE, pkru=AD5),
    Fault("PK: supervisor pages are not checked", "4l", R, None, leaf=P | RW | KEY5, cr4=CR4_PKE, pkru=AD5),
    Fault("PK: other key's rights", "4l", U, None, leaf=UP | KEY5, cr4=CR4_PKE, pkru=AD5 >> 2),
    Fault(
        "PK: reported with a U/S-R/W fault",
        "4l",
        U | W,
        EP | EU | EW | EPK,
        leaf=P | US | KEY5,
        cr4=CR4_PKE,
        pkru=WD5,
    ),
    Fault("PK: off without CR4.PKE", "4l", U, None, leaf=UP | KEY5, pkru=AD5),
    Fault("PK: not in PAE paging", "pae", U, None, leaf=UP, cr4=CR4_PKE, pkru=1),
]


@pytest.mark.parametrize("row", FAULTS, ids=[f.name for f in FAULTS])
def test_page_faults(row: Fault) -> None:
    vm, tables, la, path = setup(row.kind, row.size, leaf=row.leaf, table=row.table)
    slot = path[row.at]
    tables.write(slot, (tables.read(slot) | row.set) & ~row.clear)
    cpl = 3 if row.access & U else row.cpl
    ctl = control(row.kind, tables.root, wp=row.wp, nxe=row.nxe, cr4=row.cr4, cpl=cpl, pkru=row.pkru)
    before = tables.snapshot()
    if row.ec is None:
        vm.walker.translate(ctl, la, row.access, row.ac)
        return
    with pytest.raises(GuestFault) as info:
        vm.walker.translate(ctl, la, row.access, row.ac)
    assert (info.value.vector, info.value.error_code, info.value.cr2) == (PF, row.ec, la)
    assert tables.snapshot() == before  # no accessed or dirty bit on a faulting access


def test_second_page_fault_leaves_first_page_bits_alone() -> None:
    vm, tables, la, _ = setup("4l", K4)
    page = la & ~0xFFF
    _, updates = vm.walker.walk(control("4l", tables.root), page + 0xFFE, W, False)
    assert updates  # A and D are due on the first page ...
    before = tables.snapshot()
    with pytest.raises(GuestFault) as info:
        vm.walker.walk(control("4l", tables.root), page + K4, W, False)
    assert info.value.cr2 == page + K4
    assert tables.snapshot() == before  # ... but the caller drops them when the second page faults


def test_table_outside_ram_is_a_translation_error() -> None:
    vm, tables, la, path = setup("4l", K4)
    tables.write(path[1], (RAM_SIZE + 0x10_0000) | P | RW)
    with pytest.raises(TranslationError):
        vm.walker.walk(control("4l", tables.root), la, R, False)


# -- the walk cache -------------------------------------------------------------------------------


@dataclass
class CacheWorld:
    vm: Vm
    tables: Tables
    other: Tables  # the same linear pages mapped elsewhere, for CR3 switches
    slots: list[int]
    vas: list[int]


def cache_world(kind: str) -> CacheWorld:
    vm = Vm(RAM_SIZE)
    tables = Tables(vm, kind)
    other = Tables(vm, kind, POOL + 0x40_0000)
    base = BASE[layout_of(kind)]
    big = M4 if layout_of(kind) == "32" else M2
    slots: set[int] = set()
    vas = []
    key1 = 1 << 59 if kind in ("4l", "5l") else 0  # protection key 1 on the first page, XD on the second
    nx = NX if layout_of(kind) != "32" else 0
    pages = [(K4, 0x20_0000, P | RW | US | key1), (K4, 0x30_0000, P | RW | nx), (big, 0x80_0000, P | US)]
    for n, (size, pa, leaf) in enumerate(pages):
        va = base + n * big * 2
        slots.update(tables.map(va, pa, size, leaf))
        other.map(va, pa + 0x100_0000, size, leaf)
        vas += [va, va + size - K4]
    return CacheWorld(vm, tables, other, sorted(slots), vas)


def toggle(world: CacheWorld, ctl: Control, what: str) -> None:
    """Change one input of the walk other than the entries."""
    if what == "pdptes":
        read = world.vm.memory.read_int
        pdpt = world.tables.root
        pdptes = (read(pdpt, 8), read(pdpt + 8, 8), read(pdpt + 16, 8), read(pdpt + 24, 8))
        # The registers keep the values of the last CR3 load: make them differ from RAM.
        ctl.pdptes = None if ctl.pdptes else (pdptes[0], pdptes[1], pdptes[2], pdptes[3] ^ P)
    elif what == "cr3":
        ctl.cr3 = world.other.root if ctl.cr3 == world.tables.root else world.tables.root
    elif what == "cpl":
        ctl.cpl ^= 3
    elif what == "pkru":
        ctl.pkru ^= 3  # AD and WD for key 0
    elif what == "wp":
        ctl.cr0 ^= CR0_WP
    elif what == "nxe":
        ctl.efer ^= EFER_NXE
    else:
        ctl.cr4 ^= {"smap": CR4_SMAP, "smep": CR4_SMEP, "pke": CR4_PKE}[what]


TOGGLES = ["wp", "smap", "smep", "pke", "nxe", "cpl", "pkru", "cr3", "pdptes"]
ACCESSES = [R, W, U, U | W, I, U | I]


def walk_all(world: CacheWorld, walker: Walker, ctl: Control, ac: bool, apply: bool) -> list[object]:
    results = []
    for la in world.vas:
        for access in ACCESSES:
            got, updates = outcome(walker, ctl, la, access if ctl.cpl == 3 else access & ~U, ac)
            results.append(got)
            if apply:
                apply_updates(updates)
    return results


@pytest.mark.parametrize("what", [*TOGGLES, "ac"])
@pytest.mark.parametrize("kind", ["32pse", "pae", "4l", "5l"])
def test_walk_cache_key_holds_each_input(kind: str, what: str) -> None:
    """Warm the cache, change one input, walk again: every result equals a fresh walker's."""
    world = cache_world(kind)
    walker = world.vm.walker
    changed = []
    for cpl, ac in ((0, False), (3, False), (0, True)):
        ctl = control(kind, world.tables.root, cr4=CR4_SMAP | CR4_PKE, cpl=cpl, pkru=1 << 2)
        for _ in range(2):  # change it, then change it back: stale hits can hide in either direction
            walk_all(world, walker, ctl, ac, apply=True)
            walk_all(world, walker, ctl, ac, apply=True)  # entries now hold their post-walk values
            before = walk_all(world, walker, ctl, ac, apply=False)
            if what == "ac":
                ac = not ac
            else:
                toggle(world, ctl, what)
            got = walk_all(world, walker, ctl, ac, apply=False)
            want = walk_all(world, Walker(world.vm.memory, walker.maxphyaddr), ctl, ac, apply=False)
            assert got == want
            changed.append(before != want)
    ia32e = kind in ("4l", "5l")
    relevant = {"pke": ia32e, "pkru": ia32e, "pdptes": kind == "pae", "nxe": kind != "32pse"}
    if relevant.get(what, True):
        assert any(changed), f"changing {what} changed no walk: the test does not exercise it"


step = st.one_of(
    st.tuples(
        st.just("poke"), st.integers(0, 63), st.sampled_from([P, RW, US, A, D, PS, 1 << 12, 1 << 40, NX])
    ),
    st.tuples(st.just("walk"), st.integers(0, 63), st.sampled_from(ACCESSES)),
    st.tuples(st.just("ctl"), st.integers(0, 63), st.sampled_from([*TOGGLES, "ac"])),
)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["32pse", "pae", "4l", "5l"]), steps=st.lists(step, min_size=1, max_size=60))
def test_walk_cache_never_returns_a_stale_result(kind: str, steps: list[tuple[str, int, object]]) -> None:
    """Whatever happens to the tables or the control state, a cached walk equals a fresh one."""
    world = cache_world(kind)
    walker = world.vm.walker
    ctl = control(kind, world.tables.root, cr4=CR4_SMEP)
    ac = False
    for op, n, arg in steps:
        assert isinstance(arg, (int, str))
        if op == "poke":
            assert isinstance(arg, int)
            slot = world.slots[n % len(world.slots)]
            mask = (1 << (8 * world.tables.esize)) - 1
            world.tables.write(slot, world.tables.read(slot) ^ (arg & mask))
        elif op == "ctl":
            assert isinstance(arg, str)
            if arg == "ac":
                ac = not ac
            else:
                toggle(world, ctl, arg)
        else:
            assert isinstance(arg, int)
            la = world.vas[n % len(world.vas)]
            access = arg if ctl.cpl == 3 else arg & ~U
            want, _ = outcome(Walker(world.vm.memory, walker.maxphyaddr), ctl, la, access, ac)
            got, updates = outcome(walker, ctl, la, access, ac)
            assert got == want
            if n & 3:
                apply_updates(updates)


def outcome(walker: Walker, ctl: Control, la: int, access: int, ac: bool) -> tuple[object, Updates]:
    """What a walk yields, comparable across walkers: the GPA and the A/D writes, or the fault."""
    try:
        gpa, updates = walker.walk(ctl, la, access, ac)
    except GuestFault as fault:
        return ("fault", fault.vector, fault.error_code, fault.cr2), []
    except TranslationError as abort:
        return ("abort", str(abort)), []
    return (gpa, [(view.itemsize, index, value) for view, index, value in updates]), updates


# -- cross-check against Unicorn 2.1.4 (QEMU's MMU) -----------------------------------------------
#
# Each case builds a random mapping for one linear address (random flags at every level, sometimes a
# reserved or ignored bit, random WP/NXE/SMEP/SMAP/PKE/PKRU/RFLAGS.AC, CPL 0 or 3 reached by IRET),
# then performs the access on Unicorn and compares: fault or not, the vector and CR2, the physical
# address touched, and the A/D bits of every entry on the path. Unicorn does not expose the #PF error
# code (its interrupt hook gets the vector only, and the exception is not delivered through the IDT),
# so error codes are covered by the rows above. Known divergence, kept out of the sample: QEMU checks
# only bits 63:MAXPHYADDR of a PAE PDPTE, not the SDM's reserved bits 8:5 and 2:1. On a fault QEMU
# may already have set accessed bits on upper levels; we set none, so only successes compare A/D.

UC_RAM = 0x40_0000
GDT, KCODE, UCODE, STACK = 0x1000, 0x2000, 0x3000, 0x4000
SEL_UCODE, SEL_UDATA = 0x1B, 0x23
GDT_ENTRIES = {
    True: [0, 0x0020_9A00_0000_0000, 0x00CF_9200_0000_FFFF, 0x0020_FA00_0000_0000, 0x00CF_F200_0000_FFFF],
    False: [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00CF_FA00_0000_FFFF, 0x00CF_F200_0000_FFFF],
}
MARK = 0x5AC3_9E71
UC_MAXPHYADDR = 40  # QEMU's TCG physical address width


@dataclass(frozen=True)
class UcCase:
    kind: str
    size: int
    pa: int
    leaf: int
    tables: tuple[int, ...]  # flags of the non-leaf entries, root first
    extra: tuple[int, int]  # (path index, bits set there)
    access: int
    cpl: int
    ac: bool
    wp: bool
    nxe: bool
    cr4: int
    pkru: int


def random_case(rng: random.Random, kind: str) -> UcCase:
    lay = layout_of(kind)
    sizes = {"32": [K4], "32pse": [K4, M4], "pae": [K4, M2], "4l": [K4, M2, G1], "5l": [K4, M2, G1]}[kind]
    size = rng.choice(sizes)
    pa = {
        K4: 0x30_0000 + rng.randrange(0x100) * K4,
        M2: M2 * rng.randrange(2, 512),
        G1: G1 * rng.randrange(1, 64),
    }.get(size, M4 * rng.randrange(1, 1024) | (rng.randrange(256) << 32 if rng.random() < 0.5 else 0))
    wide = lay != "32"

    def flags(p: float, rw: float, us: float, nx: float) -> int:
        f = (
            (P if rng.random() < p else 0)
            | (RW if rng.random() < rw else 0)
            | (US if rng.random() < us else 0)
        )
        return f | (NX if wide and rng.random() < nx else 0)

    depth = len(LAYOUT[lay][1]) - {K4: 1, M2: 2, M4: 2, G1: 3}[size]
    tables = tuple(flags(0.97, 0.85, 0.85, 0.1) for _ in range(depth))
    if lay == "pae":
        tables = (P if rng.random() < 0.97 else 0, *tables[1:])
    leaf = flags(0.95, 0.6, 0.6, 0.3)
    if kind in ("4l", "5l") and rng.random() < 0.5:
        leaf |= rng.randrange(16) << 59
    extra = (0, 0)
    if rng.random() < 0.25:
        # Reserved or ignored bits; below the leaf only those that keep the next table in RAM.
        at = rng.randrange(depth + 1)
        if at < depth:
            # PAE PDPTEs: QEMU checks only bits 63:MAXPHYADDR, not 8:5 or 2:1 (the rows above do).
            bits = (
                [PS]
                if not wide
                else [1 << 51, 1 << 40]
                if lay == "pae" and at == 0
                else [1 << 51, 1 << 40, PS]
            )
        else:
            bits = [1 << 51, 1 << 40, 1 << 39, 1 << 29, 1 << 20, 1 << 13, 1 << 12, PS]
            if not wide:
                bits = [1 << 21, 1 << 20, 1 << 13]
        extra = (at, rng.choice(bits))
    cpl = rng.choice([0, 3])
    access = rng.choice([R, W, I]) | (U if cpl == 3 else 0)
    cr4 = (CR4_SMEP if rng.random() < 0.4 else 0) | (CR4_SMAP if rng.random() < 0.4 else 0)
    pkru = 0
    if kind in ("4l", "5l") and rng.random() < 0.4:
        cr4 |= CR4_PKE
        pkru = rng.getrandbits(32) & rng.getrandbits(32)
    return UcCase(
        kind,
        size,
        pa,
        leaf,
        tables,
        extra,
        access,
        cpl,
        rng.random() < 0.3,
        rng.random() < 0.7,
        rng.random() < 0.7,
        cr4,
        pkru,
    )


def build_case(case: UcCase) -> tuple[Vm, Tables, int, list[int], Control]:
    """The guest of a case in a Vm: the system pages identity-mapped, then the mapping under test."""
    vm = Vm(RAM_SIZE, UC_MAXPHYADDR)
    tables = Tables(vm, case.kind)
    for page in (GDT, KCODE, STACK):
        tables.map(page, page, K4, P | RW)
    tables.map(UCODE, UCODE, K4, P | US)
    base = BASE[layout_of(case.kind)]
    path = tables.map(base, case.pa, case.size, case.leaf)
    for slot, f in zip(path, case.tables, strict=False):
        tables.write(slot, (tables.read(slot) & ~(P | RW | US | NX)) | f)
    at, bits = case.extra
    if bits:
        tables.write(path[at], tables.read(path[at]) | bits)
    ctl = control(
        case.kind, tables.root, wp=case.wp, nxe=case.nxe, cr4=case.cr4, cpl=case.cpl, pkru=case.pkru
    )
    return vm, tables, base + OFFSET[case.size], path, ctl


def run_unicorn(
    case: UcCase, vm: Vm, tables: Tables, la: int, ctl: Control, gpa: int | None, path: list[int]
) -> tuple[tuple[object, ...], list[int]]:
    """Perform the case's access on Unicorn: the outcome, and the path's entries afterwards.

    `gpa` is where our walker says the access lands; only that page holds the marker, so an access
    that lands elsewhere reads something else (or faults on unmapped memory).
    """
    uc = pytest.importorskip("unicorn")
    x86 = pytest.importorskip("unicorn.x86_const")
    long_mode = layout_of(case.kind) in ("4l", "5l")
    mu = uc.Uc(uc.UC_ARCH_X86, uc.UC_MODE_64 if long_mode else uc.UC_MODE_32)
    mu.ctl_set_cpu_model(x86.UC_CPU_X86_ICELAKE_SERVER)
    mu.mem_map(0, UC_RAM)
    mu.mem_write(0, vm.memory.read(0, STACK + K4))
    mu.mem_write(POOL, tables.snapshot())
    if gpa is not None:
        if gpa & ~0xFFF >= UC_RAM:
            mu.mem_map(gpa & ~0xFFF, K4)
        if not case.access & W:
            mu.mem_write(gpa, (b"\xb8" if case.access & I else b"") + MARK.to_bytes(4, "little"))
    gdt = b"".join(e.to_bytes(8, "little") for e in GDT_ENTRIES[long_mode])
    mu.mem_write(GDT, gdt)
    mu.reg_write(x86.UC_X86_REG_GDTR, (0, GDT, len(gdt) - 1, 0))
    code = b""
    if case.cr4 & CR4_PKE:
        code += b"\xb8" + case.pkru.to_bytes(4, "little") + bytes.fromhex("31c931d20f01ef")  # wrpkru
    code += b"\xb8" + MARK.to_bytes(4, "little")  # eax: the value a write stores
    op = {R: b"\x8b\x03", W: b"\x89\x03", I: b"\xff\xe3"}[case.access & (W | I)]  # mov, mov, jmp rbx
    until = la + 5 if case.access & I else UCODE + 2 if case.cpl == 3 else KCODE + len(code) + 2
    if case.cpl == 3:
        code += (b"\x48" if long_mode else b"") + b"\xcf"  # iret to CPL 3, at UCODE or at la
        width = 8 if long_mode else 4
        frame = [la if case.access & I else UCODE, SEL_UCODE, 0x2, STACK + 0x400, SEL_UDATA]
        mu.mem_write(STACK + 0x800, b"".join(v.to_bytes(width, "little") for v in frame))
        mu.reg_write(x86.UC_X86_REG_RSP if long_mode else x86.UC_X86_REG_ESP, STACK + 0x800)
        mu.mem_write(UCODE, op)
    else:
        code += op
    mu.mem_write(KCODE, code)
    mu.reg_write(x86.UC_X86_REG_RBX if long_mode else x86.UC_X86_REG_EBX, la)
    mu.reg_write(x86.UC_X86_REG_CR3, ctl.cr3)
    mu.reg_write(x86.UC_X86_REG_CR4, ctl.cr4)
    mu.reg_write(x86.UC_X86_REG_MSR, (0xC000_0080, ctl.efer))
    mu.reg_write(x86.UC_X86_REG_CR0, ctl.cr0 | 0x10)  # ET, as hardware has it
    mu.reg_write(x86.UC_X86_REG_EFLAGS, 0x2 | (0x4_0000 if case.ac else 0))
    events: list[tuple[int, int]] = []

    def on_interrupt(emu: object, vector: int, _: object) -> None:
        events.append((vector, mu.reg_read(x86.UC_X86_REG_CR2)))
        mu.emu_stop()

    mu.hook_add(uc.UC_HOOK_INTR, on_interrupt)
    try:
        mu.emu_start(KCODE, until, count=20)
    except uc.UcError as err:
        return ("unicorn error", str(err)), []
    if events:
        return ("fault", *events[0]), []
    if case.access & W:
        seen = int.from_bytes(mu.mem_read(gpa, 4), "little") if gpa is not None else None
    else:
        seen = mu.reg_read(x86.UC_X86_REG_EAX) & 0xFFFF_FFFF
    entries = [int.from_bytes(mu.mem_read(slot, tables.esize), "little") for slot in path]
    return ("ok", seen == MARK), entries


UC_CASES = 120  # per paging mode


@pytest.mark.parametrize("kind", ["32", "32pse", "pae", "4l", "5l"])
def test_walks_agree_with_unicorn(kind: str) -> None:
    rng = random.Random(f"unicorn-{kind}")
    mismatches = []
    outcomes: set[str] = set()
    for _ in range(UC_CASES):
        case = random_case(rng, kind)
        vm, tables, la, path, ctl = build_case(case)
        gpa: int | None = None
        try:
            gpa, updates = vm.walker.walk(ctl, la, case.access, case.ac)
        except GuestFault as fault:
            ours: tuple[object, ...] = ("fault", fault.vector, fault.cr2)
        else:
            apply_updates(updates)
            ours = ("ok", True)
        theirs, entries = run_unicorn(case, vm, tables, la, ctl, gpa, path)
        outcomes.add(str(ours[0]))
        if ours != theirs or (entries and entries != [tables.read(slot) for slot in path]):
            mismatches.append(
                (case, ours, theirs, [hex(e) for e in entries], [hex(tables.read(s)) for s in path])
            )
    assert not mismatches, "\n".join(map(str, mismatches[:5]))
    assert outcomes == {"ok", "fault"}
