"""Byte lanes: how a byte-register device answers wide and stray accesses."""

from __future__ import annotations

import pytest

from vmmio.devices.bcd import from_bcd, to_bcd
from vmmio.devices.lanes import OPEN_BUS, mask, read_lanes, write_lanes


@pytest.mark.parametrize(
    ("offset", "size", "value"),
    [
        (0, 1, 0x10),
        (0, 2, 0x1110),
        (1, 2, OPEN_BUS << 8 | 0x11),
        (2, 1, OPEN_BUS),
        (-1, 2, 0x10 << 8 | OPEN_BUS),
        (0, 16, 0xFFFF_FFFF_FFFF_1110),
        (0, 0, 0),
    ],
    ids=["byte", "word", "word-past-span", "past-span", "before-span", "capped-at-8-lanes", "empty"],
)
def test_read_lanes_splits_in_address_order_with_open_bus_outside(offset: int, size: int, value: int) -> None:
    registers = [0x10, 0x11]
    result = read_lanes(registers.__getitem__, 2, offset, size)
    assert result == value and result <= mask(size)


def test_write_lanes_drops_lanes_outside_the_span() -> None:
    registers = [0, 0]
    write_lanes(registers.__setitem__, 2, 1, 4, 0x44332211)
    assert registers == [0, 0x11]


@pytest.mark.parametrize(
    ("value", "bcd"), [(0, 0), (9, 0x09), (59, 0x59), (100, 0x100), (9999, 0x9999)], ids=str
)
def test_bcd_round_trip(value: int, bcd: int) -> None:
    assert (to_bcd(value), from_bcd(bcd)) == (bcd, value)


def test_bcd_nibbles_above_nine_count_at_face_value() -> None:
    assert from_bcd(0x9A) == 100 and from_bcd(0xFF) == 165
