"""The device protocol and the map from addresses (GPAs or ports) to devices."""

from __future__ import annotations

from vmmio.abi import Device
from vmmio.memory import RangeMap


class AddressMap(RangeMap[Device]):
    """Devices by half-open address range; a range that overlaps another is refused when added."""

    def __init__(self, what: str = "device range") -> None:
        super().__init__(what)

    def find(self, addr: int) -> tuple[Device, int] | None:
        """The device at `addr` and the offset into it, or None."""
        hit = self.lookup(addr)
        if hit is None:
            return None
        base, device = hit
        return device, addr - base


__all__ = ["AddressMap", "Device"]
