"""The 8259A pair: initialization, triggering, priorities, EOI forms, masks, poll, cascade, ELCR."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.helpers import FUZZ, Op, ops, run_ops
from vmmio.devices.pic import COMMAND, DATA, Pic8259, PicPair

MASTER_BASE, SLAVE_BASE = 0x20, 0x28
EOI, SPECIFIC_EOI, ROTATE_EOI, SET_PRIORITY = 0x20, 0x60, 0xA0, 0xC0
READ_IRR, READ_ISR, POLL = 0x0A, 0x0B, 0x0C


def initialized(icw4: int = 0x01) -> PicPair:
    """Both chips set up as Linux does: vectors 0x20 and 0x28, cascade on IR2, all lines unmasked."""
    pic = PicPair()
    for chip, base, icw3 in ((pic.master, MASTER_BASE, 0x04), (pic.slave, SLAVE_BASE, 0x02)):
        chip.write(COMMAND, 1, 0x11)
        for value in (base, icw3, icw4):
            chip.write(DATA, 1, value)
    return pic


def serve_all(pic: PicPair) -> list[int]:
    """Acknowledge and EOI (slave, then master) until INTR drops; the vectors in order."""
    vectors: list[int] = []
    while pic.intr and len(vectors) < 16:
        vector = pic.acknowledge()
        vectors.append(vector)
        if vector >= SLAVE_BASE:
            pic.slave.write(COMMAND, 1, EOI)
        pic.master.write(COMMAND, 1, EOI)
    return vectors


def test_icw_sequence_leaves_the_chip_ready_with_its_vector_base() -> None:
    pic = initialized()
    assert pic.state() == (
        Pic8259(master=True, vector_base=0x20, icw3=0x04, icw4_expected=True),
        Pic8259(master=False, vector_base=0x28, icw3=0x02, icw4_expected=True),
    )


@pytest.mark.parametrize(
    ("icw1", "icws", "expected_imr"),
    [
        (0x11, [0x20, 0x04, 0x01], 0xAB),  # cascade, ICW4
        (0x10, [0x20, 0x04], 0xAB),  # cascade, no ICW4
        (0x13, [0x20, 0x01], 0xAB),  # single, ICW4: no ICW3
        (0x12, [0x20], 0xAB),  # single, no ICW4
    ],
    ids=["cascade-icw4", "cascade", "single-icw4", "single"],
)
def test_icw1_decides_how_many_icws_follow(icw1: int, icws: list[int], expected_imr: int) -> None:
    chip = PicPair().master
    chip.write(COMMAND, 1, icw1)
    for value in icws:
        assert chip.init_step
        chip.write(DATA, 1, value)
    assert chip.init_step == 0
    chip.write(DATA, 1, 0xAB)  # now OCW1
    assert (chip.imr, chip.vector_base) == (expected_imr, 0x20)


def test_edge_triggered_line_interrupts_once_per_rising_edge() -> None:
    pic = initialized()
    pic.set_irq(1, True)
    assert pic.intr and pic.pending_vector() == 0x21
    assert pic.acknowledge() == 0x21
    assert (pic.master.isr, pic.master.irr, pic.intr) == (0x02, 0, False)
    pic.master.write(COMMAND, 1, EOI)
    assert not pic.intr  # still high, but no new edge
    pic.set_irq(1, False)
    pic.set_irq(1, True)
    assert pic.pending_vector() == 0x21


def test_edge_request_survives_the_line_falling_before_inta() -> None:
    pic = initialized()
    pic.set_irq(4, True)
    pic.set_irq(4, False)
    assert pic.acknowledge() == 0x24


def test_level_triggered_line_reinterrupts_while_held_and_not_after_it_drops() -> None:
    pic = initialized()
    pic.elcr.write(1, 1, 0x04)  # IRQ 10 level-triggered
    pic.set_irq(10, True)
    assert pic.acknowledge() == 0x2A
    pic.slave.write(COMMAND, 1, EOI)
    pic.master.write(COMMAND, 1, EOI)
    assert pic.pending_vector() == 0x2A  # the device still asserts it
    pic.set_irq(10, False)
    assert not pic.intr and pic.slave.irr == 0


def test_level_request_withdrawn_before_inta_is_spurious() -> None:
    pic = initialized()
    pic.elcr.write(0, 1, 0x08)  # IRQ 3 level-triggered
    pic.set_irq(3, True)
    pic.set_irq(3, False)
    assert not pic.intr
    assert pic.acknowledge() == 0x27  # IRQ7's vector, nothing put in service
    assert pic.master.isr == 0


@pytest.mark.parametrize(
    ("lines", "order"),
    [
        ([4, 3, 1], [0x21, 0x23, 0x24]),
        ([12, 3, 9, 1], [0x21, 0x29, 0x2C, 0x23]),  # the slave ranks at IR2, between IRQ 1 and 3
        ([15, 8, 0, 7], [0x20, 0x28, 0x2F, 0x27]),
    ],
    ids=["master", "slave-between-1-and-3", "extremes"],
)
def test_fixed_priority_serves_lowest_line_first(lines: list[int], order: list[int]) -> None:
    pic = initialized()
    for line in lines:
        pic.set_irq(line, True)
    assert serve_all(pic) == order


def test_in_service_line_blocks_lower_ones_not_higher_ones() -> None:
    pic = initialized()
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x24
    pic.set_irq(5, True)
    assert pic.pending_vector() is None
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x21  # nests
    assert pic.master.isr == 0x12


def test_slave_requests_do_not_nest_without_special_fully_nested_mode() -> None:
    for icw4, nests in ((0x01, False), (0x11, True)):
        pic = initialized(icw4)
        pic.set_irq(12, True)
        assert pic.acknowledge() == 0x2C
        pic.set_irq(8, True)  # higher than 12 on the slave
        assert (pic.pending_vector() == 0x28) is nests, f"icw4={icw4:#x}"


@pytest.mark.parametrize(
    ("imr_master", "imr_slave", "lines", "vector"),
    [
        (0x02, 0x00, [1, 3], 0x23),
        (0x04, 0x00, [9], None),  # the cascade input masked
        (0x00, 0x02, [9, 10], 0x2A),
        (0xFF, 0xFF, [0, 8], None),
    ],
    ids=["master-line", "cascade", "slave-line", "all"],
)
def test_masked_lines_stay_in_irr_but_do_not_interrupt(
    imr_master: int, imr_slave: int, lines: list[int], vector: int | None
) -> None:
    pic = initialized()
    pic.master.write(DATA, 1, imr_master)
    pic.slave.write(DATA, 1, imr_slave)
    for line in lines:
        pic.set_irq(line, True)
    assert pic.pending_vector() == vector
    assert (pic.master.read(DATA, 1), pic.slave.read(DATA, 1)) == (imr_master, imr_slave)
    assert pic.master.irr & 0x0B == sum(1 << line for line in lines if line < 8)


def test_ocw3_selects_irr_or_isr_for_command_port_reads() -> None:
    pic = initialized()
    pic.set_irq(3, True)
    pic.set_irq(5, True)
    pic.acknowledge()
    assert pic.master.read(COMMAND, 1) == 0x20  # IRR after init; IRQ 3 moved to ISR
    pic.master.write(COMMAND, 1, READ_ISR)
    assert pic.master.read(COMMAND, 1) == 0x08
    pic.master.write(COMMAND, 1, 0x08)  # OCW3 without RR: selection unchanged
    assert pic.master.read(COMMAND, 1) == 0x08
    pic.master.write(COMMAND, 1, READ_IRR)
    assert pic.master.read(COMMAND, 1) == 0x20


def test_poll_reads_the_highest_request_and_puts_it_in_service() -> None:
    pic = initialized()
    pic.master.write(COMMAND, 1, POLL)
    assert pic.master.read(COMMAND, 1) == 0x00  # nothing pending
    pic.set_irq(6, True)
    pic.set_irq(5, True)
    pic.master.write(COMMAND, 1, POLL)
    assert pic.master.read(COMMAND, 1) == 0x85
    assert pic.master.isr == 0x20
    assert pic.master.read(COMMAND, 1) == 0x40  # the poll is one read; IRR again


@pytest.mark.parametrize(
    ("ocw2", "isr_after", "lowest_after"),
    [
        (EOI, 0x10, 7),  # clears the highest in service (IRQ 1)
        (SPECIFIC_EOI | 4, 0x02, 7),
        (ROTATE_EOI, 0x10, 1),  # and IRQ 1 becomes the lowest priority
        (SET_PRIORITY | 5, 0x12, 5),
        (0x40, 0x12, 7),  # no operation
    ],
    ids=["eoi", "specific-eoi", "rotate-on-eoi", "set-priority", "nop"],
)
def test_ocw2_commands(ocw2: int, isr_after: int, lowest_after: int) -> None:
    pic = initialized()
    pic.set_irq(4, True)
    pic.acknowledge()
    pic.set_irq(1, True)
    pic.acknowledge()
    pic.master.write(COMMAND, 1, ocw2)
    assert (pic.master.isr, pic.master.lowest) == (isr_after, lowest_after)


def test_rotation_gives_a_served_line_the_lowest_priority() -> None:
    pic = initialized()
    pic.master.write(COMMAND, 1, SET_PRIORITY | 1)  # IRQ 2 is now the highest
    for line in (1, 5):
        pic.set_irq(line, True)
    assert pic.pending_vector() == 0x25


def test_auto_eoi_puts_nothing_in_service_and_can_rotate() -> None:
    pic = initialized(icw4=0x03)
    pic.master.write(COMMAND, 1, 0x80)  # rotate in auto-EOI mode
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x23
    assert (pic.master.isr, pic.master.lowest) == (0, 3)


def test_special_mask_mode_lets_lower_lines_through_a_masked_in_service_line() -> None:
    pic = initialized()
    pic.set_irq(3, True)
    pic.acknowledge()
    pic.master.write(DATA, 1, 0x08)
    pic.set_irq(5, True)
    assert pic.pending_vector() is None
    pic.master.write(COMMAND, 1, 0x68)  # set special mask mode
    assert pic.pending_vector() == 0x25
    pic.master.write(COMMAND, 1, 0x48)  # clear it
    assert pic.pending_vector() is None


def test_icw1_resets_masks_service_and_edge_requests() -> None:
    pic = initialized()
    pic.set_irq(5, True)
    pic.master.write(DATA, 1, 0xF0)
    pic.master.write(COMMAND, 1, 0x11)
    assert (pic.master.irr, pic.master.imr, pic.master.init_step) == (0, 0, 2)


def test_nothing_to_acknowledge_gives_the_spurious_vector() -> None:
    pic = initialized()
    assert pic.acknowledge() == 0x27 and pic.master.isr == 0


def test_intr_callback_sees_each_change() -> None:
    levels: list[bool] = []
    pic = PicPair(on_intr=levels.append)
    pic.set_irq(0, True)
    pic.acknowledge()
    pic.set_irq(0, False)
    assert levels == [True, False]


@pytest.mark.parametrize("line", [2, 16, -1, 1000], ids=["cascade", "16", "negative", "huge"])
def test_lines_that_are_not_inputs_are_ignored(line: int) -> None:
    pic = initialized()
    pic.set_irq(line, True)
    assert (pic.intr, pic.master.irr, pic.slave.irr) == (False, 0, 0)


def test_elcr_bits_for_edge_only_lines_stay_clear() -> None:
    pic = PicPair()
    pic.elcr.write(0, 2, 0xFFFF)
    assert pic.elcr.read(0, 2) == 0xDEF8


def test_wide_accesses_reach_consecutive_ports() -> None:
    pic = initialized()
    pic.master.write(DATA, 1, 0x5A)
    pic.set_irq(0, True)
    assert pic.master.read(COMMAND, 2) == 0x5A01  # IRR, then IMR
    assert pic.master.read(COMMAND, 4) == 0xFFFF_5A01  # no third or fourth port here


@FUZZ
@given(program=ops(3))
def test_hostile_accesses_never_raise(program: list[Op]) -> None:
    pic = PicPair()
    run_ops((pic.master, pic.slave, pic.elcr), program)
    pic.set_irq(9, True)
    vector = pic.acknowledge()
    assert 0 <= vector <= 0xFF
