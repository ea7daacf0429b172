"""Byte lanes: how a device with 8-bit registers answers a wider or stray access.

The PC's legacy chips (8259, 8254, MC146818, 8042) sit on an 8-bit bus, which splits a 16- or 32-bit port
access into byte accesses at consecutive ports, in address order. A device decodes `span` register bytes
from where it is mapped; a lane past them reads as open bus and its write goes nowhere, as if no device
answered that port. At most 8 lanes are carried (the request limit), so any read fits its `size`.
"""

from __future__ import annotations

from collections.abc import Callable

OPEN_BUS = 0xFF
MAX_LANES = 8


def mask(size: int) -> int:
    """The all-ones value of `size` bytes (0 for a size below 1)."""
    return (1 << (8 * size)) - 1 if size > 0 else 0


def read_lanes(
    read_byte: Callable[[int], int], span: int, offset: int, size: int, fill: int = OPEN_BUS
) -> int:
    """Read `size` byte registers from `offset` on, lowest address in the lowest byte."""
    value = 0
    for lane in range(min(max(size, 0), MAX_LANES)):
        reg = offset + lane
        byte = read_byte(reg) if 0 <= reg < span else fill
        value |= (byte & 0xFF) << (8 * lane)
    return value


def write_lanes(
    write_byte: Callable[[int, int], None], span: int, offset: int, size: int, value: int
) -> None:
    """Write `size` bytes of `value` to the byte registers from `offset` on, in address order."""
    for lane in range(min(max(size, 0), MAX_LANES)):
        reg = offset + lane
        if 0 <= reg < span:
            write_byte(reg, (value >> (8 * lane)) & 0xFF)
