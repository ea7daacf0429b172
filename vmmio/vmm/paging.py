"""Guest page-table walks: linear address to guest-physical address, with the CPU's checks.

The walk reads the guest's own tables from guest RAM and sets accessed/dirty bits only once the whole
access is known to succeed, as the CPU does. Supported: paging off, and 4-level long-mode paging with
1 GiB, 2 MiB and 4 KiB pages.
"""

from __future__ import annotations

from vmmio.backends.base import (
    CR0_PG,
    CR0_WP,
    CR4_LA57,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_NXE,
    Control,
)
from vmmio.vmm.faults import PF, PFEC_I, PFEC_P, PFEC_RSVD, PFEC_U, PFEC_W, EmulationAbort, GuestFault
from vmmio.vmm.memory import GuestMemory, RamRegion

PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_NX = 1 << 63

# Translation outcome reasons for EmulationAbort (values from the ABI's InstEmulReason are assigned by
# the Vcpu; here we only say why in text).
UNSUPPORTED_PAGING = "paging mode not supported"
TABLE_NOT_RAM = "page-table entry is not in RAM"

Updates = list[tuple[RamRegion, int, int]]


class Walker:
    """Translates linear addresses for one guest; `maxphyaddr` decides the reserved address bits."""

    def __init__(self, memory: GuestMemory, maxphyaddr: int = 46, unsupported_reason: int = 0) -> None:
        self.memory = memory
        self.maxphyaddr = maxphyaddr
        self.addr_mask = ((1 << maxphyaddr) - 1) & ~0xFFF
        # Bits 51:MAXPHYADDR of any entry are reserved.
        self.rsvd_high = ((1 << 52) - 1) & ~((1 << maxphyaddr) - 1)
        self.unsupported_reason = unsupported_reason
        # Walk cache: (page, access, AC, CR3, CR0, CR4, EFER) -> (frame, entries read with their values).
        # A hit is used only if every entry still holds the value it had after the walk, so the cache
        # never changes the result: it is the same walk, skipped when its inputs are unchanged.
        self._cache: dict[tuple[int, int, bool, int, int, int, int], tuple[int, list[tuple[memoryview, int, int]]]]
        self._cache = {}
        self.cache_limit = 4096

    def _entry(self, gpa: int) -> tuple[RamRegion, int, int]:
        region = self.memory.ram_at(gpa, 8)
        if region is None:
            raise EmulationAbort(self.unsupported_reason, f"{TABLE_NOT_RAM} ({gpa:#x})")
        index = (gpa - region.gpa) >> 3
        return region, index, region.qwords[index]

    def translate(self, ctl: Control, la: int, access: int, ac_flag: bool) -> int:
        """Guest-physical address of linear `la`, setting A/D bits; see `walk`."""
        gpa, updates = self.walk(ctl, la, access, ac_flag)
        apply_updates(updates)
        return gpa

    def walk(self, ctl: Control, la: int, access: int, ac_flag: bool) -> tuple[int, Updates]:
        """Guest-physical address of linear `la` and the A/D-bit updates the access implies.

        `access` holds PFEC_W/PFEC_U/PFEC_I bits. The updates are returned rather than applied so that
        an access spanning two pages sets no bit when its second page faults.
        Raises GuestFault(#PF) with the CPU's error code and CR2, or EmulationAbort.
        """
        if not ctl.cr0 & CR0_PG:
            return (la if ctl.efer & EFER_LMA else la & 0xFFFF_FFFF), []
        key = (la >> 12, access, ac_flag, ctl.cr3, ctl.cr0, ctl.cr4, ctl.efer)
        hit = self._cache.get(key)
        if hit is not None:
            for qwords, index, value in hit[1]:
                if qwords[index] != value:
                    break
            else:
                return hit[0] | (la & 0xFFF), []
        if not ctl.efer & EFER_LMA or ctl.cr4 & CR4_LA57:
            raise EmulationAbort(self.unsupported_reason, UNSUPPORTED_PAGING)
        nxe = ctl.efer & EFER_NXE
        rsvd = self.rsvd_high | (0 if nxe else PTE_NX)
        fetch_bit = PFEC_I if access & PFEC_I and (nxe or ctl.cr4 & CR4_SMEP) else 0
        base_ec = (access & (PFEC_W | PFEC_U)) | fetch_bit

        table = ctl.cr3 & self.addr_mask
        touched: list[tuple[RamRegion, int, int]] = []
        allowed = PTE_RW | PTE_US
        nx = 0
        shift = 39
        while True:
            region, index, pte = self._entry(table + ((la >> shift) & 0x1FF) * 8)
            if not pte & PTE_P:
                raise GuestFault(PF, base_ec, la)
            level_rsvd = rsvd
            if shift == 39:
                level_rsvd |= PTE_PS
            elif pte & PTE_PS:
                # Large page: address bits below the page size, except PAT (bit 12), are reserved.
                level_rsvd |= ((1 << shift) - 1) & ~0x1FFF
            if pte & level_rsvd:
                raise GuestFault(PF, base_ec | PFEC_P | PFEC_RSVD, la)
            touched.append((region, index, pte))
            allowed &= pte
            nx |= pte & PTE_NX
            if shift == 12 or pte & PTE_PS:
                break
            table = pte & self.addr_mask
            shift -= 9

        user_page = allowed & PTE_US
        if access & PFEC_U:
            ok = user_page and (not access & PFEC_W or allowed & PTE_RW)
        else:
            ok = not access & PFEC_W or allowed & PTE_RW or not ctl.cr0 & CR0_WP
            if user_page:
                if access & PFEC_I:
                    ok = ok and not ctl.cr4 & CR4_SMEP
                elif ctl.cr4 & CR4_SMAP and (ctl.cpl == 3 or not ac_flag):
                    ok = False
        if access & PFEC_I and nx and nxe:
            ok = False
        if not ok:
            raise GuestFault(PF, base_ec | PFEC_P, la)

        # Accessed bits on every level, dirty on the leaf for writes.
        last = len(touched) - 1
        updates: Updates = []
        checks = []
        for n, (region, index, pte) in enumerate(touched):
            new = pte | PTE_A
            if n == last and access & PFEC_W:
                new |= PTE_D
            if new != pte:
                updates.append((region, index, new))
            checks.append((region.qwords, index, new))
        leaf = touched[last][2]
        offset_mask = (1 << shift) - 1
        gpa = ((leaf & self.addr_mask) & ~offset_mask) | (la & offset_mask)
        if len(self._cache) >= self.cache_limit:
            self._cache.clear()
        self._cache[key] = (gpa & ~0xFFF, checks)
        return gpa, updates


def apply_updates(updates: Updates) -> None:
    """Write the A/D bits a successful walk decided on."""
    for region, index, value in updates:
        region.qwords[index] = value
