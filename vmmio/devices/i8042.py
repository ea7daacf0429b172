"""The PS/2 controller (Intel 8042) with a keyboard and a mouse that never move, and port 0x92.

Two device objects, `data` for port 0x60 and `command` for port 0x64, each one byte wide: one object
spanning 0x60-0x64 would collide with system control port B at 0x61. The controller answers its own
commands, forwards bytes written to 0x60 to the keyboard (or, after 0xD4, to the mouse), and queues
their replies behind a one-byte output buffer. IRQ1 (keyboard) and IRQ12 (mouse) are high while the
output buffer holds a byte from that device and the command byte enables its interrupt; they drop when
the byte is read, so each byte is a fresh edge.

A reset request (command 0xFE, or any 0xF0-0xFF pulse command with bit 0 clear; an output-port write
with bit 0 clear; port 0x92 bit 0 going from 0 to 1) calls `on_reset`, which by default raises
`ResetRequested` for the run loop to catch. Left out: scancode translation (bytes pushed with
`push_keyboard` reach the guest as given), typematic repeat, mouse movement, and the A20 gate itself
(`a20` reports what the guest asked for; the machine decides what to do with it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from vmmio.devices.irq import NO_IRQ, IrqLine
from vmmio.devices.lanes import read_lanes, write_lanes

DATA_PORT = 0x60
COMMAND_PORT = 0x64  # status register on reads
PORT_SPAN = 1
PORT_92 = 0x92

STATUS_OBF = 0x01  # output buffer full
STATUS_IBF = 0x02  # input buffer full: never, commands complete at once
STATUS_SYS = 0x04  # system flag, from the command byte
STATUS_CMD = 0x08  # the last write went to the command port
STATUS_UNLOCKED = 0x10  # keyboard not inhibited by the key lock
STATUS_AUX = 0x20  # the output buffer byte is from the mouse

CCB_KBD_INT = 0x01  # command byte: IRQ1 enable
CCB_AUX_INT = 0x02  # IRQ12 enable
CCB_SYS = 0x04
CCB_KBD_DISABLED = 0x10
CCB_AUX_DISABLED = 0x20
CCB_TRANSLATE = 0x40
CCB_RESET = CCB_TRANSLATE | CCB_SYS | CCB_AUX_INT | CCB_KBD_INT  # as a PC BIOS leaves it

OUT_RESET_N = 0x01  # output port: system reset, active low
OUT_A20 = 0x02
OUT_KBD_OBF = 0x10
OUT_AUX_OBF = 0x20
OUT_RESET = 0xCF  # reset line high, A20 on, clock and data lines idle

PORT_92_RESET = 0x01  # a 0 to 1 transition resets the system
PORT_92_A20 = 0x02

# Controller commands written to port 0x64.
CMD_READ_RAM, CMD_WRITE_RAM = 0x20, 0x60  # 0x20-0x3F, 0x60-0x7F: controller RAM byte (0 is the command byte)
CMD_AUX_DISABLE, CMD_AUX_ENABLE, CMD_AUX_TEST = 0xA7, 0xA8, 0xA9
CMD_SELF_TEST, CMD_KBD_TEST = 0xAA, 0xAB
CMD_KBD_DISABLE, CMD_KBD_ENABLE = 0xAD, 0xAE
CMD_READ_OUTPUT, CMD_WRITE_OUTPUT = 0xD0, 0xD1
CMD_WRITE_KBD_BUFFER, CMD_WRITE_AUX_BUFFER, CMD_WRITE_AUX = 0xD2, 0xD3, 0xD4
CMD_PULSE = 0xF0  # 0xF0-0xFF: pulse the output port bits whose command bits are 0; bit 0 is reset
SELF_TEST_PASSED = 0x55
INTERFACE_OK = 0x00

# Replies of the devices on the PS/2 ports.
ACK, RESEND, SELF_TEST_OK, ECHO = 0xFA, 0xFE, 0xAA, 0xEE
KBD_IDENTIFY, KBD_ID, KBD_ID_TRANSLATED = 0xF2, (0xAB, 0x83), (0xAB, 0x41)
KBD_ENABLE, KBD_DISABLE, KBD_DEFAULTS, KBD_RESET = 0xF4, 0xF5, 0xF6, 0xFF


class ResetRequested(Exception):
    """The guest pulsed the system reset line; the run loop should reset or stop the machine."""

    def __init__(self, source: str) -> None:
        super().__init__(f"reset requested by {source}")
        self.source = source


def _reset_by(source: str) -> Callable[[], None]:
    def reset() -> None:
        raise ResetRequested(source)

    return reset


@dataclass(frozen=True)
class Ps2Device:
    """What a device on a PS/2 port answers: replies per command, and commands that take an argument
    (answered with ACK, then the argument with ACK). Anything else gets RESEND."""

    replies: dict[int, tuple[int, ...]]
    with_argument: frozenset[int]
    reporting: dict[int, bool]  # commands that start or stop the device sending input of its own


KEYBOARD = Ps2Device(
    replies={
        KBD_RESET: (ACK, SELF_TEST_OK),
        KBD_IDENTIFY: (ACK, *KBD_ID),
        KBD_ENABLE: (ACK,),
        KBD_DISABLE: (ACK,),
        KBD_DEFAULTS: (ACK,),
        ECHO: (ECHO,),
        0xF7: (ACK,),  # set all keys typematic, and the other set-3 key modes
        0xF8: (ACK,),
        0xF9: (ACK,),
        0xFA: (ACK,),
    },
    with_argument=frozenset({0xED, 0xF0, 0xF3}),  # LEDs, scancode set, typematic rate
    reporting={KBD_ENABLE: True, KBD_DISABLE: False, KBD_RESET: True},
)
MOUSE = Ps2Device(
    replies={
        0xFF: (ACK, SELF_TEST_OK, 0x00),  # reset: self-test passed, standard mouse ID
        0xF2: (ACK, 0x00),  # identify
        0xE9: (ACK, 0x00, 0x02, 100),  # status: stream mode, resolution 4/mm, 100 samples/s
        0xEB: (ACK, 0x08, 0x00, 0x00),  # read data: no buttons, no movement
        **{command: (ACK,) for command in (0xE6, 0xE7, 0xEA, 0xEC, 0xEE, 0xF0, 0xF4, 0xF5, 0xF6)},
    },
    with_argument=frozenset({0xE8, 0xF3}),  # resolution, sample rate
    reporting={0xF4: True, 0xF5: False, 0xF6: False, 0xFF: False},
)


class I8042:
    """The controller. Map `data` at port 0x60 and `command` at port 0x64."""

    def __init__(
        self,
        kbd_irq: IrqLine = NO_IRQ,
        aux_irq: IrqLine = NO_IRQ,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.kbd_irq, self.aux_irq = kbd_irq, aux_irq
        self.on_reset = on_reset or _reset_by("i8042")
        self.ram = bytearray(32)
        self.ram[0] = CCB_RESET
        self.output_port = OUT_RESET
        self.last_was_command = False
        self.pending: int | None = None  # a controller command awaiting its data byte
        self.kbd_pending: int | None = None  # a keyboard command awaiting its argument
        self.aux_pending: int | None = None
        self.kbd_scanning, self.aux_reporting = True, False
        self.replies: deque[tuple[int, bool]] = deque()  # (byte, from the mouse) from the controller
        self.kbd_queue: deque[int] = deque()
        self.aux_queue: deque[int] = deque()
        self.buffer: tuple[int, bool] | None = None  # the output buffer
        self.last_read = 0
        self._levels = (False, False)
        self.data = I8042Port(self._read_data, self._write_data)
        self.command = I8042Port(self._read_status, self._write_command)
        self._commands: dict[int, Callable[[], None]] = {
            CMD_AUX_DISABLE: lambda: self._set_ccb(self.ccb | CCB_AUX_DISABLED),
            CMD_AUX_ENABLE: lambda: self._set_ccb(self.ccb & ~CCB_AUX_DISABLED),
            CMD_AUX_TEST: lambda: self._reply(INTERFACE_OK),
            CMD_SELF_TEST: self._self_test,
            CMD_KBD_TEST: lambda: self._reply(INTERFACE_OK),
            CMD_KBD_DISABLE: lambda: self._set_ccb(self.ccb | CCB_KBD_DISABLED),
            CMD_KBD_ENABLE: lambda: self._set_ccb(self.ccb & ~CCB_KBD_DISABLED),
            CMD_READ_OUTPUT: lambda: self._reply(self._read_output_port()),
        }
        self._data_commands: dict[int, Callable[[int], None]] = {
            CMD_WRITE_OUTPUT: self._write_output_port,
            CMD_WRITE_KBD_BUFFER: lambda value: self._reply(value),
            CMD_WRITE_AUX_BUFFER: lambda value: self._reply(value, aux=True),
            CMD_WRITE_AUX: self._to_mouse,
        }

    @property
    def ccb(self) -> int:
        """The command byte (controller RAM byte 0)."""
        return self.ram[0]

    @property
    def a20(self) -> bool:
        return bool(self.output_port & OUT_A20)

    def push_keyboard(self, data: bytes) -> None:
        """Bytes from the keyboard (scancodes), as a host key press sends them; dropped while the
        keyboard is not scanning."""
        if self.kbd_scanning:
            self.kbd_queue.extend(data)
            self._refill()

    def push_aux(self, data: bytes) -> None:
        """Bytes from the mouse (movement packets); dropped while it is not reporting."""
        if self.aux_reporting:
            self.aux_queue.extend(data)
            self._refill()

    def _read_status(self) -> int:
        full, aux = self.buffer is not None, self.buffer is not None and self.buffer[1]
        return (
            STATUS_OBF * full
            | STATUS_SYS * bool(self.ccb & CCB_SYS)
            | STATUS_CMD * self.last_was_command
            | STATUS_UNLOCKED
            | STATUS_AUX * aux
        )

    def _read_data(self) -> int:
        if self.buffer is not None:
            self.last_read, self.buffer = self.buffer[0], None
            self._drive(False, False)  # the line drops as the byte is taken: the next byte is a new edge
            self._refill()
        return self.last_read

    def _write_command(self, value: int) -> None:
        self.last_was_command, self.pending = True, None
        if CMD_READ_RAM <= value < CMD_READ_RAM + 0x20:
            self._reply(self.ram[value & 0x1F])
        elif CMD_WRITE_RAM <= value < CMD_WRITE_RAM + 0x20 or value in self._data_commands:
            self.pending = value
        elif value >= CMD_PULSE and not value & OUT_RESET_N:
            self.on_reset()
        elif value in self._commands:
            self._commands[value]()

    def _write_data(self, value: int) -> None:
        self.last_was_command = False
        command, self.pending = self.pending, None
        if command is None:
            self._to_keyboard(value)
        elif command in self._data_commands:
            self._data_commands[command](value)
        else:  # a controller RAM write
            self.ram[command & 0x1F] = value
            self._refill()

    def _set_ccb(self, value: int) -> None:
        self.ram[0] = value
        self._refill()

    def _self_test(self) -> None:
        self.ram[0] |= CCB_SYS
        self._reply(SELF_TEST_PASSED)

    def _read_output_port(self) -> int:
        source = None if self.buffer is None else self.buffer[1]
        obf = OUT_KBD_OBF * (source is False) | OUT_AUX_OBF * (source is True)
        return (self.output_port & ~(OUT_KBD_OBF | OUT_AUX_OBF)) | obf

    def _write_output_port(self, value: int) -> None:
        self.output_port = value
        if not value & OUT_RESET_N:
            self.on_reset()

    def _reply(self, value: int, aux: bool = False) -> None:
        self.replies.append((value, aux))
        self._refill()

    def _to_keyboard(self, value: int) -> None:
        self._set_ccb(self.ccb & ~CCB_KBD_DISABLED)  # writing to the keyboard enables its interface
        argument_of = self.kbd_pending
        reply, self.kbd_pending = _answer(KEYBOARD, value, argument_of)
        if argument_of is None:
            self.kbd_scanning = KEYBOARD.reporting.get(value, self.kbd_scanning)
            if value == KBD_RESET:
                self.kbd_queue.clear()
            if value == KBD_IDENTIFY and self.ccb & CCB_TRANSLATE:
                reply = (ACK, *KBD_ID_TRANSLATED)
        self.kbd_queue.extend(reply)
        self._refill()

    def _to_mouse(self, value: int) -> None:
        self._set_ccb(self.ccb & ~CCB_AUX_DISABLED)  # as does writing to the mouse
        argument_of = self.aux_pending
        reply, self.aux_pending = _answer(MOUSE, value, argument_of)
        if argument_of is None:
            self.aux_reporting = MOUSE.reporting.get(value, self.aux_reporting)
        self.aux_queue.extend(reply)
        self._refill()

    def _refill(self) -> None:
        """Move the next byte into the empty output buffer: controller replies first, then the
        keyboard's and the mouse's, each only while its interface is enabled."""
        if self.buffer is None:
            if self.replies:
                self.buffer = self.replies.popleft()
            elif self.kbd_queue and not self.ccb & CCB_KBD_DISABLED:
                self.buffer = (self.kbd_queue.popleft(), False)
            elif self.aux_queue and not self.ccb & CCB_AUX_DISABLED:
                self.buffer = (self.aux_queue.popleft(), True)
        self._update_irqs()

    def _update_irqs(self) -> None:
        full = self.buffer is not None
        aux = self.buffer is not None and self.buffer[1]
        self._drive(full and not aux and bool(self.ccb & CCB_KBD_INT), aux and bool(self.ccb & CCB_AUX_INT))

    def _drive(self, kbd: bool, aux: bool) -> None:
        old_kbd, old_aux = self._levels
        self._levels = (kbd, aux)
        if kbd != old_kbd:
            self.kbd_irq.set(kbd)
        if aux != old_aux:
            self.aux_irq.set(aux)


def _answer(device: Ps2Device, value: int, argument_of: int | None) -> tuple[tuple[int, ...], int | None]:
    """A PS/2 device's reply to `value`, and the command now awaiting an argument (if any)."""
    if argument_of is not None:
        return (ACK,), None
    if value in device.with_argument:
        return (ACK,), value
    return device.replies.get(value, (RESEND,)), None


class I8042Port:
    """One byte-wide port of the controller."""

    def __init__(self, read: Callable[[], int], write: Callable[[int], None]) -> None:
        self._read, self._write = read, write

    def read(self, offset: int, size: int) -> int:
        return read_lanes(lambda reg: self._read(), PORT_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(lambda reg, byte: self._write(byte), PORT_SPAN, offset, size, value)


class Port92:
    """System control port A (0x92): fast A20 gate (bit 1) and fast reset (bit 0 rising)."""

    def __init__(self, on_reset: Callable[[], None] | None = None) -> None:
        self.on_reset = on_reset or _reset_by("port 0x92")
        self.value = PORT_92_A20

    @property
    def a20(self) -> bool:
        return bool(self.value & PORT_92_A20)

    def read(self, offset: int, size: int) -> int:
        return read_lanes(lambda reg: self.value, PORT_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self._write_reg, PORT_SPAN, offset, size, value)

    def _write_reg(self, reg: int, value: int) -> None:
        rising = value & ~self.value & PORT_92_RESET
        self.value = value
        if rising:
            self.on_reset()
