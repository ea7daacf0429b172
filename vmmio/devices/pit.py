"""Intel 8254 programmable interval timer (ports 0x40-0x43) and the PC's system control port B (0x61).

Counters are derived from the clock, never ticked: a channel remembers the input-clock tick its count
started at, and its count and OUT level at any later tick follow from its mode. Channel 0's OUT drives
IRQ0 (one pulse per OUT rising edge: each period in modes 2 and 3, once at terminal count in modes 0, 1,
4 and 5); channel 2's gate is port B bit 0 and its OUT is readable at port B bit 5.

Choices and omissions:
- The count is loaded at once on the write (the real chip takes one more input clock) and a new count
  written in mode 2 or 3 restarts counting at once (the chip waits for the end of the current period).
- BCD counting is modelled (period 10000 for a count of 0); a BCD count with a nibble above 9 counts at
  face value.
- Interrupts collapse: however many periods passed since the last `update()`, IRQ0 gets one pulse. OUT
  changes made by the control word itself (mode 0 driving OUT low, say) send no edge to IRQ0.
- At power-on every channel runs mode 3 with a count of 65536 (channel 2 held by its gate), the state a
  PC BIOS leaves; so IRQ0 ticks at 18.2 Hz until the guest reprograms channel 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import NamedTuple

from vmmio.devices.bcd import from_bcd, to_bcd
from vmmio.devices.clock import Clock, ns_at_tick, ticks_at
from vmmio.devices.irq import NO_IRQ, IrqLine
from vmmio.devices.lanes import OPEN_BUS, read_lanes, write_lanes

PIT_PORT = 0x40
PIT_SPAN = 4
PORT_B = 0x61
PORT_B_SPAN = 1
PIT_HZ = 1_193_182

CONTROL = 3  # offsets 0-2 are the counters

# Control word: SC1 SC0 RW1 RW0 M2 M1 M0 BCD.
CW_SELECT_SHIFT = 6
CW_ACCESS_SHIFT = 4
CW_MODE_SHIFT = 1
CW_BCD = 0x01
READ_BACK = 3  # select field of the read-back command
RB_COUNT_N = 0x20  # read-back: clear to latch the counts
RB_STATUS_N = 0x10  # read-back: clear to latch the status bytes
STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40

ACCESS_LATCH, ACCESS_LSB, ACCESS_MSB, ACCESS_WORD = range(4)

PORT_B_GATE2 = 0x01
PORT_B_WRITABLE = 0x0F  # gate 2, speaker enable, parity and channel check enables
PORT_B_REFRESH = 0x10
PORT_B_OUT2 = 0x20


class Gate(Enum):
    PAUSE = "low gate pauses counting"
    TRIGGER = "rising gate starts counting"
    RESTART = "low gate stops and holds OUT high, rising gate restarts"


def _square_out(t: int, n: int) -> bool:
    return t % n < (n + 1) // 2


def _square_count(t: int, n: int) -> int:
    phase, high = t % n, (n + 1) // 2
    return (n & ~1) - 2 * (phase if phase < high else phase - high)


class Mode(NamedTuple):
    """A counter mode, as functions of t (input clocks since counting began) and the count n."""

    out: Callable[[int, int], bool]
    counter: Callable[[int, int], int]  # before wrapping to the counter's modulus
    first_rise: Callable[[int], int | None]  # t of OUT's first rising edge
    periodic: bool  # OUT rises again every n clocks
    gate: Gate
    idle_out: bool  # OUT before counting begins


_ONE_SHOT = Mode(
    out=lambda t, n: t >= n,
    counter=lambda t, n: n - t,
    first_rise=lambda n: n,
    periodic=False,
    gate=Gate.PAUSE,
    idle_out=False,
)
_RATE = Mode(
    out=lambda t, n: t % n != n - 1,
    counter=lambda t, n: n - t % n,
    first_rise=lambda n: n if n > 1 else None,
    periodic=True,
    gate=Gate.RESTART,
    idle_out=True,
)
_STROBE = Mode(
    out=lambda t, n: t != n,
    counter=lambda t, n: n - t,
    first_rise=lambda n: n + 1,
    periodic=False,
    gate=Gate.PAUSE,
    idle_out=True,
)
_SQUARE = _RATE._replace(out=_square_out, counter=_square_count)

MODES: dict[int, Mode] = {
    0: _ONE_SHOT,  # interrupt on terminal count
    1: _ONE_SHOT._replace(gate=Gate.TRIGGER, idle_out=True),  # hardware retriggerable one-shot
    2: _RATE,  # rate generator
    3: _SQUARE,  # square wave
    4: _STROBE,  # software triggered strobe
    5: _STROBE._replace(gate=Gate.TRIGGER),  # hardware triggered strobe
    6: _RATE,  # 6 and 7 are 2 and 3 with a don't-care bit
    7: _SQUARE,
}


@dataclass
class PitChannel:
    """One counter. Times are in input-clock ticks since the clock's 0."""

    gate: bool = True
    mode: int = 0
    access: int = ACCESS_WORD
    bcd: bool = False
    reload: int = 0  # the count register as written (BCD digits when bcd)
    loaded: bool = False  # a count was written since the control word
    started: bool = False  # counting began (gate-triggered modes wait for the gate)
    n: int = 0x10000  # the count in effect since counting began
    done: int = 0  # ticks counted before the current run
    run_from: int | None = None  # tick the current run began at; None while not counting
    fired: int = 0  # OUT rising edges already sent as interrupts
    null_count: bool = True
    write_lsb: int | None = None  # low byte of a word count, awaiting its high byte
    read_msb: bool = False  # the next unlatched word read returns the high byte
    latched_count: tuple[int, ...] = ()
    latched_status: int | None = None

    @property
    def behaviour(self) -> Mode:
        return MODES[self.mode]

    @property
    def modulus(self) -> int:
        return 10000 if self.bcd else 0x10000

    def elapsed(self, tick: int) -> int:
        return self.done + (tick - self.run_from if self.run_from is not None else 0)

    def out(self, tick: int) -> bool:
        mode = self.behaviour
        if not self.started:
            return mode.idle_out
        if mode.gate is Gate.RESTART and not self.gate:
            return True
        return mode.out(self.elapsed(tick), self.n)

    def _written(self) -> int:
        return (from_bcd(self.reload) if self.bcd else self.reload) or self.modulus

    def count(self, tick: int) -> int:
        value = self.behaviour.counter(self.elapsed(tick), self.n) if self.started else self._written()
        value %= self.modulus
        return to_bcd(value) if self.bcd else value

    def rises(self, tick: int) -> int:
        """OUT rising edges since counting began."""
        mode, t = self.behaviour, self.elapsed(tick)
        first = mode.first_rise(self.n)
        if not self.started or first is None or t < first:
            return 0
        return t // self.n if mode.periodic else 1

    def next_rise_tick(self) -> int | None:
        """The tick of the first OUT rising edge not yet sent as an interrupt, or None."""
        mode = self.behaviour
        first = mode.first_rise(self.n)
        if self.run_from is None or not self.started or first is None:
            return None
        if self.fired and not mode.periodic:
            return None
        t = (self.fired + 1) * self.n if mode.periodic else first
        return self.run_from + t - self.done

    def write_control(self, mode: int, access: int, bcd: bool) -> None:
        self.mode, self.access, self.bcd = mode, access, bcd
        self.loaded = self.started = False
        self.run_from, self.done, self.fired = None, 0, 0
        self.null_count, self.write_lsb, self.read_msb = True, None, False
        self.latched_count, self.latched_status = (), None

    def write_count(self, byte: int, tick: int) -> None:
        if self.access == ACCESS_LSB:
            self._load(byte, tick)
        elif self.access == ACCESS_MSB:
            self._load(byte << 8, tick)
        elif self.write_lsb is None:
            self.write_lsb, self.null_count = byte, True
        else:
            self._load(self.write_lsb | byte << 8, tick)
            self.write_lsb = None

    def _load(self, value: int, tick: int) -> None:
        self.reload, self.loaded, self.null_count = value, True, False
        if self.behaviour.gate is not Gate.TRIGGER:
            self._start(tick)

    def _start(self, tick: int) -> None:
        self.started, self.done, self.fired, self.n = True, 0, 0, self._written()
        self.run_from = tick if self.gate else None

    def set_gate(self, level: bool, tick: int) -> None:
        if level == self.gate:
            return
        self.gate = level
        gate = self.behaviour.gate
        if gate is Gate.PAUSE and self.started and level:
            self.run_from = tick
        elif level and self.loaded and gate is not Gate.PAUSE:
            self._start(tick)
        elif not level and self.started and gate is not Gate.TRIGGER:
            self.done, self.run_from = self.elapsed(tick), None

    def latch_count(self, tick: int) -> None:
        if self.latched_count:
            return  # the first latch holds until read
        value = self.count(tick)
        lsb, msb = value & 0xFF, value >> 8
        self.latched_count = {ACCESS_LSB: (lsb,), ACCESS_MSB: (msb,)}.get(self.access, (lsb, msb))

    def latch_status(self, tick: int) -> None:
        if self.latched_status is None:
            self.latched_status = (
                STATUS_OUT * self.out(tick)
                | STATUS_NULL_COUNT * self.null_count
                | self.access << CW_ACCESS_SHIFT
                | self.mode << CW_MODE_SHIFT
                | CW_BCD * self.bcd
            )

    def read(self, tick: int) -> int:
        if self.latched_status is not None:
            value, self.latched_status = self.latched_status, None
            return value
        if self.latched_count:
            value, self.latched_count = self.latched_count[0], self.latched_count[1:]
            return value
        value = self.count(tick)
        if self.access == ACCESS_WORD:
            msb, self.read_msb = self.read_msb, not self.read_msb
            return value >> 8 if msb else value & 0xFF
        return value >> 8 if self.access == ACCESS_MSB else value & 0xFF


