"""The MC146818: time registers and formats, setting the time, flags and IRQ8, CMOS RAM, memory sizes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given

from devices.helpers import FUZZ, IrqLog, Op, ops, run_ops
from vmmio.devices.clock import NS_PER_S, VirtualClock, ns_at_tick
from vmmio.devices.irq import IrqLine
from vmmio.devices.rtc import (
    CENTURY,
    DAY,
    HOURS,
    MINUTES,
    MONTH,
    REG_A,
    REG_B,
    REG_C,
    REG_D,
    RTC_HZ,
    SECONDS,
    WEEKDAY,
    YEAR,
    Rtc,
)

LEAP_EVE = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)  # a Thursday
SET, PIE, UIE, BINARY, H24 = 0x80, 0x40, 0x10, 0x04, 0x02


def make(start: datetime = LEAP_EVE) -> tuple[Rtc, VirtualClock, IrqLog]:
    clock, log = VirtualClock(), IrqLog()
    return Rtc(clock, IrqLine(log, 8), start), clock, log


def get(rtc: Rtc, index: int) -> int:
    rtc.write(0, 1, index)
    return rtc.read(1, 1)


def put(rtc: Rtc, index: int, value: int) -> None:
    rtc.write(0, 1, index)
    rtc.write(1, 1, value)


@pytest.mark.parametrize(
    ("b", "start", "reg", "value"),
    [
        (H24, LEAP_EVE, SECONDS, 0x58),
        (H24, LEAP_EVE, MINUTES, 0x59),
        (H24, LEAP_EVE, HOURS, 0x23),
        (H24, LEAP_EVE, WEEKDAY, 5),  # Sunday is 1
        (H24, LEAP_EVE, DAY, 0x29),
        (H24, LEAP_EVE, MONTH, 0x02),
        (H24, LEAP_EVE, YEAR, 0x24),
        (H24, LEAP_EVE, CENTURY, 0x20),
        (H24 | BINARY, LEAP_EVE, HOURS, 23),
        (H24 | BINARY, LEAP_EVE, SECONDS, 58),
        (0, LEAP_EVE, HOURS, 0x91),  # 12-hour BCD: PM bit and 11
        (BINARY, LEAP_EVE, HOURS, 0x8B),
        (0, datetime(2024, 1, 1, 0, 30, tzinfo=UTC), HOURS, 0x12),  # 12 AM
        (0, datetime(2024, 1, 1, 12, 30, tzinfo=UTC), HOURS, 0x92),  # 12 PM
        (0, datetime(2024, 1, 1, 9, 30, tzinfo=UTC), HOURS, 0x09),
    ],
    ids=lambda value: str(value),
)
def test_time_registers_in_each_format(b: int, start: datetime, reg: int, value: int) -> None:
    rtc, _, _ = make(start)
    put(rtc, REG_B, b)
    assert get(rtc, reg) == value


def test_time_follows_the_clock_across_a_leap_day() -> None:
    rtc, clock, _ = make()
    clock.advance(2 * NS_PER_S)
    assert [get(rtc, reg) for reg in (SECONDS, MINUTES, HOURS, DAY, MONTH, WEEKDAY)] == [0, 0, 0, 1, 3, 6]


def test_set_holds_the_registers_and_restarts_the_clock_from_what_was_written() -> None:
    rtc, clock, _ = make()
    put(rtc, REG_B, H24 | SET)
    for reg, value in ((HOURS, 0x07), (MINUTES, 0x30), (SECONDS, 0x15), (DAY, 0x04), (MONTH, 0x07)):
        put(rtc, reg, value)
    clock.advance(5 * NS_PER_S)
    assert (get(rtc, HOURS), get(rtc, SECONDS)) == (0x07, 0x15)  # held while SET
    put(rtc, REG_B, H24)
    clock.advance(3 * NS_PER_S + 1)
    assert rtc.now() == datetime(2024, 7, 4, 7, 30, 18, tzinfo=UTC)


def test_a_time_register_written_without_set_moves_the_time_at_once() -> None:
    rtc, clock, _ = make()
    clock.advance(NS_PER_S // 2)
    put(rtc, MINUTES, 0x10)
    assert rtc.now() == datetime(2024, 2, 29, 23, 10, 58, tzinfo=UTC)
    clock.advance(NS_PER_S // 2)
    assert get(rtc, SECONDS) == 0x59  # the half second already counted was kept


@pytest.mark.parametrize(
    ("reg", "value", "expected"),
    [
        (MONTH, 0x13, datetime(2024, 12, 29, 23, 59, 58, tzinfo=UTC)),
        (HOURS, 0x25, datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)),
        (SECONDS, 0xFF, datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
        (DAY, 0x00, datetime(2024, 2, 1, 23, 59, 58, tzinfo=UTC)),
        (YEAR, 0x23, datetime(2023, 2, 28, 23, 59, 58, tzinfo=UTC)),  # no 29 February in 2023
    ],
    ids=["month-13", "hour-25", "seconds-ff", "day-0", "leap-day-in-common-year"],
)
def test_out_of_range_fields_are_clamped_when_the_clock_restarts(
    reg: int, value: int, expected: datetime
) -> None:
    rtc, _, _ = make()
    put(rtc, REG_B, H24 | SET)
    put(rtc, reg, value)
    put(rtc, REG_B, H24)
    assert rtc.now() == expected


def test_uip_is_set_only_in_the_last_244_microseconds_of_each_second() -> None:
    rtc, clock, _ = make()
    put(rtc, REG_A, 0xFF)
    assert get(rtc, REG_A) == 0x7F  # UIP is read-only
    clock.set(NS_PER_S - 244_001)
    assert get(rtc, REG_A) & 0x80 == 0
    clock.advance(1)
    assert get(rtc, REG_A) & 0x80 == 0x80
    put(rtc, REG_B, H24 | SET)
    assert get(rtc, REG_A) & 0x80 == 0  # no updates while SET


def test_periodic_interrupt_at_the_rate_select_and_cleared_by_reading_c() -> None:
    rtc, clock, log = make()
    put(rtc, REG_A, 0x26)  # 1024 Hz: 32 ticks of 32.768 kHz
    put(rtc, REG_B, H24 | PIE)
    deadline = rtc.next_deadline_ns()
    assert deadline == ns_at_tick(32, RTC_HZ)
    clock.set(deadline - 1)
    rtc.update()
    assert not log.level(8)
    clock.set(deadline)
    rtc.update()
    assert log.level(8) and rtc.next_deadline_ns() is None  # already signalled
    assert get(rtc, REG_C) == 0xC0  # IRQF, PF
    assert not log.level(8) and get(rtc, REG_C) == 0
    assert rtc.next_deadline_ns() == ns_at_tick(64, RTC_HZ)


def test_flags_set_without_their_enable_raise_nothing_until_enabled() -> None:
    rtc, clock, log = make()
    clock.advance(NS_PER_S)
    assert rtc.next_deadline_ns() is None
    rtc.update()
    assert not log.level(8)
    put(rtc, REG_B, H24 | PIE)  # PF is already set: IRQF and IRQ8 follow at once
    assert log.level(8)
    assert get(rtc, REG_C) == 0xD0  # IRQF, PF, UF


def test_update_ended_interrupt_each_second() -> None:
    rtc, clock, log = make(datetime(2024, 1, 1, tzinfo=UTC))
    clock.advance(NS_PER_S // 4)
    put(rtc, REG_B, H24 | UIE)
    assert rtc.next_deadline_ns() == NS_PER_S
    clock.set(NS_PER_S)
    rtc.update()
    assert log.edges(8) == 1 and get(rtc, REG_C) == 0xD0  # IRQF, UF, and PF of the default rate
    assert rtc.next_deadline_ns() == 2 * NS_PER_S


def test_set_clears_uie_and_stops_update_flags() -> None:
    rtc, clock, _ = make()
    put(rtc, REG_B, H24 | UIE | SET)
    assert get(rtc, REG_B) == H24 | SET
    clock.advance(3 * NS_PER_S)
    assert get(rtc, REG_C) & 0x10 == 0


def test_register_d_reports_valid_ram_and_ignores_writes() -> None:
    rtc, _, _ = make()
    put(rtc, REG_D, 0)
    assert get(rtc, REG_D) == 0x80


def test_index_port_keeps_the_nmi_mask_bit_and_reads_open_bus() -> None:
    rtc, _, _ = make()
    rtc.write(0, 1, 0x8A)
    assert (rtc.index, rtc.nmi_masked, rtc.read(0, 1)) == (0x0A, True, 0xFF)
    assert rtc.read(1, 1) == 0x26  # register A, through the masked index


def test_cmos_ram_keeps_what_is_written() -> None:
    rtc, _, _ = make()
    for index in (0x0E, 0x40, 0x7F, SECONDS + 1):  # the alarm registers are RAM too
        put(rtc, index, index ^ 0x5A)
    assert [get(rtc, index) for index in (0x0E, 0x40, 0x7F, SECONDS + 1)] == [0x54, 0x1A, 0x25, 0x5B]
    put(rtc, 0xC0, 0x77)  # index bit 7 is the NMI mask: this is CMOS byte 0x40
    assert rtc.cmos[0x40] == 0x77


@pytest.mark.parametrize(
    ("ram", "low", "cmos"),
    [
        (16 << 20, None, {0x15: 0x280, 0x17: 0x3C00, 0x30: 0x3C00, 0x34: 0, 0x5B: 0}),
        (128 << 20, None, {0x15: 0x280, 0x17: 0xFFFF, 0x30: 0xFFFF, 0x34: 0x0700, 0x5B: 0}),
        (8 << 30, None, {0x17: 0xFFFF, 0x34: 0xDF00, 0x5B: 0x012000}),
        (6 << 30, 2 << 30, {0x34: 0x7F00, 0x5B: 0x010000}),
    ],
    ids=["16M", "128M", "8G", "6G-with-2G-low"],
)
def test_memory_size_bytes_as_a_bios_fills_them(ram: int, low: int | None, cmos: dict[int, int]) -> None:
    rtc, _, _ = make()
    rtc.set_memory_size(ram, low)
    for index, value in cmos.items():
        width = 3 if index == 0x5B else 2
        assert int.from_bytes(rtc.cmos[index : index + width], "little") == value, hex(index)


def test_memory_size_rejects_more_low_ram_than_ram() -> None:
    rtc, _, _ = make()
    with pytest.raises(ValueError):
        rtc.set_memory_size(1 << 30, 2 << 30)


def test_the_calendar_wraps_instead_of_overflowing() -> None:
    rtc, clock, _ = make(datetime(9600, 12, 31, 23, 59, 59, tzinfo=UTC))
    clock.advance(NS_PER_S)
    assert rtc.now() == datetime(1, 1, 1, tzinfo=UTC)


def test_state_can_be_compared() -> None:
    first, second = make()[0], make()[0]
    assert first.state() == second.state()
    put(second, 0x40, 1)
    assert first.state() != second.state()


@FUZZ
@given(program=ops(1, timed=True))
def test_hostile_accesses_never_raise_and_deadlines_are_never_overdue(program: list[Op]) -> None:
    rtc, clock, _ = make(datetime(9600, 12, 31, 23, 59, 50, tzinfo=UTC))
    run_ops((rtc,), program, clock, rtc)
    assert rtc.now().year in (9600, 1)
