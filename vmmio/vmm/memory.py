"""Guest-physical address space as the kernel sees it: RAM regions and in-kernel MMIO handlers.

Everything not claimed here belongs to userspace and becomes an MMIO request. Regions are page-granular,
so a request that never crosses a page (the ABI's guarantee) always falls in exactly one kind of region.
"""

from __future__ import annotations

import bisect
import mmap
from dataclasses import dataclass
from typing import Protocol

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1


class MmioHandler(Protocol):
    """An in-kernel device: served in place, never seen by userspace."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class PortHandler(Protocol):
    """An in-kernel port-I/O device."""

    def read(self, port: int, size: int) -> int: ...

    def write(self, port: int, size: int, value: int) -> None: ...


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
    gpa: int
    size: int
    handler: MmioHandler


def _check_range(gpa: int, size: int) -> None:
    if gpa < 0 or size <= 0 or gpa & PAGE_MASK or size & PAGE_MASK or gpa + size > 1 << 52:
        raise ValueError(f"region {gpa:#x}+{size:#x} must be non-empty, page-aligned and below 2^52")


class GuestMemory:
    """RAM regions and in-kernel handler regions, looked up by half-open ranges with bisect."""

    def __init__(self) -> None:
        self.ram: list[RamRegion] = []
        self._bases: list[int] = []
        self._regions: list[RamRegion | HandlerRegion] = []

    def _insert(self, region: RamRegion | HandlerRegion) -> None:
        i = bisect.bisect_right(self._bases, region.gpa)
        prev_end = self._regions[i - 1].gpa + self._regions[i - 1].size if i else 0
        next_base = self._bases[i] if i < len(self._bases) else 1 << 64
        if region.gpa < prev_end or region.gpa + region.size > next_base:
            raise ValueError(f"region at {region.gpa:#x} overlaps an existing region")
        self._bases.insert(i, region.gpa)
        self._regions.insert(i, region)

    def add_ram(self, gpa: int, size: int) -> RamRegion:
        _check_range(gpa, size)
        mem = mmap.mmap(-1, size)
        view = memoryview(mem)
        region = RamRegion(gpa, size, mem, view, view.cast("Q"))
        self._insert(region)
        self.ram.append(region)
        self.ram.sort(key=lambda r: r.gpa)
        return region

    def add_handler(self, gpa: int, size: int, handler: MmioHandler) -> None:
        _check_range(gpa, size)
        self._insert(HandlerRegion(gpa, size, handler))

    def find(self, gpa: int) -> RamRegion | HandlerRegion | None:
        """The region containing `gpa`, or None when userspace owns it."""
        ram = self.ram
        if ram and ram[0].gpa <= gpa < ram[0].end:
            return ram[0]  # the common case: low RAM
        i = bisect.bisect_right(self._bases, gpa) - 1
        if i >= 0:
            region = self._regions[i]
            if gpa < region.gpa + region.size:
                return region
        return None

    def ram_at(self, gpa: int, size: int) -> RamRegion | None:
        """The RAM region holding all of [gpa, gpa+size), if any."""
        region = self.find(gpa)
        if isinstance(region, RamRegion) and gpa + size <= region.end:
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
