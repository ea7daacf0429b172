"""The local APIC page: registers, priorities, acceptance and EOI, errors, IPIs, the timer, odd accesses."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.helpers import FUZZ, Op, ops, run_ops
from vmmio.devices.clock import VirtualClock
from vmmio.devices.lapic import (
    APR,
    DFR,
    EOI,
    ESR,
    ICR_HIGH,
    ICR_LOW,
    ID,
    IRR,
    ISR,
    LDR,
    LVT_ERROR,
    LVT_LINT0,
    LVT_PERF,
    LVT_THERMAL,
    LVT_TIMER,
    PPR,
    SVR,
    TIMER_CURRENT,
    TIMER_DIVIDE,
    TIMER_INITIAL,
    TMR,
    TPR,
    VERSION,
    Ipi,
    LocalApic,
)

ONE_SHOT, PERIODIC, MASKED = 0, 0x2_0000, 0x1_0000
FIXED, NMI, INIT = 0x000, 0x400, 0x500
LOGICAL, ASSERT, LEVEL = 0x800, 0x4000, 0x8000
SELF, ALL, OTHERS = 0x4_0000, 0x8_0000, 0xC_0000


def make(apic_id: int = 0, enabled: bool = True) -> tuple[LocalApic, VirtualClock]:
    clock = VirtualClock(1000)
    apic = LocalApic(clock, apic_id)
    if enabled:
        apic.write(SVR, 4, 0x1FF)
    return apic, clock


def read(apic: LocalApic, reg: int) -> int:
    return apic.read(reg, 4)


@pytest.mark.parametrize(
    ("reg", "value"),
    [
        (ID, 0x0300_0000),
        (VERSION, 0x0005_0014),
        (TPR, 0),
        (PPR, 0),
        (LDR, 0),
        (DFR, 0xFFFF_FFFF),
        (SVR, 0xFF),
        (ESR, 0),
        (ICR_LOW, 0),
        (LVT_TIMER, MASKED),
        (LVT_LINT0, MASKED),
        (LVT_ERROR, MASKED),
        (TIMER_INITIAL, 0),
        (TIMER_CURRENT, 0),
        (TIMER_DIVIDE, 0),
        (0x3F0, 0),  # reserved
    ],
    ids=lambda value: hex(value),
)
def test_reset_values(reg: int, value: int) -> None:
    apic, _ = make(apic_id=3, enabled=False)
    assert read(apic, reg) == value


@pytest.mark.parametrize(
    ("reg", "written", "reads"),
    [
        (TPR, 0xFFFF_FFFF, 0xFF),
        (LDR, 0xFFFF_FFFF, 0xFF00_0000),
        (DFR, 0, 0x0FFF_FFFF),
        (SVR, 0xFFFF_FFFF, 0x3FF),
        (LVT_TIMER, 0xFFFF_FFFF, 0x3_00FF),  # TSC-deadline (bit 18) cannot be chosen
        (LVT_THERMAL, 0xFFFF_FFFF, 0x1_07FF),
        (LVT_PERF, 0xFFFF_FFFF, 0x1_07FF),
        (LVT_LINT0, 0xFFFF_FFFF, 0x1_A7FF),
        (LVT_ERROR, 0xFFFF_FFFF, 0x1_00FF),
        (TIMER_DIVIDE, 0xFFFF_FFFF, 0xB),
        (ICR_HIGH, 0xFFFF_FFFF, 0xFF00_0000),
        (ID, 0x0700_0000, 0x0700_0000),
        (VERSION, 0, 0x0005_0014),  # read-only
        (PPR, 0xFF, 0),
        (TIMER_CURRENT, 5, 0),
        (IRR, 0xFFFF_FFFF, 0),
    ],
    ids=lambda value: hex(value),
)
def test_writable_bits(reg: int, written: int, reads: int) -> None:
    apic, _ = make()
    apic.write(reg, 4, written)
    assert read(apic, reg) == reads


@pytest.mark.parametrize(
    ("tpr", "in_service", "ppr"),
    [(0x00, None, 0x00), (0x20, 0x45, 0x40), (0x50, 0x45, 0x50), (0x4F, 0x45, 0x4F), (0x3F, 0x45, 0x40)],
    ids=str,
)
def test_processor_priority(tpr: int, in_service: int | None, ppr: int) -> None:
    apic, _ = make()
    if in_service is not None:
        apic.accept(in_service)
        apic.acknowledge()
    apic.write(TPR, 4, tpr)
    assert read(apic, PPR) == ppr


def test_pending_vector_honours_tpr_and_what_is_in_service() -> None:
    apic, _ = make()
    apic.accept(0x31)
    apic.accept(0x52)
    apic.write(TPR, 4, 0x50)
    assert apic.pending_vector() is None  # class 5 is not above class 5
    apic.write(TPR, 4, 0x4F)
    assert apic.acknowledge() == 0x52
    apic.write(TPR, 4, 0)
    assert apic.pending_vector() is None  # 0x31 is below the in-service 0x52
    apic.write(EOI, 4, 0)
    assert apic.acknowledge() == 0x31


def test_vector_sets_read_as_eight_words() -> None:
    apic, _ = make()
    apic.accept(0x45, level_triggered=True)
    apic.accept(0xE1)
    assert (read(apic, IRR + 0x20), read(apic, TMR + 0x20), read(apic, IRR + 0x70)) == (0x20, 0x20, 0x2)
    apic.acknowledge()
    assert (read(apic, ISR + 0x70), read(apic, IRR + 0x70)) == (0x2, 0)


def test_eoi_retires_the_highest_in_service_and_reports_level_ones() -> None:
    apic, _ = make()
    apic.accept(0x40, level_triggered=True)
    apic.acknowledge()
    apic.accept(0x80)
    apic.acknowledge()
    apic.write(EOI, 4, 0)
    assert (apic.isr, apic.level_eois) == (1 << 0x40, [])
    apic.write(EOI, 4, 0)
    apic.write(EOI, 4, 0)  # nothing in service: no effect
    assert (apic.isr, apic.level_eois) == (0, [0x40])


def test_nothing_pending_acknowledges_the_spurious_vector() -> None:
    apic, _ = make()
    apic.write(SVR, 4, 0x1EF)
    assert apic.acknowledge() == 0xEF and apic.isr == 0


def test_a_software_disabled_apic_refuses_interrupts_and_masks_its_lvt() -> None:
    apic, _ = make(enabled=False)
    assert not apic.accept(0x40) and apic.pending_vector() is None
    apic.write(LVT_TIMER, 4, 0x20)
    assert read(apic, LVT_TIMER) == MASKED | 0x20
    apic.write(SVR, 4, 0x1FF)
    apic.write(LVT_LINT0, 4, 0x700)
    apic.write(SVR, 4, 0x0FF)
    assert read(apic, LVT_LINT0) == MASKED | 0x700


def test_errors_latch_into_esr_on_write_and_fire_the_error_lvt() -> None:
    apic, _ = make()
    apic.write(LVT_ERROR, 4, 0xFE)
    assert not apic.accept(0x05)
    assert read(apic, ESR) == 0  # not until ESR is written
    apic.write(ESR, 4, 0)
    assert read(apic, ESR) == 0x40
    apic.write(ICR_LOW, 4, SELF | 0x02)
    apic.write(ESR, 4, 0)
    assert read(apic, ESR) == 0x20
    assert apic.pending_vector() == 0xFE


def test_an_illegal_error_vector_does_not_loop() -> None:
    apic, _ = make()
    apic.write(LVT_ERROR, 4, 0x03)
    assert not apic.accept(0x03)
    apic.write(ESR, 4, 0)
    assert read(apic, ESR) == 0x40 and apic.irr == 0


@pytest.mark.parametrize(
    ("icr", "destination", "local", "sent"),
    [
        (SELF | FIXED | 0x41, 0, True, False),
        (FIXED | ASSERT | 0x41, 2, True, False),  # physical, our own ID
        (FIXED | ASSERT | 0x41, 5, False, True),
        (FIXED | ASSERT | 0x41, 0xFF, True, True),  # physical broadcast
        (ALL | FIXED | 0x41, 0, True, True),
        (OTHERS | FIXED | 0x41, 0, False, True),
        (SELF | NMI | ASSERT, 0, False, True),  # not fixed: the machine delivers it
        (OTHERS | INIT | ASSERT, 0, False, True),
        (LOGICAL | FIXED | 0x41, 0x01, True, True),  # flat model, LDR 0x01
        (LOGICAL | FIXED | 0x41, 0x06, False, True),
    ],
    ids=[
        "self",
        "own-id",
        "other-id",
        "broadcast",
        "all",
        "others",
        "nmi-self",
        "init-others",
        "logical-match",
        "logical-miss",
    ],
)
def test_ipis_reach_this_apic_or_the_machine(icr: int, destination: int, local: bool, sent: bool) -> None:
    apic, _ = make(apic_id=2)
    apic.write(LDR, 4, 0x0100_0000)
    apic.write(ICR_HIGH, 4, destination << 24)
    apic.write(ICR_LOW, 4, icr)
    assert (apic.irr == 1 << 0x41, bool(apic.sent_ipis)) == (local, sent)
    if sent:
        assert apic.sent_ipis == [Ipi.from_icr(icr, destination << 24)]
    assert read(apic, ICR_LOW) & 0x1000 == 0  # delivery status: always idle


def test_logical_cluster_destinations() -> None:
    apic, _ = make()
    apic.write(DFR, 4, 0x0FFF_FFFF)  # cluster model
    apic.write(LDR, 4, 0x2400_0000)  # cluster 2, member bit 2
    for destination, local in ((0x24, True), (0x2C, True), (0x14, False), (0x28, False)):
        apic.irr = 0
        apic.write(ICR_HIGH, 4, destination << 24)
        apic.write(ICR_LOW, 4, LOGICAL | 0x41)
        assert (apic.irr != 0) is local, hex(destination)


def test_changing_the_id_changes_which_ipis_are_ours() -> None:
    apic, _ = make()
    apic.write(ID, 4, 0x0500_0000)
    apic.write(ICR_HIGH, 4, 0x0500_0000)
    apic.write(ICR_LOW, 4, 0x41)
    assert apic.irr == 1 << 0x41 and not apic.sent_ipis


def start_timer(apic: LocalApic, lvt: int, count: int, divide: int = 0xB) -> None:
    apic.write(TIMER_DIVIDE, 4, divide)
    apic.write(LVT_TIMER, 4, lvt)
    apic.write(TIMER_INITIAL, 4, count)


def test_one_shot_timer_counts_down_and_fires_once() -> None:
    apic, clock = make()
    start_timer(apic, ONE_SHOT | 0xEE, 1000)
    clock.advance(300)
    assert read(apic, TIMER_CURRENT) == 700
    assert apic.next_deadline_ns() == 2000
    clock.set(1999)
    apic.update()
    assert apic.irr == 0
    clock.set(2000)
    apic.update()
    assert apic.pending_vector() == 0xEE and read(apic, TIMER_CURRENT) == 0
    assert apic.next_deadline_ns() is None


def test_periodic_timer_reloads_and_collapses_missed_periods() -> None:
    apic, clock = make()
    start_timer(apic, PERIODIC | 0xEE, 1000)
    clock.advance(2500)
    apic.update()
    assert apic.acknowledge() == 0xEE and apic.pending_vector() is None
    assert read(apic, TIMER_CURRENT) == 500
    assert apic.next_deadline_ns() == 1000 + 3000


@pytest.mark.parametrize(
    ("divide", "by"),
    [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xA, 128), (0xB, 1)],
    ids=hex,
)
def test_divide_configuration(divide: int, by: int) -> None:
    apic, clock = make()
    start_timer(apic, ONE_SHOT | 0xEE, 1000, divide)
    clock.advance(64 * by)
    assert read(apic, TIMER_CURRENT) == 1000 - 64
    assert apic.next_deadline_ns() == 1000 + 1000 * by


def test_mode_and_divider_changes_carry_the_current_count_over() -> None:
    apic, clock = make()
    start_timer(apic, ONE_SHOT | 0xEE, 1000)
    clock.advance(600)
    apic.write(LVT_TIMER, 4, PERIODIC | 0xEE)
    assert read(apic, TIMER_CURRENT) == 400  # not reset to the initial count
    clock.advance(400)
    assert read(apic, TIMER_CURRENT) == 1000  # reloaded at expiry
    apic.write(TIMER_DIVIDE, 4, 0x0)  # divide by 2 from here on
    clock.advance(100)
    assert read(apic, TIMER_CURRENT) == 950
    apic.write(LVT_TIMER, 4, ONE_SHOT | 0xEE)
    clock.advance(10_000)
    assert read(apic, TIMER_CURRENT) == 0
    apic.write(LVT_TIMER, 4, PERIODIC | 0xEE)
    clock.advance(10_000)
    assert read(apic, TIMER_CURRENT) == 0  # expired one-shot stays at zero in periodic mode


def test_a_masked_timer_expires_silently() -> None:
    apic, clock = make()
    start_timer(apic, MASKED | ONE_SHOT | 0xEE, 100)
    assert apic.next_deadline_ns() is None
    clock.advance(200)
    apic.write(LVT_TIMER, 4, ONE_SHOT | 0xEE)
    apic.update()
    assert apic.irr == 0 and read(apic, TIMER_CURRENT) == 0


def test_zero_initial_count_stops_the_timer() -> None:
    apic, clock = make()
    start_timer(apic, PERIODIC | 0xEE, 100)
    apic.write(TIMER_INITIAL, 4, 0)
    clock.advance(1000)
    apic.update()
    assert (apic.irr, apic.next_deadline_ns(), read(apic, TIMER_CURRENT)) == (0, None, 0)


@pytest.mark.parametrize(
    ("offset", "size", "value"),
    [
        (VERSION, 1, 0x14),
        (VERSION + 2, 1, 0x05),
        (VERSION + 2, 2, 0x0005),
        (VERSION, 8, 0x0005_0014),  # the rest of the slot reads 0
        (VERSION + 4, 4, 0),
        (VERSION + 0xC, 8, 0),  # the slot's tail, then reserved 0x40
        (ID + 0xC, 8, 0x0005_0014 << 32),  # the slot's last 4 bytes, then VERSION
        (0x1000, 4, 0),
    ],
    ids=str,
)
def test_partial_reads_see_register_bytes_in_their_slot(offset: int, size: int, value: int) -> None:
    apic, _ = make(apic_id=3)
    assert apic.read(offset, size) == value


@pytest.mark.parametrize(
    ("offset", "size"), [(TPR, 1), (TPR, 2), (TPR, 8), (TPR + 1, 4), (TPR + 4, 4)], ids=str
)
def test_only_aligned_dword_writes_take_effect(offset: int, size: int) -> None:
    apic, _ = make()
    apic.write(offset, size, 0xFFFF_FFFF_FFFF_FFFF)
    assert read(apic, TPR) == 0


def test_arbitration_priority() -> None:
    apic, _ = make()
    apic.write(TPR, 4, 0x30)
    apic.accept(0x21)
    assert read(apic, APR) == 0x30
    apic.accept(0x61)
    assert read(apic, APR) == 0x60


def test_state_can_be_compared() -> None:
    first, second = make()[0], make()[0]
    assert first.state() == second.state()
    second.accept(0x30)
    assert first.state() != second.state()


@FUZZ
@given(program=ops(1, timed=True))
def test_hostile_accesses_never_raise_and_deadlines_are_never_overdue(program: list[Op]) -> None:
    apic, clock = make()
    start_timer(apic, PERIODIC | 0x30, 7)
    run_ops((apic,), program, clock, apic)
