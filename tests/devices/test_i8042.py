"""The PS/2 controller: commands, status, keyboard and mouse replies, IRQ1/IRQ12, resets, port 0x92."""

from __future__ import annotations

import pytest
from hypothesis import given

from devices.helpers import FUZZ, IrqLog, Op, ops, run_ops
from vmmio.devices.i8042 import I8042, Port92, ResetRequested
from vmmio.devices.irq import IrqLine

OBF, SYS, CMD, AUX = 0x01, 0x04, 0x08, 0x20


def make() -> tuple[I8042, IrqLog, list[str]]:
    log, resets = IrqLog(), []
    controller = I8042(IrqLine(log, 1), IrqLine(log, 12), on_reset=lambda: resets.append("reset"))
    return controller, log, resets


def send(controller: I8042, *writes: tuple[str, int]) -> None:
    for port, value in writes:
        (controller.command if port == "cmd" else controller.data).write(0, 1, value)


def drain(controller: I8042) -> list[int]:
    """Bytes read from port 0x60 while the status port shows OBF."""
    received: list[int] = []
    while controller.command.read(0, 1) & OBF and len(received) < 64:
        received.append(controller.data.read(0, 1))
    return received


@pytest.mark.parametrize(
    ("writes", "replies"),
    [
        ([("cmd", 0xAA)], [0x55]),
        ([("cmd", 0xAB)], [0x00]),
        ([("cmd", 0xA9)], [0x00]),
        ([("cmd", 0x20)], [0x47]),
        ([("cmd", 0x60), ("data", 0x03), ("cmd", 0x20)], [0x03]),
        ([("cmd", 0x7F), ("data", 0x99), ("cmd", 0x3F)], [0x99]),  # controller RAM byte 31
        ([("cmd", 0xA7), ("cmd", 0x20)], [0x67]),
        ([("cmd", 0xA7), ("cmd", 0xA8), ("cmd", 0x20)], [0x47]),
        ([("cmd", 0xAD), ("cmd", 0x20)], [0x57]),
        ([("cmd", 0xAD), ("cmd", 0xAE), ("cmd", 0x20)], [0x47]),
        ([("cmd", 0xD0)], [0xCF]),
        ([("cmd", 0xD1), ("data", 0xCD), ("cmd", 0xD0)], [0xCD]),
        ([("cmd", 0xD1), ("data", 0xCF), ("cmd", 0xD2), ("data", 1), ("cmd", 0xD0)], [1, 0xDF]),  # OBF bit
        ([("cmd", 0xD2), ("data", 0xAB)], [0xAB]),
        ([("cmd", 0xD3), ("data", 0x5A)], [0x5A]),  # Linux's AUX loop test
        ([("cmd", 0xC8)], []),  # unknown: ignored
    ],
    ids=lambda value: str(value),
)
def test_controller_commands(writes: list[tuple[str, int]], replies: list[int]) -> None:
    controller, _, _ = make()
    send(controller, *writes)
    assert drain(controller) == replies


@pytest.mark.parametrize(
    ("ccb", "writes", "replies"),
    [
        (0x47, [0xFF], [0xFA, 0xAA]),
        (0x47, [0xF2], [0xFA, 0xAB, 0x41]),  # identify, translated as the controller does
        (0x07, [0xF2], [0xFA, 0xAB, 0x83]),
        (0x47, [0xF4], [0xFA]),
        (0x47, [0xF5], [0xFA]),
        (0x47, [0xF6], [0xFA]),
        (0x47, [0xED, 0x07], [0xFA, 0xFA]),  # LEDs and their argument
        (0x47, [0xED, 0xFF], [0xFA, 0xFA]),  # an argument is never a command
        (0x47, [0xEE], [0xEE]),
        (0x47, [0x01], [0xFE]),
    ],
    ids=lambda value: str(value),
)
def test_keyboard_replies(ccb: int, writes: list[int], replies: list[int]) -> None:
    controller, _, _ = make()
    send(controller, ("cmd", 0x60), ("data", ccb))
    send(controller, *(("data", value) for value in writes))
    assert drain(controller) == replies


@pytest.mark.parametrize(
    ("writes", "replies"),
    [
        ([0xFF], [0xFA, 0xAA, 0x00]),
        ([0xF2], [0xFA, 0x00]),
        ([0xF3, 200], [0xFA, 0xFA]),
        ([0xE9], [0xFA, 0x00, 0x02, 100]),
        ([0xF4], [0xFA]),
        ([0x42], [0xFE]),
    ],
    ids=lambda value: str(value),
)
def test_mouse_replies_through_d4_come_flagged_as_aux(writes: list[int], replies: list[int]) -> None:
    controller, _, _ = make()
    for value in writes:
        send(controller, ("cmd", 0xD4), ("data", value))
    statuses = []
    received: list[int] = []
    while (status := controller.command.read(0, 1)) & OBF:
        statuses.append(status & AUX)
        received.append(controller.data.read(0, 1))
    assert (received, set(statuses)) == (replies, {AUX})


