"""The 8254: counts and OUT per mode, access modes, latches, read-back, gates, port 0x61, IRQ0 deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.helpers import FUZZ, IrqLog, Op, ops, run_ops
from vmmio.devices.clock import VirtualClock, ns_at_tick, ticks_at
from vmmio.devices.irq import IrqLine
from vmmio.devices.pit import CONTROL, PIT_HZ, Pit8254

LATCH_ALL = 0xCE  # read-back: latch count and status of all three channels


def pit_at_tick(tick: int = 1000) -> tuple[Pit8254, VirtualClock, IrqLog]:
    """A PIT whose clock stands at the start of input-clock tick `tick`."""
    clock = VirtualClock(ns_at_tick(tick, PIT_HZ))
    log = IrqLog()
    return Pit8254(clock, IrqLine(log, 0)), clock, log


def advance_ticks(clock: VirtualClock, ticks: int) -> None:
    clock.set(ns_at_tick(ticks_at(clock.now_ns(), PIT_HZ) + ticks, PIT_HZ))


def program(pit: Pit8254, channel: int, control: int, *count: int) -> None:
    pit.write(CONTROL, 1, channel << 6 | control)
    for byte in count:
        pit.write(channel, 1, byte)


def count_and_out(pit: Pit8254, channel: int) -> tuple[int, bool]:
    """Through the read-back command: the latched count (as many bytes as the access mode has) and OUT."""
    pit.write(CONTROL, 1, 0xC0 | 2 << channel)
    status = pit.read(channel, 1)
    access = status >> 4 & 3
    low = pit.read(channel, 1) if access != 2 else 0
    high = pit.read(channel, 1) if access != 1 else 0
    return low | high << 8, bool(status & 0x80)


@pytest.mark.parametrize(
    ("mode", "count", "ticks", "value", "out"),
    [
        (0, 100, 0, 100, False),
        (0, 100, 99, 1, False),
        (0, 100, 100, 0, True),
        (0, 100, 101, 0xFFFF, True),  # keeps counting after terminal count
        (2, 100, 0, 100, True),
        (2, 100, 98, 2, True),
        (2, 100, 99, 1, False),  # OUT low for the last clock of each period
        (2, 100, 100, 100, True),
        (2, 100, 250, 50, True),
        (3, 100, 0, 100, True),
        (3, 100, 49, 2, True),
        (3, 100, 50, 100, False),  # second half: low, counting down by two again
        (3, 100, 99, 2, False),
        (3, 100, 100, 100, True),
        (3, 5, 0, 4, True),  # odd: high for 3 clocks, low for 2
        (3, 5, 2, 0, True),
        (3, 5, 3, 4, False),
        (3, 5, 5, 4, True),
        (4, 100, 99, 1, True),
        (4, 100, 100, 0, False),  # a one-clock strobe
        (4, 100, 101, 0xFFFF, True),
        (2, 0, 1, 0xFFFF, True),  # a count of 0 is 65536
    ],
    ids=lambda value: str(value),
)
def test_count_and_out_follow_the_mode(mode: int, count: int, ticks: int, value: int, out: bool) -> None:
    pit, clock, _ = pit_at_tick()
    program(pit, 0, 0x30 | mode << 1, count & 0xFF, count >> 8)
    advance_ticks(clock, ticks)
    assert count_and_out(pit, 0) == (value, out)


@pytest.mark.parametrize(
    ("written", "ticks", "value"), [(0x0100, 1, 0x0099), (0x0000, 1, 0x9999), (0x0100, 150, 0x0050)], ids=str
)
def test_bcd_counting(written: int, ticks: int, value: int) -> None:
    pit, clock, _ = pit_at_tick()
    program(pit, 0, 0x35, written & 0xFF, written >> 8)  # mode 2, BCD
    advance_ticks(clock, ticks)
    assert count_and_out(pit, 0)[0] == value


@pytest.mark.parametrize(
    ("access", "written", "count"),
    [(0x10, [0x34], 0x34), (0x20, [0x12], 0x1200), (0x30, [0x34, 0x12], 0x1234)],
    ids=["lsb", "msb", "lsb-then-msb"],
)
def test_access_modes_load_the_bytes_they_name(access: int, written: list[int], count: int) -> None:
    pit, _, _ = pit_at_tick()
    program(pit, 1, access | 0x04, *written)  # mode 2
    assert count_and_out(pit, 1)[0] == count


@pytest.mark.parametrize(
    ("access", "written", "reads"),
    [(0x10, [0x34], [0x34, 0x34]), (0x20, [0x12], [0x12, 0x12]), (0x30, [0x34, 0x12], [0x34, 0x12, 0x34])],
    ids=["lsb", "msb", "lsb-then-msb"],
)
def test_unlatched_reads_follow_the_access_mode(access: int, written: list[int], reads: list[int]) -> None:
    pit, _, _ = pit_at_tick()
    program(pit, 0, access | 0x04, *written)  # mode 2; the clock stands still
    assert [pit.read(0, 1) for _ in reads] == reads


def test_latch_holds_the_count_until_read_and_ignores_a_second_latch() -> None:
    pit, clock, _ = pit_at_tick()
    program(pit, 0, 0x34, 0xE8, 0x03)  # mode 2, 1000
    advance_ticks(clock, 100)
    pit.write(CONTROL, 1, 0x00)
    advance_ticks(clock, 100)
    pit.write(CONTROL, 1, 0x00)
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == 900
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == 800  # live again


def test_read_back_status_byte() -> None:
    pit, _, _ = pit_at_tick()
    pit.write(CONTROL, 1, 0xB0)  # channel 2, lsb then msb, mode 0
    pit.write(CONTROL, 1, 0xE8)  # read-back: status of channel 2 only
    assert pit.read(2, 1) == 0x70  # OUT low, null count, access 3, mode 0
    pit.write(2, 1, 0x10)
    pit.write(2, 1, 0x00)
    pit.write(CONTROL, 1, LATCH_ALL)
    assert pit.read(2, 1) == 0x30  # count loaded: null count clear
    assert [pit.read(2, 1), pit.read(2, 1)] == [0x10, 0x00]


def test_mode_2_raises_irq0_each_period_and_deadlines_lead_there() -> None:
    pit, clock, log = pit_at_tick()
    start = ticks_at(clock.now_ns(), PIT_HZ)
    program(pit, 0, 0x34, 0xE8, 0x03)  # mode 2, 1000
    assert pit.next_deadline_ns() == ns_at_tick(start + 1000, PIT_HZ)
    clock.set(ns_at_tick(start + 1000, PIT_HZ) - 1)
    pit.update()
    assert log.edges() == 0
    clock.advance(1)
    pit.update()
    assert (log.edges(), log.level()) == (1, False)
    assert pit.next_deadline_ns() == ns_at_tick(start + 2000, PIT_HZ)
    advance_ticks(clock, 5500)
    pit.update()
    assert log.edges() == 2  # missed periods collapse into one interrupt
    assert pit.next_deadline_ns() == ns_at_tick(start + 7000, PIT_HZ)


def test_mode_0_interrupts_once_at_terminal_count() -> None:
    pit, clock, log = pit_at_tick()
    program(pit, 0, 0x30, 100, 0)
    deadline = pit.next_deadline_ns()
    assert deadline is not None
    clock.set(deadline)
    pit.update()
    assert log.edges() == 1 and pit.next_deadline_ns() is None
    advance_ticks(clock, 70000)
    pit.update()
    assert log.edges() == 1


def test_power_on_state_is_what_a_bios_leaves() -> None:
    pit, _, _ = pit_at_tick(0)
    assert pit.next_deadline_ns() == ns_at_tick(65536, PIT_HZ)  # 18.2 Hz
    assert count_and_out(pit, 2) == (0, True)  # held by its gate: mode 3, OUT high


def test_port_b_gates_channel_2_and_shows_out2_as_linux_calibration_polls_it() -> None:
    pit, clock, _ = pit_at_tick()
    port_b = pit.port_b
    port_b.write(0, 1, 0x01)  # gate high, speaker off
    program(pit, 2, 0x30, 0xE8, 0x03)  # mode 0, 1000
    advance_ticks(clock, 999)
    assert port_b.read(0, 1) & 0x20 == 0
    advance_ticks(clock, 1)
    assert port_b.read(0, 1) & 0x20 == 0x20


def test_port_b_refresh_bit_toggles_and_only_low_bits_are_writable() -> None:
    pit, _, _ = pit_at_tick()
    pit.port_b.write(0, 1, 0xFE)
    reads = [pit.port_b.read(0, 1) for _ in range(3)]
    assert [value & 0x10 for value in reads] == [0x10, 0, 0x10]
    assert {value & 0xCF for value in reads} == {0x0E}


def test_gate_low_pauses_mode_0() -> None:
    pit, clock, _ = pit_at_tick()
    program(pit, 2, 0x30, 100, 0)  # gate still low: loaded but not counting
    advance_ticks(clock, 50)
    assert count_and_out(pit, 2) == (100, False)
    pit.port_b.write(0, 1, 1)
    advance_ticks(clock, 30)
    pit.port_b.write(0, 1, 0)
    advance_ticks(clock, 500)
    assert count_and_out(pit, 2) == (70, False)


def test_gate_stops_mode_2_with_out_high_and_restarts_it() -> None:
    pit, clock, _ = pit_at_tick()
    pit.port_b.write(0, 1, 1)
    program(pit, 2, 0x34, 100, 0)
    advance_ticks(clock, 99)
    assert count_and_out(pit, 2) == (1, False)
    pit.port_b.write(0, 1, 0)
    assert count_and_out(pit, 2) == (1, True)
    pit.port_b.write(0, 1, 1)
    advance_ticks(clock, 10)
    assert count_and_out(pit, 2) == (90, True)


@pytest.mark.parametrize("mode", [1, 5])
def test_hardware_triggered_modes_start_on_a_gate_edge(mode: int) -> None:
    pit, clock, _ = pit_at_tick()
    program(pit, 2, 0x30 | mode << 1, 100, 0)
    advance_ticks(clock, 500)
    assert count_and_out(pit, 2) == (100, True)  # waiting for the trigger
    pit.port_b.write(0, 1, 1)
    advance_ticks(clock, 100)
    expected_out = mode == 1  # mode 1: high at terminal count; mode 5: the strobe is low now
    assert count_and_out(pit, 2) == (0, expected_out)
    pit.port_b.write(0, 1, 0)
    pit.port_b.write(0, 1, 1)  # retrigger
    advance_ticks(clock, 40)
    assert count_and_out(pit, 2)[0] == 60


def test_control_port_reads_open_bus() -> None:
    pit, _, _ = pit_at_tick()
    assert pit.read(CONTROL, 1) == 0xFF


@FUZZ
@given(program_=ops(2, timed=True))
def test_hostile_accesses_never_raise_and_deadlines_are_never_overdue(program_: list[Op]) -> None:
    pit, clock, _ = pit_at_tick()
    run_ops((pit, pit.port_b), program_, clock, pit)
