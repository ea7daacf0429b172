"""The device interface and the map from addresses (GPAs or ports) to devices."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol


class Device(Protocol):
    """What a device model implements; offsets are relative to where it is mapped."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class AddressMap:
    """Half-open ranges [base, base+size) to devices, found with bisect over the sorted bases."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._ends: list[int] = []
        self._devices: list[Device] = []

    def add(self, base: int, size: int, device: Device) -> None:
        if size <= 0 or base < 0:
            raise ValueError(f"bad range {base:#x}+{size:#x}")
        i = bisect.bisect_right(self._bases, base)
        if (i and self._ends[i - 1] > base) or (i < len(self._bases) and self._bases[i] < base + size):
            raise ValueError(f"range {base:#x}+{size:#x} overlaps another device")
        self._bases.insert(i, base)
        self._ends.insert(i, base + size)
        self._devices.insert(i, device)

    def find(self, addr: int) -> tuple[Device, int] | None:
        """The device at `addr` and the offset into it, or None."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0 and addr < self._ends[i]:
            return self._devices[i], addr - self._bases[i]
        return None

    def __iter__(self) -> Iterator[tuple[int, int, Device]]:
        """(base, end, device) in address order."""
        return iter(zip(self._bases, self._ends, self._devices, strict=True))
