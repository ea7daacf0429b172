"""The 16550A: what Linux's 8250 driver probes, interrupt identification and the IRQ line, loopback,
FIFOs, modem status, and the bounded output buffer."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.helpers import FUZZ, IrqLog, Op, ops, run_ops
from vmmio.devices.irq import IrqLine
from vmmio.devices.uart import IER, IIR_FCR, LCR, LSR, MCR, MSR, RBR_THR, SCR, Uart16550

RDA, THRE, RLS, MS = 0x01, 0x02, 0x04, 0x08


def make() -> tuple[Uart16550, IrqLog, bytearray]:
    log, out = IrqLog(), bytearray()
    return Uart16550(out.extend, irq=IrqLine(log, 4)), log, out


def test_transmits_to_the_sink_and_keeps_a_bounded_copy() -> None:
    out = bytearray()
    uart = Uart16550(out.extend, output_limit=4)
    for byte in b"abcdef":
        uart.write(RBR_THR, 1, byte)
    assert (bytes(out), bytes(uart.output)) == (b"abcdef", b"cdef")


def test_divisor_latch_and_plain_registers() -> None:
    uart, _, _ = make()
    uart.write(LCR, 1, 0x80)
    uart.write(RBR_THR, 1, 0x01)
    uart.write(IER, 1, 0x02)
    assert (uart.divisor, uart.read(RBR_THR, 1), uart.read(IER, 1)) == (0x0201, 0x01, 0x02)
    uart.write(LCR, 1, 0x03)
    uart.write(SCR, 1, 0x5A)
    assert (uart.read(LCR, 1), uart.read(SCR, 1), uart.read(IER, 1)) == (0x03, 0x5A, 0)


def test_linux_autoconfig_finds_a_16550a() -> None:
    """The checks of Linux's 8250 autoconfig, in its order, with the answers a 16550A gives."""
    uart, _, _ = make()
    uart.write(IER, 1, 0)
    assert uart.read(IER, 1) & 0x0F == 0
    uart.write(IER, 1, 0x0F)
    assert uart.read(IER, 1) & 0x0F == 0x0F
    uart.write(MCR, 1, 0x1A)  # loopback with RTS and OUT2
    assert uart.read(MSR, 1) & 0xF0 == 0x90  # CTS and DCD
    uart.write(MCR, 1, 0)
    uart.write(LCR, 1, 0)
    uart.write(IIR_FCR, 1, 0x01)
    assert uart.read(IIR_FCR, 1) >> 6 == 3  # FIFOs: a 16550A
    uart.write(LCR, 1, 0x80)
    assert uart.read(IIR_FCR, 1) != 0  # no EFR behind DLAB: not a ST16C650V1
    uart.write(LCR, 1, 0xBF)
    assert uart.read(IIR_FCR, 1) != 0  # no EFR: not a 16650V2
    uart.write(LCR, 1, 0)
    uart.write(IIR_FCR, 1, 0x21)  # 64-byte FIFO request
    assert uart.read(IIR_FCR, 1) & 0xE0 == 0xC0  # no TI16750
    uart.write(IER, 1, 0x40)
    assert uart.read(IER, 1) & 0x40 == 0  # no XScale UUE bit


def test_thre_reasserts_when_enabled_again_as_linux_startup_checks() -> None:
    uart, _, _ = make()
    uart.write(IIR_FCR, 1, 0x01)
    uart.write(IER, 1, THRE)
    assert uart.read(IIR_FCR, 1) == 0xC2
    assert uart.read(IIR_FCR, 1) == 0xC1  # reading IIR acknowledged it
    uart.write(IER, 1, 0)
    uart.write(IER, 1, THRE)
    assert uart.read(IIR_FCR, 1) == 0xC2


@pytest.mark.parametrize(
    ("ier", "feed", "loop_bytes", "mcr_toggle", "iir"),
    [
        (0, b"x", 0, False, 0x01),
        (RDA, b"x", 0, False, 0x04),
        (RDA | THRE, b"", 0, False, 0x02),
        (RDA | THRE, b"x", 0, False, 0x04),
        (RLS | RDA | THRE, b"", 2, False, 0x06),  # loopback overrun with a 1-byte receiver
        (MS, b"", 0, True, 0x00),
        (THRE | MS, b"", 0, True, 0x02),
    ],
    ids=["disabled", "rda", "thre", "rda-over-thre", "rls-over-all", "ms", "thre-over-ms"],
)
def test_interrupt_identification(ier: int, feed: bytes, loop_bytes: int, mcr_toggle: bool, iir: int) -> None:
    uart, _, _ = make()
    uart.feed(feed)
    if loop_bytes or mcr_toggle:
        uart.write(MCR, 1, 0x10)
        uart.write(MCR, 1, 0x13)  # DTR and RTS: DSR and CTS change
        for _ in range(loop_bytes):
            uart.write(RBR_THR, 1, 0x41)
        uart.read(IIR_FCR, 1)  # acknowledges the THRE those bytes left behind
    uart.write(IER, 1, ier)
    assert uart.read(IIR_FCR, 1) == iir


