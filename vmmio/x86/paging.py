"""Guest page-table walks: linear address to guest-physical address, with the CPU's checks.

The walk reads the guest's own tables from guest RAM and sets accessed/dirty bits only once the whole
access is known to succeed, as the CPU does. Supported: paging off, 32-bit paging (4 KiB pages, 4 MiB
pages with CR4.PSE and PSE-36 address bits), PAE paging (4 KiB and 2 MiB pages, PDPTEs from the
VMCS copy in `Control.pdptes` or read at CR3), and 4-level and 5-level paging (4 KiB, 2 MiB, 1 GiB).

Each paging mode is a `_Format` built once per walker: the levels' shifts, index masks and reserved
bits. The walk is one loop over it; the permission decision is a table look-up built at import time
from the SDM's rules (U/S, R/W with CR0.WP, NX, SMEP, SMAP), so no mode is a chain of ifs.
"""

from __future__ import annotations

from typing import Protocol

from vmmio.x86.faults import PF, PFEC_I, PFEC_P, PFEC_PK, PFEC_RSVD, PFEC_U, PFEC_W, GuestFault
from vmmio.x86.state import CR0_PG, CR4_LA57, CR4_PAE, CR4_PKE, CR4_PSE, EFER_LMA, EFER_NXE, Control


class RamSpan(Protocol):
    """Guest RAM holding a paging-structure entry: its GPA range and views in bytes and qwords."""

    @property
    def gpa(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def view(self) -> memoryview: ...
    @property
    def qwords(self) -> memoryview: ...


class TableMemory(Protocol):
    """The one thing a walk needs from guest memory: the RAM holding `size` bytes at `gpa`, if any."""

    def ram_at(self, gpa: int, size: int) -> RamSpan | None: ...


class TranslationError(Exception):
    """A walk needed a paging-structure entry that is not in guest RAM: no CPU outcome to model."""

    def __init__(self, gpa: int) -> None:
        super().__init__(f"page-table entry at {gpa:#x} is not in RAM")
        self.gpa = gpa


PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_NX = 1 << 63

# A/D-bit writes a successful walk implies: (entry view, index in it, new entry value).
Updates = list[tuple[memoryview, int, int]]
# The entries a walk read, with their values after its updates: same shape.
Checks = list[tuple[memoryview, int, int]]
_NO_CHECKS: Checks = []
_NO_VIEW = memoryview(b"")

# -- permissions ----------------------------------------------------------------------------------
#
# Index bits of the permission table: what the access is (the PFEC_W/PFEC_U/PFEC_I bits in place) and
# what the page grants (combined over all levels), plus whether an explicit supervisor access runs
# with RFLAGS.AC=1 (SMAP then allows user pages). The context (CR0.WP, CR4.SMEP, CR4.SMAP) selects one
# 128-entry block.
_PG_RW = 1  # writable at every level
_PG_US = 8  # user-mode address: U/S at every level
_PG_NX = 32  # execute-disable at some level, with EFER.NXE
_AC_OK = 64  # explicit supervisor access with RFLAGS.AC=1


def _permitted(idx: int, wp: bool, smep: bool, smap: bool) -> bool:
    """The SDM's access-rights rules (4.6) for one table index; evaluated once per index at import."""
    write, user, fetch = idx & PFEC_W, idx & PFEC_U, idx & PFEC_I
    if fetch and idx & _PG_NX:
        return False
    if user:
        return bool(idx & _PG_US) and (not write or bool(idx & _PG_RW))
    if write and not idx & _PG_RW and wp:
        return False
    if idx & _PG_US:
        if fetch:
            return not smep
        if smap and not idx & _AC_OK:
            return False
    return True


_PERMITTED = bytes(
    _permitted(idx, bool(ctx & 1), bool(ctx & 2), bool(ctx & 4)) for ctx in range(8) for idx in range(128)
)


# -- paging formats -------------------------------------------------------------------------------

_ADDR_32 = 0xFFFF_F000
_PAGE_4M = 0xFFC0_0000

# Mode selector: the control bits that choose the format (EFER.LMA, EFER.NXE, CR4.PSE/PAE/LA57).
_SELECT_EFER = EFER_LMA | EFER_NXE
_SELECT_CR4 = CR4_PSE | CR4_PAE | CR4_LA57


class _Format:
    """One paging mode's structure, precomputed for a MAXPHYADDR and EFER.NXE.

    `levels` runs from the root down: (shift, index mask, reserved bits, extra reserved bits when PS
    makes the entry a leaf, or -1 where PS is not a page size bit at that level).
    """

    __slots__ = (
        "cr3_mask",
        "entry_shift",
        "fetch_reported",
        "levels",
        "nx",
        "pdpte_rsvd",
        "pk",
        "pse36",
    )

    def __init__(
        self,
        levels: tuple[tuple[int, int, int, int], ...],
        entry_shift: int,
        cr3_mask: int,
        nx: int = 0,
        pdpte_rsvd: int = -1,
        pk: bool = False,
        pse36: bool = False,
    ) -> None:
        self.levels = levels
        self.entry_shift = entry_shift  # log2 of the entry size: 2 (32-bit paging) or 3
        self.cr3_mask = cr3_mask
        self.nx = nx  # PTE_NX when the XD bit is honoured (PAE/IA-32e with EFER.NXE), else 0
        # I/D is reported in the error code with NX in force (SMEP adds it in any mode, see walk).
        self.fetch_reported = bool(nx)
        self.pdpte_rsvd = pdpte_rsvd  # PAE: reserved bits of a present PDPTE; -1: no PDPTE registers
        self.pk = pk  # protection keys apply (IA-32e paging)
        self.pse36 = pse36  # 32-bit paging with 4 MiB pages: bits 20:13 give physical bits 39:32


def _build_format(maxphyaddr: int, sel: int) -> _Format:
    """The format for mode selector `sel` (see _SELECT_*), from the SDM's tables 4-4 to 4-20."""
    phys = (1 << maxphyaddr) - 1
    addr = phys & ~0xFFF
    nxe = bool(sel & EFER_NXE)
    if sel & EFER_LMA:
        # 4/5-level: bits 51:MAXPHYADDR reserved; bit 63 reserved without NXE; PS reserved in
        # PML5E/PML4E; large pages reserve their address bits below the page size except PAT (12).
        rsvd = ((1 << 52) - 1) & ~phys | (0 if nxe else PTE_NX)
        top = rsvd | PTE_PS
        large_1g = ((1 << 30) - 1) & ~0x1FFF
        large_2m = ((1 << 21) - 1) & ~0x1FFF
        levels = [(39, 0x1FF, top, -1), (30, 0x1FF, rsvd, large_1g), (21, 0x1FF, rsvd, large_2m)]
        levels.append((12, 0x1FF, rsvd, -1))
        if sel & CR4_LA57:
            levels.insert(0, (48, 0x1FF, top, -1))
        return _Format(tuple(levels), 3, addr, PTE_NX if nxe else 0, pk=True)
    if sel & CR4_PAE:
        # PAE: bits 62:MAXPHYADDR reserved in PDEs and PTEs, 63 too without NXE. PDPTEs reserve
        # 63:MAXPHYADDR, 8:5 and 2:1 whatever NXE says; CR3 holds a 32-byte aligned 32-bit address.
        rsvd = ((1 << 63) - 1) & ~phys | (0 if nxe else PTE_NX)
        pdpte_rsvd = ((1 << 64) - 1) & ~phys | 0x1E6
        levels = [(21, 0x1FF, rsvd, ((1 << 21) - 1) & ~0x1FFF), (12, 0x1FF, rsvd, -1)]
        return _Format(tuple(levels), 3, 0xFFFF_FFE0, PTE_NX if nxe else 0, pdpte_rsvd)
    # 32-bit paging: no reserved bits except in 4 MiB PDEs (CR4.PSE), where bits 20:13 hold physical
    # address bits 39:32 (PSE-36, limited by MAXPHYADDR) and the rest up to bit 21 are reserved.
    if sel & CR4_PSE:
        high = min(maxphyaddr, 40) - 32
        large = ((1 << 22) - 1) & ~((1 << (13 + high)) - 1)
        return _Format(((22, 0x3FF, 0, large), (12, 0x3FF, 0, -1)), 2, _ADDR_32, pse36=True)
    return _Format(((22, 0x3FF, 0, -1), (12, 0x3FF, 0, -1)), 2, _ADDR_32)


CacheKey = tuple[int, int, bool, int, int, int, int, int, int, tuple[int, int, int, int] | None]


class Walker:
    """Translates linear addresses for one guest; `maxphyaddr` decides the reserved address bits."""

    def __init__(self, memory: TableMemory, maxphyaddr: int = 46) -> None:
        self.memory = memory
        self.maxphyaddr = maxphyaddr
        self.addr_mask = ((1 << maxphyaddr) - 1) & ~0xFFF
        self._format_cache: dict[int, _Format] = {}
        # 32-bit views of RAM regions for 32-bit paging, by region base (regions never overlap).
        self._dwords: dict[int, memoryview] = {}
        # Walk cache: everything the result depends on besides the entries read -> (frame, the entries
        # read with their post-walk values). A hit is used only if every entry still holds that value,
        # so the cache never changes the result: it is the same walk, skipped when its inputs are
        # unchanged. Only successful walks are cached.
        self._cache: dict[CacheKey, tuple[int, Checks]] = {}
        self.cache_limit = 4096

    def _format(self, sel: int) -> _Format:
        fmt = self._format_cache.get(sel)
        if fmt is None:
            fmt = self._format_cache[sel] = _build_format(self.maxphyaddr, sel)
        return fmt

    def _table_view(self, gpa: int, entry_shift: int) -> tuple[memoryview, int, int]:
        """A view of the RAM region holding the entry at `gpa`, in entries, with the region's bounds.

        Entries are naturally aligned and regions page-aligned, so an entry starting in a region lies
        wholly in it; the walk reuses the view while the next table stays within the bounds.
        """
        region = self.memory.ram_at(gpa, 1 << entry_shift)
        if region is None:
            raise TranslationError(gpa)
        if entry_shift == 3:
            return region.qwords, region.gpa, region.end
        view = self._dwords.get(region.gpa)
        if view is None:
            view = self._dwords[region.gpa] = region.view.cast("I")
        return view, region.gpa, region.end

    def translate(self, ctl: Control, la: int, access: int, ac_flag: bool) -> int:
        """Guest-physical address of linear `la`, setting A/D bits; see `walk`."""
        gpa, updates = self.walk(ctl, la, access, ac_flag)
        apply_updates(updates)
        return gpa

    def walk(self, ctl: Control, la: int, access: int, ac_flag: bool) -> tuple[int, Updates]:
        """Guest-physical address of linear `la` and the A/D-bit updates the access implies.

        `access` holds PFEC_W/PFEC_U/PFEC_I bits (PFEC_U clear at CPL 3 means an implicit supervisor
        access). `ac_flag` is RFLAGS.AC of an explicit access (False for implicit ones): it lifts SMAP
        for supervisor data accesses at CPL 0-2. The updates are returned rather than applied so that
        an access spanning two pages sets no bit when its second page faults.
        Raises GuestFault(#PF) with the CPU's error code and CR2, or TranslationError.
        """
        gpa, updates, _ = self.walk_checked(ctl, la, access, ac_flag)
        return gpa, updates

    def walk_checked(self, ctl: Control, la: int, access: int, ac_flag: bool) -> tuple[int, Updates, Checks]:
        """`walk`, with the paging-structure entries the result depends on: (view, index, value) each,
        the value as it is once the updates are applied. While every entry still holds its value (and
        the control state is the same), a new walk gives the same page frame and no updates: the
        condition a translation cache (`vmmio.vmm.tlb`) checks instead of walking. Paging off: none.
        """
        cr0 = ctl.cr0
        efer = ctl.efer
        if not cr0 & CR0_PG:
            return (la if efer & EFER_LMA else la & 0xFFFF_FFFF), [], _NO_CHECKS
        cr4 = ctl.cr4
        cpl = ctl.cpl
        key = (la >> 12, access, ac_flag, cpl, ctl.cr3, cr0, cr4, efer, ctl.pkru, ctl.pdptes)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            for view, index, value in hit[1]:
                if view[index] != value:
                    break
            else:
                return hit[0] | (la & 0xFFF), [], hit[1]

        fmt = self._format_cache.get((efer & _SELECT_EFER) | (cr4 & _SELECT_CR4))
        if fmt is None:
            fmt = self._format((efer & _SELECT_EFER) | (cr4 & _SELECT_CR4))
        # I/D is reported when NX is in force (PAE/IA-32e with NXE) or with CR4.SMEP (SDM 4.7).
        fetch_bit = access & PFEC_I if fmt.fetch_reported or (cr4 >> 20) & 1 else 0
        ec = (access & (PFEC_W | PFEC_U)) | fetch_bit
        addr_mask = self.addr_mask
        entry_shift = fmt.entry_shift
        checks: Checks = []

        table = ctl.cr3 & fmt.cr3_mask
        if fmt.pdpte_rsvd >= 0:
            table = self._pdpte(ctl, la, table, fmt.pdpte_rsvd, ec, checks)

        touched: list[tuple[memoryview, int, int]] = []
        allowed = PTE_RW | PTE_US
        nx = 0
        shift = 12
        pte = 0
        view = _NO_VIEW
        vbase = vend = 0
        for shift, index_mask, rsvd, large in fmt.levels:
            gpa = table + (((la >> shift) & index_mask) << entry_shift)
            if not vbase <= gpa < vend:
                view, vbase, vend = self._table_view(gpa, entry_shift)
            index = (gpa - vbase) >> entry_shift
            pte = view[index]
            if not pte & PTE_P:
                raise GuestFault(PF, ec, la)
            leaf = large >= 0 and pte & PTE_PS
            if pte & (rsvd | large if leaf else rsvd):
                raise GuestFault(PF, ec | PFEC_P | PFEC_RSVD, la)
            touched.append((view, index, pte))
            allowed &= pte
            nx |= pte
            if leaf:
                break
            table = pte & addr_mask

        idx = (
            (access & (PFEC_W | PFEC_U | PFEC_I))
            | ((allowed & PTE_RW) >> 1)
            | ((allowed & PTE_US) << 1)
            | (_PG_NX if nx & fmt.nx else 0)
            | (_AC_OK if ac_flag and cpl < 3 else 0)
        )
        ok = _PERMITTED[(((cr0 >> 16) & 1) | ((cr4 >> 19) & 6)) << 7 | idx]
        if fmt.pk and allowed & PTE_US and cr4 & CR4_PKE and not access & PFEC_I:
            # Protection keys (SDM 4.6.2): AD denies data access to the user-mode address, WD denies
            # writes by user mode and, with CR0.WP, by supervisor mode. Reported whatever else failed.
            rights = (ctl.pkru >> (((pte >> 59) & 0xF) << 1)) & 3
            if rights & 1 or (rights & 2 and access & PFEC_W and (access & PFEC_U or (cr0 >> 16) & 1)):
                raise GuestFault(PF, ec | PFEC_P | PFEC_PK, la)
        if not ok:
            raise GuestFault(PF, ec | PFEC_P, la)

        # Accessed bits on every level, dirty on the leaf for writes.
        last = len(touched) - 1
        updates: Updates = []
        for n, (view, index, old) in enumerate(touched):
            new = old | PTE_A
            if n == last and access & PFEC_W:
                new |= PTE_D
            if new != old:
                updates.append((view, index, new))
            checks.append((view, index, new))
        if fmt.pse36 and shift == 22:
            frame = (pte & _PAGE_4M) | ((pte >> 13) & 0xFF) << 32
        else:
            frame = pte & addr_mask & ~((1 << shift) - 1)
        gpa = frame | (la & ((1 << shift) - 1))
        if len(cache) >= self.cache_limit:
            cache.clear()
        cache[key] = (gpa & ~0xFFF, checks)
        return gpa, updates, checks

    def _pdpte(self, ctl: Control, la: int, pdpt: int, rsvd: int, ec: int, checks: Checks) -> int:
        """PAE: the page directory for `la` from its PDPTE (the VMCS copy, else read at CR3).

        Reserved bits in a present PDPTE fault as #PF with RSVD: hardware that caches PDPTEs refuses
        them when CR3 is loaded, so they only reach here from guest RAM read at walk time.
        """
        n = (la >> 30) & 3
        if ctl.pdptes is not None:
            pdpte = ctl.pdptes[n]
        else:
            view, base, _ = self._table_view(pdpt + n * 8, 3)
            index = (pdpt + n * 8 - base) >> 3
            pdpte = view[index]
            checks.append((view, index, pdpte))
        if not pdpte & PTE_P:
            raise GuestFault(PF, ec, la)
        if pdpte & rsvd:
            raise GuestFault(PF, ec | PFEC_P | PFEC_RSVD, la)
        return pdpte & self.addr_mask


def apply_updates(updates: Updates) -> None:
    """Write the A/D bits a successful walk decided on."""
    for view, index, value in updates:
        view[index] = value
