"""The PC's pair of Intel 8259A interrupt controllers, with the ELCR that makes lines level-triggered.

The master (ports 0x20-0x21) takes ISA IRQs 0-7 and the slave (0xA0-0xA1) IRQs 8-15; the slave's INT
output is wired to the master's IR2. Devices drive lines through `PicPair.set_irq` (an `IrqSink`); the CPU
side is `intr`, `pending_vector()` and `acknowledge()` (the INTA cycle). Each chip and the ELCR are
separate device objects, to be mapped at their base ports.

Choices, where the datasheet leaves room or a PC wires things its own way:
- The cascade input is level-sensitive whatever the ELCR says: the master's IRR2 follows the slave's INT
  output, so a slave request that arrives while another is being acknowledged is never lost.
- A line whose master bit is a cascade input (IR2 on a PC) is driven only by the slave; `set_irq(2, ...)`
  is ignored, as a PC has no device on IRQ2.
- ICW1 restarts edge detection: a line already high must go low and high again to be seen.
- ICW4's 8086/8080 bit and buffered-mode bits are stored nowhere: this is always an x86 PIC. A poll
  command acknowledges on the polled chip alone (the guest polls the slave itself after IR2).
- The power-on state is the PC's wiring (master ICW3 = 0x04, slave ID 2) with vector base 0; a guest
  initializes both chips before unmasking anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from vmmio.devices.lanes import read_lanes, write_lanes

MASTER_PORT = 0x20
SLAVE_PORT = 0xA0
PORT_SPAN = 2  # a chip decodes A0 only
ELCR_PORT = 0x4D0
ELCR_SPAN = 2  # master's lines, then the slave's
CASCADE_IRQ = 2  # master input the slave drives
SPURIOUS_IRQ = 7  # what INTA reports when the request went away

# Register offsets within a chip.
COMMAND = 0  # write ICW1, OCW2, OCW3; read IRR, ISR or the poll byte
DATA = 1  # write ICW2-ICW4, OCW1; read IMR

ICW1 = 0x10  # a command write with this bit is ICW1
ICW1_IC4 = 0x01  # ICW4 follows
ICW1_SNGL = 0x02  # single chip, no ICW3
ICW1_LTIM = 0x08  # every line level-triggered
ICW2_VECTOR = 0xF8
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10  # special fully nested mode
OCW3 = 0x08  # a command write with this bit (and not ICW1) is OCW3
OCW3_RIS = 0x01  # with RR: read ISR rather than IRR
OCW3_RR = 0x02  # act on RIS
OCW3_POLL = 0x04
OCW3_SMM = 0x20  # with ESMM: set (else clear) special mask mode
OCW3_ESMM = 0x40
POLL_REQUEST = 0x80  # poll byte: an interrupt was pending

# ELCR bits that may be set: IRQ 0, 1, 2, 8 and 13 are edge-triggered on a PC (PIIX).
ELCR_WRITABLE = (0xF8, 0xDE)


class Ocw2(NamedTuple):
    """What an OCW2 command (its R, SL, EOI bits) does."""

    eoi: bool  # clear an ISR bit
    specific: bool  # the level field names the IRQ, else the highest-priority in-service one
    rotate: bool  # that IRQ becomes the lowest priority
    aeoi_rotate: bool | None  # set or clear rotation in auto-EOI mode


OCW2_COMMANDS: dict[int, Ocw2] = {
    0b000: Ocw2(eoi=False, specific=False, rotate=False, aeoi_rotate=False),
    0b001: Ocw2(eoi=True, specific=False, rotate=False, aeoi_rotate=None),  # non-specific EOI
    0b010: Ocw2(eoi=False, specific=False, rotate=False, aeoi_rotate=None),  # no operation
    0b011: Ocw2(eoi=True, specific=True, rotate=False, aeoi_rotate=None),  # specific EOI
    0b100: Ocw2(eoi=False, specific=False, rotate=False, aeoi_rotate=True),
    0b101: Ocw2(eoi=True, specific=False, rotate=True, aeoi_rotate=None),  # rotate on non-specific EOI
    0b110: Ocw2(eoi=False, specific=True, rotate=True, aeoi_rotate=None),  # set priority
    0b111: Ocw2(eoi=True, specific=True, rotate=True, aeoi_rotate=None),  # rotate on specific EOI
}


def _nothing() -> None:
    pass


@dataclass
class Pic8259:
    """One 8259A: its registers and modes. A device object for its two ports."""

    master: bool
    irr: int = 0
    isr: int = 0
    imr: int = 0
    pins: int = 0  # input levels as last driven
    elcr: int = 0
    vector_base: int = 0
    icw3: int = 0  # master: inputs with a slave; slave: its cascade ID
    init_step: int = 0  # the ICW expected next (2, 3, 4), or 0 once initialized
    icw4_expected: bool = False
    single: bool = False
    ltim: bool = False
    auto_eoi: bool = False
    rotate_on_aeoi: bool = False
    special_fully_nested: bool = False
    special_mask: bool = False
    read_isr: bool = False
    poll: bool = False
    lowest: int = 7  # the lowest-priority IRQ; the next one up has the highest priority
    changed: Callable[[], None] = field(default=_nothing, repr=False, compare=False)

    @property
    def cascade_inputs(self) -> int:
        return self.icw3 if self.master and not self.single else 0

    @property
    def level_triggered(self) -> int:
        return (0xFF if self.ltim else self.elcr) | self.cascade_inputs

    def _rank(self, irq: int) -> int:
        return (irq - self.lowest - 1) & 7  # 0 is the highest priority

    def _highest(self, bits: int) -> int | None:
        for rank in range(8):
            irq = (self.lowest + 1 + rank) & 7
            if bits >> irq & 1:
                return irq
        return None

    def requested(self) -> int | None:
        """The IRQ this chip asserts INT for: unmasked, and above everything in service."""
        irq = self._highest(self.irr & ~self.imr)
        if irq is None:
            return None
        blocking = self.isr & ~self.imr if self.special_mask else self.isr
        if self.special_fully_nested:
            blocking &= ~self.cascade_inputs
        current = self._highest(blocking)
        return irq if current is None or self._rank(irq) < self._rank(current) else None

    def set_pin(self, pin: int, level: bool) -> None:
        bit = 1 << pin
        if self.level_triggered & bit:
            self.irr = self.irr | bit if level else self.irr & ~bit
        elif level and not self.pins & bit:
            self.irr |= bit
        self.pins = self.pins | bit if level else self.pins & ~bit

    def ack(self, irq: int) -> None:
        """The INTA cycle for `irq`: into service (unless auto-EOI), and an edge request is consumed."""
        bit = 1 << irq
        if not self.auto_eoi:
            self.isr |= bit
        elif self.rotate_on_aeoi:
            self.lowest = irq
        if not self.level_triggered & bit:
            self.irr &= ~bit

    def cascades(self, irq: int) -> bool:
        return bool(self.cascade_inputs >> irq & 1)

    def read(self, offset: int, size: int) -> int:
        return read_lanes(self._read_reg, PORT_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self._write_reg, PORT_SPAN, offset, size, value)

    def _read_reg(self, reg: int) -> int:
        if reg == DATA:
            return self.imr
        if self.poll:
            self.poll = False
            irq = self.requested()
            if irq is None:
                return 0
            self.ack(irq)
            self.changed()
            return POLL_REQUEST | irq
        return self.isr if self.read_isr else self.irr

    def _write_reg(self, reg: int, value: int) -> None:
        if reg == DATA and self.init_step:
            self._icw(value)
        elif reg == DATA:
            self.imr = value
        elif value & ICW1:
            self._icw1(value)
        elif value & OCW3:
            self._ocw3(value)
        else:
            self._ocw2(value)
        self.changed()

    def _icw1(self, value: int) -> None:
        self.isr = self.imr = 0
        self.ltim = bool(value & ICW1_LTIM)
        self.single = bool(value & ICW1_SNGL)
        self.icw4_expected = bool(value & ICW1_IC4)
        self.auto_eoi = self.rotate_on_aeoi = self.special_fully_nested = False
        self.special_mask = self.read_isr = self.poll = False
        self.lowest = 7
        self.irr = self.pins & self.level_triggered  # edge requests are forgotten
        self.init_step = 2

    def _icw(self, value: int) -> None:
        if self.init_step == 2:
            self.vector_base = value & ICW2_VECTOR
            self.init_step = 3 if not self.single else 4 if self.icw4_expected else 0
        elif self.init_step == 3:
            self.icw3 = value
            self.init_step = 4 if self.icw4_expected else 0
        else:
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self.init_step = 0

    def _ocw2(self, value: int) -> None:
        command = OCW2_COMMANDS[value >> 5]
        if command.aeoi_rotate is not None:
            self.rotate_on_aeoi = command.aeoi_rotate
        irq = value & 7 if command.specific else self._highest(self.isr)
        if irq is None:
            return
        if command.eoi:
            self.isr &= ~(1 << irq)
        if command.rotate:
            self.lowest = irq

    def _ocw3(self, value: int) -> None:
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
        if value & OCW3_RR:
            self.read_isr = bool(value & OCW3_RIS)
        self.poll = bool(value & OCW3_POLL)


class Elcr:
    """The edge/level control registers (ports 0x4D0-0x4D1): a set bit makes that IRQ level-triggered."""

    def __init__(self, pair: PicPair) -> None:
        self._pair = pair

    def read(self, offset: int, size: int) -> int:
        return read_lanes(lambda reg: self._pair.chips[reg].elcr, ELCR_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self._write_reg, ELCR_SPAN, offset, size, value)

    def _write_reg(self, reg: int, value: int) -> None:
        chip = self._pair.chips[reg]
        chip.elcr = value & ELCR_WRITABLE[reg]
        level = chip.level_triggered
        chip.irr = (chip.irr & ~level) | (chip.pins & level)
        self._pair.sync()


class PicPair:
    """Master and slave 8259A as a PC wires them; an `IrqSink` for ISA IRQs 0-15.

    `on_intr`, if given, is called with the new level whenever the INTR output changes.
    """

    def __init__(self, on_intr: Callable[[bool], None] | None = None) -> None:
        self.master = Pic8259(master=True, icw3=1 << CASCADE_IRQ, changed=self.sync)
        self.slave = Pic8259(master=False, icw3=CASCADE_IRQ, changed=self.sync)
        self.chips = (self.master, self.slave)
        self.elcr = Elcr(self)
        self._on_intr = on_intr
        self._intr = False

    @property
    def intr(self) -> bool:
        """Whether the master asserts INTR to the CPU."""
        return self._intr

    def set_irq(self, line: int, level: bool) -> None:
        if not 0 <= line < 16:
            return
        chip, pin = self.chips[line >> 3], line & 7
        if chip.cascades(pin):
            return
        chip.set_pin(pin, level)
        self.sync()

    def sync(self) -> None:
        """Propagate the slave's INT to the master's cascade input, then INTR to the CPU."""
        slave_int = self.slave.requested() is not None
        for pin in range(8):
            if self.master.cascades(pin):
                self.master.set_pin(pin, slave_int)
        intr = self.master.requested() is not None
        if intr != self._intr:
            self._intr = intr
            if self._on_intr is not None:
                self._on_intr(intr)

    def pending_vector(self) -> int | None:
        """The vector an INTA cycle would return now, or None when INTR is not asserted."""
        irq = self.master.requested()
        if irq is None:
            return None
        if self.master.cascades(irq):
            slave_irq = self.slave.requested()
            return self.slave.vector_base + (SPURIOUS_IRQ if slave_irq is None else slave_irq)
        return self.master.vector_base + irq

    def acknowledge(self) -> int:
        """The INTA cycle: the chosen request goes in service and its vector is returned.

        With nothing requested the master answers its IRQ7 vector without setting ISR (a spurious
        interrupt); a slave with nothing to say answers its own IRQ7 vector, with the master's IR2 in
        service all the same, as the hardware does.
        """
        irq = self.master.requested()
        if irq is None:
            return self.master.vector_base + SPURIOUS_IRQ
        vector = self.master.vector_base + irq
        if self.master.cascades(irq):
            slave_irq = self.slave.requested()
            if slave_irq is None:
                vector = self.slave.vector_base + SPURIOUS_IRQ
            else:
                self.slave.ack(slave_irq)
                vector = self.slave.vector_base + slave_irq
        self.master.ack(irq)
        self.sync()
        return vector

    def state(self) -> tuple[Pic8259, Pic8259]:
        """Copies of both chips' state, to print or compare."""
        return replace(self.master), replace(self.slave)