def test_sources_clear_in_priority_order() -> None:
    uart, log, _ = make()
    uart.write(MCR, 1, 0x10)
    uart.write(RBR_THR, 1, 0x41)
    uart.write(RBR_THR, 1, 0x42)  # overrun
    uart.write(MCR, 1, 0x11)  # DSR rises
    uart.write(IER, 1, 0x0F)
    seen = []
    for clear in (
        lambda: uart.read(LSR, 1),
        lambda: uart.read(RBR_THR, 1),
        lambda: None,
        lambda: uart.read(MSR, 1),
    ):
        seen.append(uart.read(IIR_FCR, 1))
        clear()
    assert seen == [0x06, 0x04, 0x02, 0x00]
    assert uart.read(IIR_FCR, 1) == 0x01 and not log.level(4)


def test_irq_line_rises_for_input_and_falls_when_it_is_read() -> None:
    uart, log, _ = make()
    uart.write(IER, 1, RDA)
    uart.feed(b"ab")
    assert log.level(4)
    assert [uart.read(RBR_THR, 1), uart.read(RBR_THR, 1)] == [ord("a"), ord("b")]
    assert not log.level(4) and log.edges(4) == 1


def test_writing_thr_re_arms_thre_after_the_byte_leaves() -> None:
    uart, log, out = make()
    uart.write(IER, 1, THRE)
    uart.read(IIR_FCR, 1)
    assert not log.level(4)
    uart.write(RBR_THR, 1, ord("z"))
    assert log.level(4) and log.edges(4) == 2 and out == b"z"


def test_loopback_sends_transmitted_bytes_to_the_receiver_not_the_sink() -> None:
    uart, _, out = make()
    uart.write(IIR_FCR, 1, 0x01)
    uart.write(MCR, 1, 0x10)
    for byte in range(17):
        uart.write(RBR_THR, 1, byte)
    assert out == b"" and list(uart.rx) == list(range(16))  # a 16-byte FIFO
    assert uart.read(LSR, 1) == 0x63  # DR, OE, THRE, TEMT
    assert uart.read(LSR, 1) == 0x61  # the error bit cleared on read


@pytest.mark.parametrize(
    ("mcr", "msr"),
    [(0x10, 0x00), (0x11, 0x20), (0x12, 0x10), (0x14, 0x40), (0x18, 0x80), (0x1F, 0xF0)],
    ids=hex,
)
def test_loopback_maps_modem_control_onto_modem_status(mcr: int, msr: int) -> None:
    uart, _, _ = make()
    uart.write(MCR, 1, mcr)
    assert uart.read(MSR, 1) & 0xF0 == msr


def test_modem_status_deltas_and_ri_trailing_edge() -> None:
    uart, _, _ = make()
    assert uart.read(MSR, 1) == 0xB0  # a connected terminal: DCD, DSR, CTS
    uart.set_modem_lines(0xA0 | 0x40)  # CTS drops, RI rises
    assert uart.read(MSR, 1) == 0xE1  # DCTS only: RI sets TERI on its falling edge
    uart.set_modem_lines(0xA0)
    assert uart.read(MSR, 1) == 0xA4
    assert uart.read(MSR, 1) == 0xA0


def test_fcr_clears_the_receiver_and_reports_fifos_only_when_enabled() -> None:
    uart, _, _ = make()
    uart.feed(b"abc")
    uart.write(IIR_FCR, 1, 0x01)  # enabling the FIFOs clears them
    assert not uart.rx and uart.read(IIR_FCR, 1) == 0xC1
    uart.feed(b"abc")
    uart.write(IIR_FCR, 1, 0x03)
    assert not uart.rx
    uart.feed(b"d")
    uart.write(IIR_FCR, 1, 0x00)
    assert not uart.rx and uart.read(IIR_FCR, 1) == 0x01


def test_lsr_reports_data_ready_and_an_idle_transmitter() -> None:
    uart, _, _ = make()
    assert uart.read(LSR, 1) == 0x60
    uart.feed(b"q")
    assert uart.read(LSR, 1) == 0x61
    uart.write(LSR, 1, 0xFF)  # read-only
    assert uart.read(LSR, 1) == 0x61


def test_reads_fit_their_size_and_mmio_strides_select_registers() -> None:
    uart = Uart16550(lambda data: None, stride=4)
    uart.write(SCR * 4, 4, 0x1234_56A5)
    assert (uart.read(SCR * 4, 4), uart.read(SCR * 4, 0)) == (0xA5, 0)


@FUZZ
@given(program=ops(1))
def test_hostile_accesses_never_raise(program: list[Op]) -> None:
    uart = Uart16550(lambda data: None, output_limit=16)
    uart.feed(b"input")
    run_ops((uart,), program)
    assert len(uart.output) <= 16
