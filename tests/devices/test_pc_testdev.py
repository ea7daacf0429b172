"""pc-testdev as QEMU has it: the latch at 0xE0/0xE8, flush-page, ISA IRQ ports, IORAM."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.helpers import FUZZ, SIZES, IrqLog, Op, ops, run_ops
from vmmio.devices.lanes import mask
from vmmio.devices.pc_testdev import IORAM_SIZE, IoRam, PcTestdev


@pytest.mark.parametrize(
    ("writes", "read", "value"),
    [
        ([(0, 2, 0x9999)], (0, 1), 0x99),  # emulator.c: outw, then insb
        ([(0, 1, byte) for byte in b"abcdefghijklmnop"], (0, 1), ord("p")),  # rep outsb: the last byte
        ([(0, 4, 0x11223344)], (1, 1), 0x33),
        ([(0, 4, 0x11223344)], (2, 2), 0x1122),
        ([(0, 4, 0x11223344)], (0, 4), 0x11223344),
        ([(0, 4, 0x11223344), (2, 4, 0xAABBCCDD)], (0, 4), 0xCCDD3344),  # lanes past the latch dropped
        ([(0, 4, 0x11223344)], (3, 4), 0x11),  # lanes past the latch read 0
        ([(0, 4, 0x11223344)], (4, 1), 0),
    ],
    ids=[
        "word-then-byte",
        "string-out",
        "byte-1",
        "word-2",
        "dword",
        "overhanging-write",
        "overhanging-read",
        "past",
    ],
)
def test_latch(writes: list[tuple[int, int, int]], read: tuple[int, int], value: int) -> None:
    latch = PcTestdev(IrqLog()).latch
    for offset, size, written in writes:
        latch.write(offset, size, written)
    assert latch.read(*read) == value


@pytest.mark.parametrize(
    ("offset", "size", "value", "events"),
    [
        (14, 1, 1, [(14, True)]),
        (14, 1, 0, [(14, False)]),
        (3, 1, 0x80, [(3, True)]),
        (3, 1, 0x100, [(3, False)]),  # only the byte counts
        (23, 1, 1, [(23, True)]),
        (24, 1, 1, []),
        (14, 2, 1, []),  # QEMU takes byte writes only
    ],
    ids=["raise", "lower", "any-nonzero", "byte-only", "last-line", "past-last", "word"],
)
def test_irq_ports_drive_isa_lines(
    offset: int, size: int, value: int, events: list[tuple[int, bool]]
) -> None:
    sink = IrqLog()
    testdev = PcTestdev(sink)
    testdev.irq.write(offset, size, value)
    assert sink.events == events and testdev.irq.read(offset, 1) == 0


def test_flush_page_is_a_dword_write_that_is_counted_and_ignored() -> None:
    flush = PcTestdev(IrqLog()).flush
    flush.write(0, 4, 0x12345)
    flush.write(0, 1, 0x99)
    assert (flush.count, flush.last_address, flush.read(0, 4)) == (1, 0x12345, 0)


@FUZZ
@given(
    accesses=st.lists(
        st.tuples(st.booleans(), st.integers(0, IORAM_SIZE + 8), SIZES, st.integers(0, (1 << 64) - 1)),
        max_size=60,
    )
)
def test_ioram_is_plain_memory_at_every_size(accesses: list[tuple[bool, int, int, int]]) -> None:
    ioram, model = IoRam(), bytearray(IORAM_SIZE + 16)
    for is_write, offset, size, value in accesses:
        width = min(max(size, 0), 8)
        if is_write:
            ioram.write(offset, size, value)
            model[offset : offset + width] = (value & mask(width)).to_bytes(width, "little")
        else:
            expected = int.from_bytes(model[offset : offset + width][: max(0, IORAM_SIZE - offset)], "little")
            assert ioram.read(offset, size) == expected


@FUZZ
@given(program=ops(4))
def test_hostile_accesses_never_raise(program: list[Op]) -> None:
    testdev = PcTestdev(IrqLog())
    run_ops((testdev.latch, testdev.flush, testdev.irq, testdev.ioram), program)
