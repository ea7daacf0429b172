"""QEMU's pc-testdev, as kvm-unit-tests drives it (QEMU's hw/misc/pc-testdev.c):

- port 0xE0, 4 bytes: a 32-bit latch; an access at byte b of the latch covers bytes b.. of it (so a
  word written at 0xE0 reads back byte by byte at 0xE0 and 0xE1). Port 0xE8 is the same latch again
  (QEMU serves it a byte at a time, which gives the same values): map `latch` at both.
- port 0xE4, 4 bytes: "flush page" (a 32-bit write of a guest-physical address). QEMU revokes and
  restores the host mapping of that page to make KVM drop its cached translations; vmmio keeps no such
  cache, so the write is accepted and ignored.
- ports 0x2000-0x2017: ISA IRQ lines. A byte written at offset n drives IRQ n to (value != 0); QEMU
  takes byte writes only, so wider writes are ignored, and reads return 0. (Not port 0xE8: that is the
  byte-wise latch above.) kvm-unit-tests' `set_irq_line(line, level)` uses this window.
- MMIO 0xFF000000, 64 KiB: IORAM, plain memory for every access size (the emulator tests run MMIO
  instructions on it).
"""

from __future__ import annotations

from vmmio.devices.irq import IrqSink
from vmmio.devices.lanes import read_lanes, write_lanes

LATCH_PORT = 0xE0
LATCH_BYTE_PORT = 0xE8
LATCH_SPAN = 4
FLUSH_PORT = 0xE4
FLUSH_SPAN = 4
IRQ_PORT = 0x2000
IRQ_LINES = 24
IORAM_BASE = 0xFF00_0000
IORAM_SIZE = 0x1_0000


class TestdevLatch:
    """The 32-bit latch at ports 0xE0 and 0xE8; lanes past its 4 bytes read 0 and write nothing."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.data = bytearray(LATCH_SPAN)

    def read(self, offset: int, size: int) -> int:
        return read_lanes(self.data.__getitem__, LATCH_SPAN, offset, size, fill=0)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self.data.__setitem__, LATCH_SPAN, offset, size, value)


class TestdevFlush:
    """Port 0xE4: flush-page requests, counted and otherwise ignored."""

    __test__ = False

    def __init__(self) -> None:
        self.count = 0
        self.last_address: int | None = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:
            self.count += 1
            self.last_address = value & 0xFFFF_FFFF


class TestdevIrq:
    """Ports 0x2000-0x2017: one byte-wide port per ISA IRQ line."""

    __test__ = False

    def __init__(self, sink: IrqSink) -> None:
        self.sink = sink

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 1 and 0 <= offset < IRQ_LINES:
            self.sink.set_irq(offset, bool(value & 0xFF))


class IoRam:
    """Plain memory behind MMIO: reads return what was written, at any size; bytes past the end read 0."""

    def __init__(self, size: int = IORAM_SIZE) -> None:
        self.data = bytearray(size)

    def read(self, offset: int, size: int) -> int:
        return read_lanes(self.data.__getitem__, len(self.data), offset, size, fill=0)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self.data.__setitem__, len(self.data), offset, size, value)


class PcTestdev:
    """All of pc-testdev: `latch` (ports 0xE0 and 0xE8), `flush` (0xE4), `irq` (0x2000, 24 ports) and
    `ioram` (MMIO 0xFF000000, 64 KiB). ISA IRQ writes go to `sink`."""

    def __init__(self, sink: IrqSink) -> None:
        self.latch = TestdevLatch()
        self.flush = TestdevFlush()
        self.irq = TestdevIrq(sink)
        self.ioram = IoRam()