class Pit8254:
    """The timer chip: three channels behind ports 0x40-0x43; `port_b` is port 0x61's device."""

    def __init__(self, clock: Clock, irq: IrqLine = NO_IRQ) -> None:
        self.clock = clock
        self.irq = irq
        tick = self._tick()
        self.channels = tuple(PitChannel(gate=channel != 2) for channel in range(3))
        for channel in self.channels:
            channel.write_control(3, ACCESS_WORD, False)
            channel.write_count(0, tick)
            channel.write_count(0, tick)
        self.port_b = PortB(self)

    def _tick(self) -> int:
        return ticks_at(self.clock.now_ns(), PIT_HZ)

    def read(self, offset: int, size: int) -> int:
        return read_lanes(self._read_reg, PIT_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self._write_reg, PIT_SPAN, offset, size, value)

    def _read_reg(self, reg: int) -> int:
        return OPEN_BUS if reg == CONTROL else self.channels[reg].read(self._tick())

    def _write_reg(self, reg: int, value: int) -> None:
        self.update()  # what fell due under the old programming is raised first
        tick = self._tick()
        if reg != CONTROL:
            self.channels[reg].write_count(value, tick)
            return
        select, access = value >> CW_SELECT_SHIFT, (value >> CW_ACCESS_SHIFT) & 3
        if select == READ_BACK:
            for index, channel in enumerate(self.channels):
                if value & (2 << index):
                    if not value & RB_STATUS_N:
                        channel.latch_status(tick)
                    if not value & RB_COUNT_N:
                        channel.latch_count(tick)
        elif access == ACCESS_LATCH:
            self.channels[select].latch_count(tick)
        else:
            self.channels[select].write_control((value >> CW_MODE_SHIFT) & 7, access, bool(value & CW_BCD))

    def set_gate(self, channel: int, level: bool) -> None:
        self.update()
        self.channels[channel].set_gate(level, self._tick())

    def out(self, channel: int) -> bool:
        return self.channels[channel].out(self._tick())

    def next_deadline_ns(self) -> int | None:
        tick = self.channels[0].next_rise_tick()
        return None if tick is None else ns_at_tick(tick, PIT_HZ)

    def update(self) -> None:
        channel = self.channels[0]
        rises = channel.rises(self._tick())
        if rises > channel.fired:
            channel.fired = rises
            self.irq.pulse()

    def state(self) -> tuple[PitChannel, ...]:
        """Copies of the three channels, to print or compare."""
        return tuple(replace(channel) for channel in self.channels)


class PortB:
    """System control port B (0x61): channel 2's gate and speaker enable in, OUT2 and refresh out.

    Bit 4 toggles on every read, so a firmware delay loop that waits for it never hangs.
    """

    def __init__(self, pit: Pit8254) -> None:
        self._pit = pit
        self.control = 0
        self._refresh = False

    def read(self, offset: int, size: int) -> int:
        return read_lanes(self._read_reg, PORT_B_SPAN, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        write_lanes(self._write_reg, PORT_B_SPAN, offset, size, value)

    def _read_reg(self, reg: int) -> int:
        self._refresh = not self._refresh
        return self.control | PORT_B_REFRESH * self._refresh | PORT_B_OUT2 * self._pit.out(2)

    def _write_reg(self, reg: int, value: int) -> None:
        self.control = value & PORT_B_WRITABLE
        self._pit.set_gate(2, bool(value & PORT_B_GATE2))
