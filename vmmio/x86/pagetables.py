"""Build x86 4-level page tables as data: {physical address: 64-bit entry}.

Loaders and tests use it to give a guest long-mode paging; writing the entries into guest memory is
the caller's business, so this stays free of VM concepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

P, RW, US, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
NX = 1 << 63

PAGE_4K = 1 << 12
PAGE_2M = 1 << 21
PAGE_1G = 1 << 30
_LEVEL_SHIFT = {PAGE_4K: 12, PAGE_2M: 21, PAGE_1G: 30}


@dataclass
class PageTables:
    """4-level tables allocated from a physical pool starting at `pool`, one 4 KiB table at a time."""

    pool: int
    entries: dict[int, int] = field(default_factory=dict)
    _next: int = 0
    _tables: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pool & 0xFFF:
            raise ValueError("page-table pool must be 4 KiB aligned")
        self._next = self.pool
        self.root = self._alloc()

    def _alloc(self) -> int:
        table = self._next
        self._next += PAGE_4K
        return table

    @property
    def end(self) -> int:
        """First physical address after the tables allocated so far."""
        return self._next

    def map(
        self, va: int, pa: int, size: int = PAGE_4K, flags: int = P | RW, table_flags: int = P | RW | US
    ) -> None:
        """Map the page at `va` to `pa` with leaf `flags`; `size` is 4 KiB, 2 MiB or 1 GiB."""
        leaf_shift = _LEVEL_SHIFT[size]
        if va % size or pa % size:
            raise ValueError("va and pa must be aligned to the page size")
        table = self.root
        for shift in (39, 30, 21, 12):
            slot = table + ((va >> shift) & 0x1FF) * 8
            if shift == leaf_shift:
                self.entries[slot] = pa | flags | (PS if size != PAGE_4K else 0)
                return
            key = (table, (va >> shift) & 0x1FF)
            if key not in self._tables:
                self._tables[key] = self._alloc()
                self.entries[slot] = self._tables[key] | table_flags
            table = self._tables[key]

    def entry_address(self, va: int, level: int) -> int:
        """Physical address of the entry for `va` at `level` (4 = PML4 ... 1 = PT)."""
        table = self.root
        for lvl, shift in zip((4, 3, 2, 1), (39, 30, 21, 12), strict=True):
            slot = table + ((va >> shift) & 0x1FF) * 8
            if lvl == level:
                return slot
            table = self._tables[(table, (va >> shift) & 0x1FF)]
        raise ValueError(f"bad level {level}")

    def map_range(self, va: int, pa: int, size: int, flags: int = P | RW) -> None:
        """Map [va, va+size) to [pa, pa+size): 2 MiB pages where both are aligned, 4 KiB elsewhere."""
        end = (va + size + 0xFFF) & ~0xFFF
        va &= ~0xFFF
        pa &= ~0xFFF
        while va < end:
            if va % PAGE_2M == 0 and pa % PAGE_2M == 0 and va + PAGE_2M <= end:
                self.map(va, pa, PAGE_2M, flags)
                step = PAGE_2M
            else:
                self.map(va, pa, PAGE_4K, flags)
                step = PAGE_4K
            va += step
            pa += step

    def identity(self, start: int, end: int, flags: int = P | RW) -> None:
        """Identity-map [start, end) with 2 MiB pages where aligned, 4 KiB pages elsewhere."""
        self.map_range(start, start, end - start, flags)
