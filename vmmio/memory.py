"""Guest-physical address space as the kernel sees it: RAM regions and in-kernel devices.

Everything not claimed here belongs to userspace and becomes an MMIO request. Regions are page-granular,
so a request that never crosses a page (the ABI's guarantee) always falls in exactly one kind of region.
`RangeMap` is the one structure behind every address map (this one, the Vm's ports, userspace's
device maps): half-open ranges found with bisect, overlaps refused when a range is added.
"""

from __future__ import annotations

import bisect
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from vmmio.abi import Device

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1

T = TypeVar("T")


class RangeMap(Generic[T]):
    """Half-open ranges [base, base+size) to values, looked up with bisect over the sorted bases."""

    def __init__(self, what: str = "range") -> None:
        self._what = what
        self._bases: list[int] = []
        self._ends: list[int] = []
        self._values: list[T] = []

    def check_free(self, base: int, size: int) -> int:
        """Where [base, base+size) would go; ValueError naming the range it overlaps, if any."""
        if size <= 0 or base < 0:
            raise ValueError(f"bad {self._what} {base:#x}+{size:#x}: base >= 0 and size > 0 needed")
        i = bisect.bisect_right(self._bases, base)
        for j in (i - 1, i):
            if 0 <= j < len(self._bases) and self._bases[j] < base + size and base < self._ends[j]:
                raise ValueError(
                    f"{self._what} [{base:#x}, {base + size:#x}) overlaps "
                    f"[{self._bases[j]:#x}, {self._ends[j]:#x})"
                )
        return i

    def add(self, base: int, size: int, value: T) -> None:
        """Map [base, base+size) to `value`; refused (ValueError) if it overlaps a mapped range."""
        i = self.check_free(base, size)
        self._bases.insert(i, base)
        self._ends.insert(i, base + size)
        self._values.insert(i, value)

    def lookup(self, addr: int) -> tuple[int, T] | None:
        """(base, value) of the range containing `addr`, or None."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0 and addr < self._ends[i]:
            return self._bases[i], self._values[i]
        return None

    def overlaps(self, base: int, size: int) -> bool:
        """Whether any mapped range meets [base, base+size)."""
        i = bisect.bisect_left(self._ends, base + 1)
        return i < len(self._bases) and self._bases[i] < base + size

    def __iter__(self) -> Iterator[tuple[int, int, T]]:
        """(base, end, value) in address order."""
        return iter(zip(self._bases, self._ends, self._values, strict=True))

    def __len__(self) -> int:
        return len(self._bases)


@dataclass(slots=True)
class RamRegion:
    gpa: int
    size: int
    mem: mmap.mmap  # page-aligned host memory, so backends can map it without copying
    view: memoryview  # byte view for slicing
    qwords: memoryview  # 8-byte view for page-table walks
    end: int = 0  # derived in __post_init__; a plain field because it is read on every access

    def __post_init__(self) -> None:
        self.end = self.gpa + self.size


@dataclass(frozen=True, slots=True)
class HandlerRegion:
    """A range served in the kernel by a device (offsets relative to `gpa`)."""

    gpa: int
    size: int
    handler: Device


Region = RamRegion | HandlerRegion


def _check_range(gpa: int, size: int) -> None:
    if gpa < 0 or size <= 0 or gpa & PAGE_MASK or size & PAGE_MASK or gpa + size > 1 << 52:
        raise ValueError(f"region {gpa:#x}+{size:#x} must be non-empty, page-aligned and below 2^52")


class GuestMemory:
    """RAM regions and in-kernel device regions of one guest."""

    def __init__(self) -> None:
        self.ram: list[RamRegion] = []
        self.regions: RangeMap[Region] = RangeMap("guest-physical region")

    def add_ram(self, gpa: int, size: int, backing: mmap.mmap | None = None) -> RamRegion:
        """RAM at [gpa, gpa+size): fresh anonymous memory, or `backing`, a mapping of exactly `size`
        bytes the caller made (e.g. of a memfd shared with another process, as `vmmio serve` does)."""
        _check_range(gpa, size)
        if backing is not None and len(backing) != size:
            raise ValueError(f"backing mapping is {len(backing):#x} bytes; the region needs {size:#x}")
        self.regions.check_free(gpa, size)  # before allocating the memory
        mem = mmap.mmap(-1, size) if backing is None else backing
        view = memoryview(mem)
        region = RamRegion(gpa, size, mem, view, view.cast("Q"))
        self.regions.add(gpa, size, region)
        self.ram.append(region)
        self.ram.sort(key=lambda r: r.gpa)
        return region

    def add_handler(self, gpa: int, size: int, handler: Device) -> None:
        _check_range(gpa, size)
        self.regions.add(gpa, size, HandlerRegion(gpa, size, handler))

    def find(self, gpa: int) -> Region | None:
        """The region containing `gpa`, or None when userspace owns it."""
        ram = self.ram
        if ram and ram[0].gpa <= gpa < ram[0].end:
            return ram[0]  # the common case: low RAM
        hit = self.regions.lookup(gpa)
        return None if hit is None else hit[1]

    def ram_at(self, gpa: int, size: int) -> RamRegion | None:
        """The RAM region holding all of [gpa, gpa+size), if any."""
        region = self.find(gpa)
        if type(region) is RamRegion and gpa + size <= region.end:
            return region
        return None

    # Convenience accessors for loaders and tests; the emulator uses the regions directly.

    def read(self, gpa: int, size: int) -> bytes:
        region = self.ram_at(gpa, size)
        if region is None:
            raise ValueError(f"{gpa:#x}+{size} is not RAM")
        off = gpa - region.gpa
        return bytes(region.view[off : off + size])

    def write(self, gpa: int, data: bytes) -> None:
        region = self.ram_at(gpa, len(data))
        if region is None:
            raise ValueError(f"{gpa:#x}+{len(data)} is not RAM")
        off = gpa - region.gpa
        region.view[off : off + len(data)] = data

    def read_int(self, gpa: int, size: int) -> int:
        return int.from_bytes(self.read(gpa, size), "little")

    def write_int(self, gpa: int, size: int, value: int) -> None:
        self.write(gpa, value.to_bytes(size, "little"))
