"""Motorola MC146818 real-time clock and CMOS RAM, behind ports 0x70 (index) and 0x71 (data).

The time is a wall-clock offset applied to the `Clock`: the registers are computed from it when read,
in BCD or binary (register B's DM bit) and 12- or 24-hour form. While B's SET bit is set the time
registers hold still and take writes; clearing SET restarts the clock from them. A time register written
without SET moves the time at once. Flags in register C are derived from the clock too: PF at each
periodic-rate tick (register A's rate select), UF at each second; IRQF and IRQ8 follow the enables in B
and stay up until C is read, as the chip's level output does.

Left out: the alarm interrupt (the alarm registers are plain storage, AF never sets), the divider chain
(register A's DV bits are stored; time runs whatever they say), daylight saving, the CMOS checksum at
0x2E-0x2F (the machine may fill it), and the upper 128 bytes of extended CMOS (ports 0x72-0x73).
Values the guest writes out of range (hour 25, BCD 0x9A) are clamped when the time is set. The calendar
wraps after year 9600 back to year 1, so no guest input can carry the clock out of its range.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from vmmio.devices.bcd import from_bcd, to_bcd
from vmmio.devices.clock import NS_PER_S, Clock, ns_at_tick, ticks_at
from vmmio.devices.irq import NO_IRQ, IrqLine
from vmmio.devices.lanes import OPEN_BUS, read_lanes, write_lanes

RTC_PORT = 0x70
RTC_SPAN = 2
INDEX, DATA = 0, 1
INDEX_NMI_MASK = 0x80
INDEX_REGISTER = 0x7F
CMOS_SIZE = 128

SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM, WEEKDAY, DAY, MONTH, YEAR = range(10)
REG_A, REG_B, REG_C, REG_D = range(0x0A, 0x0E)
CENTURY = 0x32
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY)
HOURS_PM = 0x80  # 12-hour mode

A_UIP = 0x80  # update in progress (read-only)
A_WRITABLE = 0x7F  # divider and rate select
A_RATE = 0x0F
B_SET = 0x80
B_PIE = 0x40
B_AIE = 0x20
B_UIE = 0x10
B_SQWE = 0x08
B_BINARY = 0x04  # DM: binary rather than BCD
B_24H = 0x02
B_DSE = 0x01
C_IRQF = 0x80
C_PF = 0x40  # the same bit as its enable in B
C_AF = 0x20
C_UF = 0x10
C_FLAGS = C_PF | C_AF | C_UF
D_VRT = 0x80  # valid RAM and time: the battery is good

RESET_A = 0x26  # 32.768 kHz divider, 1024 Hz rate: what a PC BIOS programs
RESET_B = B_24H
RTC_HZ = 32768
UIP_NS = 244_000  # UIP rises this long before each update
# Periodic interrupt period per rate select, in 32.768 kHz ticks (rates 1 and 2 repeat 8 and 9).
PERIODIC_TICKS = (0, 1 << 7, 1 << 8, *(1 << (rate - 1) for rate in range(3, 16)))

# Memory sizes a PC BIOS leaves in CMOS, little-endian.
BASE_MEMORY = 0x15  # KiB below 1 MiB, 2 bytes
EXTENDED_MEMORY = 0x17  # KiB from 1 MiB, 2 bytes, at most 65535
EXTENDED_MEMORY_COPY = 0x30
MEMORY_ABOVE_16M = 0x34  # 64 KiB units from 16 MiB to the end of RAM below 4 GiB, 2 bytes
MEMORY_ABOVE_4G = 0x5B  # 64 KiB units above 4 GiB, 3 bytes
BASE_MEMORY_KIB = 640
LOW_RAM_LIMIT = 0xE000_0000  # where RAM below 4 GiB stops for the PCI hole (QEMU's i440fx)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)
_CALENDAR_DAYS = 24 * 146_097  # 9600 years: whole 400-year Gregorian cycles
_MAX_YEAR = 9600


def _calendar_time(wall_ns: int) -> datetime:
    days, seconds = divmod((wall_ns - _to_ns(_YEAR_1)) // NS_PER_S, 86400)
    return _YEAR_1 + timedelta(days=days % _CALENDAR_DAYS, seconds=seconds)


def _to_ns(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def _encode(when: datetime, b: int) -> dict[int, int]:
    """The time registers for `when` in register B's format."""
    number = (lambda value: value) if b & B_BINARY else to_bcd
    hour = number(when.hour)
    if not b & B_24H:
        hour = number(when.hour % 12 or 12) | HOURS_PM * (when.hour >= 12)
    return {
        SECONDS: number(when.second),
        MINUTES: number(when.minute),
        HOURS: hour,
        WEEKDAY: number(when.isoweekday() % 7 + 1),  # Sunday is 1
        DAY: number(when.day),
        MONTH: number(when.month),
        YEAR: number(when.year % 100),
        CENTURY: number(when.year // 100),
    }


def _decode(registers: dict[int, int], b: int) -> datetime:
    """The time the registers name in register B's format, each field clamped into range."""
    number = (lambda value: value) if b & B_BINARY else from_bcd

    def field(reg: int, low: int, high: int) -> int:
        return min(max(number(registers[reg]), low), high)

    hour = registers[HOURS]
    hour = number(hour & ~HOURS_PM) % 12 + 12 * bool(hour & HOURS_PM) if not b & B_24H else number(hour)
    year = min(max(field(CENTURY, 0, 99) * 100 + field(YEAR, 0, 99), 1), _MAX_YEAR)
    month = field(MONTH, 1, 12)
    return datetime(
        year,
        month,
        field(DAY, 1, calendar.monthrange(year, month)[1]),
        min(hour, 23),
        field(MINUTES, 0, 59),
        field(SECONDS, 0, 59),
        tzinfo=UTC,
    )


@dataclass(frozen=True)
class RtcState:
    index: int
    nmi_masked: bool
    a: int
    b: int
    c: int
    time: datetime
    frozen: bool  # SET holds the time registers
    cmos: bytes


class Rtc:
    """The RTC and its 128 bytes of CMOS. `start` is the time at clock 0's reading now (default: the
    host's wall clock); IRQ8 goes to `irq`."""

    def __init__(self, clock: Clock, irq: IrqLine = NO_IRQ, start: datetime | None = None) -> None:
        self.clock = clock
        self.irq = irq
        self.cmos = bytearray(CMOS_SIZE)
        self.index = 0
        self.nmi_masked = False
        self.a, self.b, self.c = RESET_A, RESET_B, 0
        self._frozen: dict[int, int] | None = None  # time registers while SET holds them
        self._seen_ns = clock.now_ns()  # flags are folded in up to here
        self._wall_offset_ns = _to_ns(start or datetime.now(UTC)) - self._seen_ns
        self._irq_level = False
        self._readers: dict[int, Callable[[], int]] = {
            REG_A: lambda: self.a | A_UIP * self._in_update(),
            REG_B: lambda: self.b,
            REG_C: self._read_c,
            REG_D: lambda: D_VRT,
        }
        self._writers: dict[int, Callable[[int], None]] = {
            REG_A: self._write_a,
            REG_B: self._write_b,
            REG_C: lambda value: None,
            REG_D: lambda value: None,
        }
        for reg in TIME_REGISTERS:
            self._readers[reg] = partial(self._read_time, reg)
            self._writers[reg] = partial(self._write_time, reg)

    def read(self, offset: int, size: int) -> int:
        return read_lanes(self._read_reg, RTC_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self._write_reg, RTC_SPAN, offset, size, value)

    def _read_reg(self, reg: int) -> int:
        if reg == INDEX:
            return OPEN_BUS  # the index port is write-only
        self._catch_up()
        reader = self._readers.get(self.index)
        return reader() if reader is not None else self.cmos[self.index]

    def _write_reg(self, reg: int, value: int) -> None:
        if reg == INDEX:
            self.index, self.nmi_masked = value & INDEX_REGISTER, bool(value & INDEX_NMI_MASK)
            return
        self._catch_up()
        writer = self._writers.get(self.index)
        if writer is not None:
            writer(value)
        else:
            self.cmos[self.index] = value

    def now(self) -> datetime:
        """The time the clock registers show (while SET holds them, what they hold)."""
        if self._frozen is not None:
            return _decode(self._frozen, self.b)
        return _calendar_time(self.clock.now_ns() + self._wall_offset_ns)

    def _set_time(self, when: datetime, sub_second_ns: int = 0) -> None:
        self._wall_offset_ns = _to_ns(when) + sub_second_ns - self.clock.now_ns()

    def _registers(self) -> dict[int, int]:
        return dict(self._frozen) if self._frozen is not None else _encode(self.now(), self.b)

    def _read_time(self, reg: int) -> int:
        return self._registers()[reg]

    def _write_time(self, reg: int, value: int) -> None:
        if self._frozen is not None:
            self._frozen[reg] = value
            return
        registers = self._registers()
        registers[reg] = value
        wall_ns = self.clock.now_ns() + self._wall_offset_ns
        self._set_time(_decode(registers, self.b), wall_ns % NS_PER_S)

    def _in_update(self) -> bool:
        wall_ns = self.clock.now_ns() + self._wall_offset_ns
        return self._frozen is None and wall_ns % NS_PER_S >= NS_PER_S - UIP_NS

    def _write_a(self, value: int) -> None:
        self.a = value & A_WRITABLE

    def _write_b(self, value: int) -> None:
        if value & B_SET:
            value &= ~B_UIE  # SET clears UIE
        if self._frozen is not None and not value & B_SET:
            self._set_time(_decode(self._frozen, self.b))  # read in the format they were written in
            self._frozen = None
        self.b = value
        if value & B_SET and self._frozen is None:
            self._frozen = _encode(self.now(), self.b)
        self._set_flags(self.c)  # an enable bit may have changed IRQF

    def _read_c(self) -> int:
        value = self.c
        self._set_flags(0)
        return value

    def _set_flags(self, flags: int) -> None:
        pending = flags & self.b & C_FLAGS
        self.c = (flags & C_FLAGS) | C_IRQF * bool(pending)
        if bool(pending) != self._irq_level:
            self._irq_level = bool(pending)
            self.irq.set(self._irq_level)

    def _period(self) -> int:
        return PERIODIC_TICKS[self.a & A_RATE]

    def _catch_up(self) -> None:
        """Fold the periodic and update events since the last look into register C."""
        now, seen = self.clock.now_ns(), self._seen_ns
        if now <= seen:
            return
        self._seen_ns = now
        flags, period = self.c, self._period()
        if period and ticks_at(now, RTC_HZ) // period > ticks_at(seen, RTC_HZ) // period:
            flags |= C_PF
        offset = self._wall_offset_ns
        if self._frozen is None and (now + offset) // NS_PER_S > (seen + offset) // NS_PER_S:
            flags |= C_UF
        self._set_flags(flags)

    def next_deadline_ns(self) -> int | None:
        """When the next enabled flag that is not already set will set, raising IRQ8."""
        deadlines = []
        period = self._period()
        if period and self.b & B_PIE and not self.c & C_PF:
            deadlines.append(ns_at_tick((ticks_at(self._seen_ns, RTC_HZ) // period + 1) * period, RTC_HZ))
        if self._frozen is None and self.b & B_UIE and not self.c & C_UF:
            wall_ns = self._seen_ns + self._wall_offset_ns
            deadlines.append((wall_ns // NS_PER_S + 1) * NS_PER_S - self._wall_offset_ns)
        return min(deadlines, default=None)

    def update(self) -> None:
        self._catch_up()

    def set_memory_size(self, ram_bytes: int, low_ram_bytes: int | None = None) -> None:
        """Fill the memory-size bytes as a PC BIOS does. `low_ram_bytes` is the part below 4 GiB
        (default: up to the PCI hole at 3.5 GiB); the rest is above 4 GiB."""
        low = min(ram_bytes, LOW_RAM_LIMIT) if low_ram_bytes is None else low_ram_bytes
        if not 0 <= low <= ram_bytes:
            raise ValueError(f"low RAM {low:#x} does not fit RAM size {ram_bytes:#x}")
        extended_kib = min(max(low // 1024 - 1024, 0), 0xFFFF)
        for reg, value, size in (
            (BASE_MEMORY, BASE_MEMORY_KIB, 2),
            (EXTENDED_MEMORY, extended_kib, 2),
            (EXTENDED_MEMORY_COPY, extended_kib, 2),
            (MEMORY_ABOVE_16M, min(max(low - (16 << 20), 0) >> 16, 0xFFFF), 2),
            (MEMORY_ABOVE_4G, min((ram_bytes - low) >> 16, 0xFF_FFFF), 3),
        ):
            self.cmos[reg : reg + size] = value.to_bytes(size, "little")

    def state(self) -> RtcState:
        self._catch_up()
        return RtcState(
            self.index,
            self.nmi_masked,
            self.a,
            self.b,
            self.c,
            self.now(),
            self._frozen is not None,
            bytes(self.cmos),
        )