def test_status_register() -> None:
    controller, _, _ = make()
    assert controller.command.read(0, 1) == SYS | 0x10  # empty, not inhibited, POST passed
    send(controller, ("cmd", 0x20))
    assert controller.command.read(0, 1) == SYS | 0x10 | CMD | OBF
    send(controller, ("cmd", 0x60), ("data", 0x03))
    assert controller.command.read(0, 1) == 0x10 | OBF  # SYS follows the command byte; data written last
    send(controller, ("cmd", 0xAA))
    assert controller.command.read(0, 1) & SYS  # the self-test sets it


def test_irq1_per_keyboard_byte_and_only_when_enabled() -> None:
    controller, log, _ = make()
    controller.push_keyboard(b"\x1e\x9e")
    assert log.level(1)
    controller.data.read(0, 1)
    controller.data.read(0, 1)
    assert (log.edges(1), log.level(1), log.edges(12)) == (2, False, 0)
    send(controller, ("cmd", 0x60), ("data", 0x46))  # interrupts off
    controller.push_keyboard(b"\x1e")
    assert log.edges(1) == 2 and drain(controller) == [0x1E]


def test_irq12_for_mouse_bytes() -> None:
    controller, log, _ = make()
    send(controller, ("cmd", 0xD4), ("data", 0xF4))  # enable reporting
    assert drain(controller) == [0xFA] and log.edges(12) == 1
    controller.push_aux(b"\x08\x01\x01")
    assert drain(controller) == [0x08, 0x01, 0x01]
    assert (log.edges(12), log.edges(1)) == (4, 0)


def test_a_disabled_keyboard_interface_holds_bytes_until_enabled() -> None:
    controller, _, _ = make()
    send(controller, ("cmd", 0xAD))
    controller.push_keyboard(b"\x1c")
    assert drain(controller) == []
    send(controller, ("cmd", 0xAE))
    assert drain(controller) == [0x1C]


def test_a_keyboard_that_is_not_scanning_drops_key_presses() -> None:
    controller, _, _ = make()
    send(controller, ("data", 0xF5))
    controller.push_keyboard(b"\x1c")
    assert drain(controller) == [0xFA]
    send(controller, ("data", 0xF4))
    controller.push_keyboard(b"\x1c")
    assert drain(controller) == [0xFA, 0x1C]


def test_controller_replies_queue_behind_the_full_output_buffer() -> None:
    controller, _, _ = make()
    controller.push_keyboard(b"\x10")
    send(controller, ("cmd", 0xAA))
    assert drain(controller) == [0x10, 0x55]


def test_reading_an_empty_buffer_returns_the_last_byte() -> None:
    controller, _, _ = make()
    send(controller, ("cmd", 0xAA))
    assert [controller.data.read(0, 1) for _ in range(2)] == [0x55, 0x55]


@pytest.mark.parametrize(
    ("writes", "resets", "a20"),
    [
        ([("cmd", 0xFE)], 1, True),
        ([("cmd", 0xF0)], 1, True),
        ([("cmd", 0xFF)], 0, True),  # bit 0 set: nothing pulsed
        ([("cmd", 0xD1), ("data", 0xCC)], 1, False),
        ([("cmd", 0xD1), ("data", 0xCD)], 0, False),
        ([("cmd", 0xD1), ("data", 0xCF)], 0, True),
    ],
    ids=[
        "pulse-fe",
        "pulse-f0",
        "pulse-ff",
        "output-port-reset",
        "output-port-a20-off",
        "output-port-a20-on",
    ],
)
def test_reset_requests_and_a20(writes: list[tuple[str, int]], resets: int, a20: bool) -> None:
    controller, _, requested = make()
    send(controller, *writes)
    assert (len(requested), controller.a20) == (resets, a20)


def test_default_reset_raises_for_the_run_loop() -> None:
    controller = I8042()
    with pytest.raises(ResetRequested, match="i8042"):
        controller.command.write(0, 1, 0xFE)


def test_port_92_resets_on_a_rising_bit_0_and_keeps_a20() -> None:
    resets: list[bool] = []
    port = Port92(on_reset=lambda: resets.append(True))
    assert port.read(0, 1) == 0x02 and port.a20
    port.write(0, 1, 0x01)
    port.write(0, 1, 0x01)  # already set: no new edge
    assert (len(resets), port.a20, port.read(0, 1)) == (1, False, 0x01)
    port.write(0, 1, 0x02)
    port.write(0, 1, 0x03)
    assert len(resets) == 2 and port.a20
    with pytest.raises(ResetRequested, match="0x92"):
        Port92().write(0, 1, 0x01)


@FUZZ
@given(program=ops(3))
def test_hostile_accesses_never_raise(program: list[Op]) -> None:
    controller, _, _ = make()
    run_ops((controller.data, controller.command, Port92(on_reset=lambda: None)), program)
