"""The guest's physical memory as the caller describes it, and the interval arithmetic placement needs.

Loaders never touch RAM: they choose addresses in a `MemoryLayout` and check that what an image asks
for lies in it. Every operation here is linear (or n log n) in the number of ranges, which the layout
caps, so placement cost does not depend on what an image claims.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vmmio.images.errors import ImageError, span

Range = tuple[int, int]
"""(base, size) of a guest-physical range, size > 0."""

ADDR_LIMIT = 1 << 64
LIMIT_4G = 1 << 32
PAGE = 0x1000
MAX_RANGES = 64  # per kind: more than any PC layout has, and it keeps every map under the e820 table's 128
MAX_MAP_ENTRIES = 128  # E820_MAX_ENTRIES_ZEROPAGE: the boot_params table; the multiboot map uses the same cap

E820_RAM, E820_RESERVED = 1, 2  # memory-map types, the same numbers in e820 and in the multiboot map


def _normalize(kind: str, ranges: Iterable[Range], merge: bool) -> tuple[Range, ...]:
    """Sorted ranges, validated; adjacent ones merged when `merge` (RAM), overlaps always rejected."""
    items = list(ranges)
    if len(items) > MAX_RANGES:
        raise ImageError(f"memory layout: {len(items)} {kind} ranges, more than {MAX_RANGES}")
    out: list[Range] = []
    for base, size in sorted(items):
        if base < 0 or size <= 0 or base + size > ADDR_LIMIT:
            raise ImageError(
                f"memory layout: {kind} range (base {base:#x}, size {size:#x}) is empty or not in 64 bits"
            )
        if out and base < out[-1][0] + out[-1][1]:
            prev = out[-1]
            raise ImageError(
                f"memory layout: {kind} range {span(base, base + size)} "
                f"overlaps {span(prev[0], prev[0] + prev[1])}"
            )
        if merge and out and base == out[-1][0] + out[-1][1]:
            out[-1] = (out[-1][0], out[-1][1] + size)
        else:
            out.append((base, size))
    return tuple(out)


def subtract(ranges: Iterable[Range], cuts: Iterable[Range]) -> list[Range]:
    """`ranges` minus `cuts` (both sorted, non-overlapping within themselves), as sorted ranges."""
    out: list[Range] = []
    cut_list = sorted(cuts)
    for base, size in ranges:
        start, end = base, base + size
        for cbase, csize in cut_list:
            cend = cbase + csize
            if cend <= start or cbase >= end:
                continue
            if cbase > start:
                out.append((start, cbase - start))
            start = max(start, cend)
            if start >= end:
                break
        if start < end:
            out.append((start, end - start))
    return out


@dataclass(frozen=True)
class MemoryLayout:
    """Guest-physical memory: where RAM is, what the memory maps report as reserved, what the VMM keeps.

    ram       RAM ranges (base, size); adjacent ones are merged.
    reserved  ranges reported as reserved (type 2) in the e820 / multiboot maps, e.g. device windows or
              the PC's 640 KiB-1 MiB hole; inside RAM they are carved out of it and never loaded into.
    in_use    RAM the VMM keeps for its own structures (GDT, page tables, stack): reported as RAM, but
              nothing is placed there, and an image that asks for it is rejected.
    """

    ram: tuple[Range, ...]
    reserved: tuple[Range, ...] = ()
    in_use: tuple[Range, ...] = ()

    def __post_init__(self) -> None:
        ram = _normalize("RAM", self.ram, merge=True)
        if not ram:
            raise ImageError("memory layout: no RAM ranges")
        object.__setattr__(self, "ram", ram)
        object.__setattr__(self, "reserved", _normalize("reserved", self.reserved, merge=False))
        object.__setattr__(self, "in_use", _normalize("in-use", self.in_use, merge=False))

    @classmethod
    def simple(
        cls, ram_size: int, *, reserved: tuple[Range, ...] = (), in_use: tuple[Range, ...] = ()
    ) -> MemoryLayout:
        """RAM from 0 to `ram_size`, as vmmio's `Machine` has it."""
        return cls(((0, ram_size),), reserved, in_use)

    @property
    def usable(self) -> list[Range]:
        """RAM minus the reserved ranges: where images and boot structures may go."""
        return subtract(self.ram, self.reserved)

    def free(self, taken: Iterable[Range] = ()) -> list[Range]:
        """Usable RAM not in use by the VMM nor `taken` by chunks already placed."""
        return subtract(self.usable, sorted([*self.in_use, *taken]))

    def memory_map(self) -> list[tuple[int, int, int]]:
        """(base, size, type) sorted by base: usable RAM as type 1, reserved ranges as type 2."""
        entries = [(b, s, E820_RAM) for b, s in self.usable] + [
            (b, s, E820_RESERVED) for b, s in self.reserved
        ]
        if len(entries) > MAX_MAP_ENTRIES:
            raise ImageError(f"memory map has {len(entries)} entries, more than {MAX_MAP_ENTRIES}")
        return sorted(entries)

    def contiguous_from(self, addr: int) -> int:
        """End of the usable RAM range holding `addr`, or `addr` when it is not in usable RAM."""
        for base, size in self.usable:
            if base <= addr < base + size:
                return base + size
        return addr

    def describe(self) -> str:
        """The RAM ranges as messages print them."""
        return "RAM " + ", ".join(span(b, b + s) for b, s in self.usable)


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def find_free(
    free: Iterable[Range], size: int, align: int, lo: int = 0, hi: int = ADDR_LIMIT, top_down: bool = False
) -> int | None:
    """Lowest (or highest) `align`-aligned address A with [A, A+size) inside one free range and [lo, hi)."""
    best: int | None = None
    for base, rsize in free:
        start, end = max(base, lo), min(base + rsize, hi)
        if top_down:
            addr = (end - size) // align * align
            if addr >= start and (best is None or addr > best):
                best = addr
        else:
            addr = align_up(start, align)
            if addr + size <= end:
                return addr
    return best
