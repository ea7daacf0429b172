"""Local APIC register page (xAPIC MMIO, 4 KiB at 0xFEE00000): priorities, interrupt acceptance, IPIs
and the timer.

The CPU side is `accept()` (an interrupt arrives), `pending_vector()` (what would be delivered now,
after TPR and what is in service) and `acknowledge()` (the CPU takes it: IRR to ISR). A guest EOI
retires the highest in-service vector; when that vector was level-triggered it is appended to
`level_eois` for the machine to pass on to the I/O APIC.

Writing ICR low sends an IPI at once, so the delivery status bit always reads idle. A fixed IPI that
reaches this APIC (shorthand self or all, or a destination naming it) is accepted here; every IPI that
goes anywhere else, or is not fixed (INIT, SIPI, NMI, ...), is appended to `sent_ipis` for the machine.

The timer counts at `timer_hz` (1 GHz by default, as KVM's) divided by the divide configuration; its
current count and expiry are computed from the clock. One-shot and periodic modes only: TSC-deadline
mode is not supported (LVT timer bit 18 is not writable, and CPUID should not advertise it). A mode or
divider change carries the current count over, as kvm-unit-tests' apic test expects.

Accesses: the page reads as if each register sat in the low 4 bytes of its 16-byte slot and the other 12
bytes were zero, so byte, word and wider reads see parts of registers; only aligned 4-byte writes take
effect, others are ignored (KVM's choice; the SDM leaves them undefined). Reserved registers read 0 and
ignore writes. x2APIC (the MSR interface) is the CPU model's business, not this page's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from vmmio.devices.clock import NS_PER_S, Clock
from vmmio.devices.lanes import MAX_LANES

LAPIC_BASE = 0xFEE0_0000
LAPIC_SIZE = 0x1000
SLOT = 0x10  # register stride
REGISTER_BYTES = 4

ID = 0x20
VERSION = 0x30
TPR = 0x80
APR = 0x90
PPR = 0xA0
EOI = 0xB0
RRD = 0xC0
LDR = 0xD0
DFR = 0xE0
SVR = 0xF0
ISR = 0x100  # 8 words each: vectors 0-31 in the first
TMR = 0x180
IRR = 0x200
ESR = 0x280
ICR_LOW = 0x300
ICR_HIGH = 0x310
LVT_TIMER = 0x320
LVT_THERMAL = 0x330
LVT_PERF = 0x340
LVT_LINT0 = 0x350
LVT_LINT1 = 0x360
LVT_ERROR = 0x370
TIMER_INITIAL = 0x380
TIMER_CURRENT = 0x390
TIMER_DIVIDE = 0x3E0

VERSION_VALUE = 0x0005_0014  # integrated APIC version 0x14, six LVT entries
MASK32 = 0xFFFF_FFFF
ID_SHIFT = 24  # the ID, LDR and ICR destination fields are the top byte
TOP_BYTE = 0xFF00_0000
DFR_MODEL = 0xF000_0000
DFR_FLAT = 0xF000_0000
DFR_RESERVED_ONES = 0x0FFF_FFFF
SVR_VECTOR = 0xFF
SVR_ENABLE = 0x100
SVR_WRITABLE = 0x3FF  # vector, software enable, focus check; no EOI-broadcast suppression
SVR_RESET = 0xFF

LVT_VECTOR = 0xFF
LVT_MASKED = 0x1_0000
LVT_PERIODIC = 0x2_0000
LVT_WRITABLE = {
    LVT_TIMER: 0x3_00FF,  # vector, mask, periodic (not TSC-deadline)
    LVT_THERMAL: 0x1_07FF,  # vector, delivery mode, mask
    LVT_PERF: 0x1_07FF,
    LVT_LINT0: 0x1_A7FF,  # vector, delivery mode, polarity, trigger mode, mask
    LVT_LINT1: 0x1_A7FF,
    LVT_ERROR: 0x1_00FF,
}

ICR_VECTOR = 0xFF
ICR_MODE_SHIFT = 8
ICR_LOGICAL = 0x800
ICR_ASSERT = 0x4000
ICR_LEVEL_TRIGGERED = 0x8000
ICR_SHORTHAND_SHIFT = 18
ICR_WRITABLE = 0xC_CFFF  # all but delivery status (bit 12) and remote read status
DELIVERY_FIXED = 0
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = range(4)
BROADCAST = 0xFF

ESR_SEND_ILLEGAL_VECTOR = 0x20
ESR_RECEIVE_ILLEGAL_VECTOR = 0x40
FIRST_LEGAL_VECTOR = 16

DIVIDE_WRITABLE = 0xB
DIVIDE_BY = (2, 4, 8, 16, 32, 64, 128, 1)  # by divide configuration bits 3, 1, 0
TIMER_HZ = 1_000_000_000


@dataclass(frozen=True)
class Ipi:
    """An interprocessor interrupt as the ICR named it."""

    vector: int
    delivery_mode: int  # 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 start-up
    logical: bool
    assert_: bool
    level_triggered: bool
    shorthand: int  # SHORTHAND_*
    destination: int  # ICR high's top byte

    @classmethod
    def from_icr(cls, low: int, high: int) -> Ipi:
        return cls(
            vector=low & ICR_VECTOR,
            delivery_mode=(low >> ICR_MODE_SHIFT) & 7,
            logical=bool(low & ICR_LOGICAL),
            assert_=bool(low & ICR_ASSERT),
            level_triggered=bool(low & ICR_LEVEL_TRIGGERED),
            shorthand=(low >> ICR_SHORTHAND_SHIFT) & 3,
            destination=high >> ID_SHIFT,
        )


@dataclass(frozen=True)
class LapicState:
    apic_id: int
    tpr: int
    ldr: int
    dfr: int
    svr: int
    irr: int
    isr: int
    tmr: int
    esr: int
    icr_low: int
    icr_high: int
    lvt: tuple[int, ...]  # timer, thermal, perf, LINT0, LINT1, error
    timer_initial: int
    timer_divide: int


class LocalApic:
    """One CPU's local APIC: the MMIO page and the CPU-facing interrupt interface."""

    def __init__(self, clock: Clock, apic_id: int = 0, timer_hz: int = TIMER_HZ) -> None:
        self.clock = clock
        self.apic_id = apic_id & 0xFF
        self.timer_hz = timer_hz
        self.tpr = 0
        self.ldr = 0
        self.dfr = MASK32
        self.svr = SVR_RESET
        self.irr = self.isr = self.tmr = 0  # 256-bit vector sets
        self.esr = 0
        self._esr_pending = 0  # errors since the last ESR write
        self.icr_low = self.icr_high = 0
        self.lvt = dict.fromkeys(LVT_WRITABLE, LVT_MASKED)
        self.timer_initial = 0
        self.timer_divide = 0
        self._timer_start = clock.now_ns()  # the clock time counting (re)started at
        self._timer_first = 0  # counts from then to the first expiry; 0 when stopped
        self._timer_expired = 0  # expirations since then already handled
        self.sent_ipis: list[Ipi] = []
        self.level_eois: list[int] = []
        self._readers: dict[int, Callable[[], int]] = {
            ID: lambda: self.apic_id << ID_SHIFT,
            VERSION: lambda: VERSION_VALUE,
            TPR: lambda: self.tpr,
            APR: self._apr,
            PPR: self._ppr,
            EOI: lambda: 0,
            RRD: lambda: 0,
            LDR: lambda: self.ldr,
            DFR: lambda: self.dfr,
            SVR: lambda: self.svr,
            ESR: lambda: self.esr,
            ICR_LOW: lambda: self.icr_low,
            ICR_HIGH: lambda: self.icr_high,
            TIMER_INITIAL: lambda: self.timer_initial,
            TIMER_CURRENT: self._timer_current,
            TIMER_DIVIDE: lambda: self.timer_divide,
        }
        for word in range(8):
            self._readers[ISR + SLOT * word] = partial(self._word, "isr", word)
            self._readers[TMR + SLOT * word] = partial(self._word, "tmr", word)
            self._readers[IRR + SLOT * word] = partial(self._word, "irr", word)
        for reg in LVT_WRITABLE:
            self._readers[reg] = partial(self.lvt.__getitem__, reg)
        self._writers: dict[int, Callable[[int], None]] = {
            ID: lambda value: self._store("apic_id", value >> ID_SHIFT),
            TPR: lambda value: self._store("tpr", value & 0xFF),
            EOI: lambda value: self._eoi(),
            LDR: lambda value: self._store("ldr", value & TOP_BYTE),
            DFR: lambda value: self._store("dfr", value & DFR_MODEL | DFR_RESERVED_ONES),
            SVR: self._write_svr,
            ESR: lambda value: self._write_esr(),
            ICR_LOW: self._write_icr,
            ICR_HIGH: lambda value: self._store("icr_high", value & TOP_BYTE),
            TIMER_INITIAL: self._write_initial,
            TIMER_DIVIDE: self._write_divide,
        }
        for reg in LVT_WRITABLE:
            self._writers[reg] = partial(self._write_lvt, reg)

    # The page.

    def read(self, offset: int, size: int) -> int:
        if size == REGISTER_BYTES and offset % SLOT == 0:
            return self._read_reg(offset)
        value, slots = 0, dict[int, int]()
        for lane in range(min(max(size, 0), MAX_LANES)):
            byte = offset + lane
            if byte % SLOT < REGISTER_BYTES:
                slot = byte - byte % SLOT
                if slot not in slots:
                    slots[slot] = self._read_reg(slot)
                value |= (slots[slot] >> 8 * (byte % SLOT) & 0xFF) << 8 * lane
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        writer = self._writers.get(offset) if size == REGISTER_BYTES else None
        if writer is not None:
            writer(value & MASK32)

    def _read_reg(self, slot: int) -> int:
        reader = self._readers.get(slot)
        return reader() if reader is not None else 0

    def _store(self, name: str, value: int) -> None:
        setattr(self, name, value)

    def _word(self, name: str, word: int) -> int:
        bits: int = getattr(self, name)
        return bits >> (32 * word) & MASK32

    # Priorities and interrupts.

    @property
    def enabled(self) -> bool:
        """Software-enabled (SVR bit 8): a disabled APIC accepts no fixed interrupts."""
        return bool(self.svr & SVR_ENABLE)

    def _ppr(self) -> int:
        isrv = max(self.isr.bit_length() - 1, 0)
        return self.tpr if self.tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    def _apr(self) -> int:
        irrv, isrv = max(self.irr.bit_length() - 1, 0), max(self.isr.bit_length() - 1, 0)
        if self.tpr >> 4 >= irrv >> 4 and self.tpr >> 4 > isrv >> 4:
            return self.tpr
        return max(self.tpr & 0xF0, isrv & 0xF0, irrv & 0xF0)

    def accept(self, vector: int, level_triggered: bool = False) -> bool:
        """An interrupt arrives; False if it was refused (illegal vector, APIC disabled)."""
        vector &= 0xFF
        if vector < FIRST_LEGAL_VECTOR:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return False
        if not self.enabled:
            return False
        bit = 1 << vector
        self.irr |= bit
        self.tmr = self.tmr | bit if level_triggered else self.tmr & ~bit
        return True

    def pending_vector(self) -> int | None:
        """The highest requested vector if its priority class is above the processor priority."""
        if not self.enabled or not self.irr:
            return None
        vector = self.irr.bit_length() - 1
        return vector if vector >> 4 > self._ppr() >> 4 else None

    def acknowledge(self) -> int:
        """The CPU takes the pending vector into service; with none, the spurious vector (SVR)."""
        vector = self.pending_vector()
        if vector is None:
            return self.svr & SVR_VECTOR
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    def _eoi(self) -> None:
        if not self.isr:
            return
        vector = self.isr.bit_length() - 1
        self.isr &= ~(1 << vector)
        if self.tmr >> vector & 1:
            self.level_eois.append(vector)

    def _error(self, bit: int) -> None:
        """Record an error for the next ESR write; the error LVT fires once per new error kind."""
        new = bit & ~self._esr_pending
        self._esr_pending |= bit
        entry = self.lvt[LVT_ERROR]
        if new and not entry & LVT_MASKED:
            self.accept(entry & LVT_VECTOR)

    def _write_esr(self) -> None:
        self.esr, self._esr_pending = self._esr_pending, 0

    def _write_svr(self, value: int) -> None:
        self.update()
        self.svr = value & SVR_WRITABLE
        if not self.enabled:
            for reg in self.lvt:
                self.lvt[reg] |= LVT_MASKED

    def _write_lvt(self, reg: int, value: int) -> None:
        value &= LVT_WRITABLE[reg]
        if not self.enabled:
            value |= LVT_MASKED
        if reg != LVT_TIMER:
            self.lvt[reg] = value
            return
        self.update()  # expirations so far fall under the old entry
        current, mode_changed = self._timer_current(), (self.lvt[reg] ^ value) & LVT_PERIODIC
        self.lvt[reg] = value
        if mode_changed:
            self._restart_timer(current)

    # IPIs.

    def _write_icr(self, value: int) -> None:
        self.icr_low = value & ICR_WRITABLE
        ipi = Ipi.from_icr(self.icr_low, self.icr_high)
        if ipi.delivery_mode == DELIVERY_FIXED and ipi.vector < FIRST_LEGAL_VECTOR:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        to_self, to_others = self._targets(ipi)
        here = to_self and ipi.delivery_mode == DELIVERY_FIXED
        if here:
            self.accept(ipi.vector, ipi.level_triggered)
        if to_others or (to_self and not here):
            self.sent_ipis.append(ipi)

    def _targets(self, ipi: Ipi) -> tuple[bool, bool]:
        """Whether `ipi` reaches this APIC, and whether it may reach others."""
        if ipi.shorthand != SHORTHAND_NONE:
            return ipi.shorthand in (SHORTHAND_SELF, SHORTHAND_ALL), ipi.shorthand != SHORTHAND_SELF
        if not ipi.logical:
            return ipi.destination in (self.apic_id, BROADCAST), ipi.destination != self.apic_id
        logical_id = self.ldr >> ID_SHIFT
        if self.dfr & DFR_MODEL == DFR_FLAT:
            return bool(logical_id & ipi.destination), True
        same_cluster = logical_id >> 4 == ipi.destination >> 4
        return same_cluster and bool(logical_id & ipi.destination & 0xF), True

    # The timer.

    def _divide(self) -> int:
        return DIVIDE_BY[(self.timer_divide & 3) | (self.timer_divide >> 1 & 4)]

    def _periodic(self) -> bool:
        return bool(self.lvt[LVT_TIMER] & LVT_PERIODIC)

    def _counts(self) -> int:
        elapsed = self.clock.now_ns() - self._timer_start
        return elapsed * self.timer_hz // (NS_PER_S * self._divide())

    def _timer_current(self) -> int:
        counts, first, initial = self._counts(), self._timer_first, self.timer_initial
        if not first:
            return 0
        if counts < first:
            return first - counts
        return initial - (counts - first) % initial if self._periodic() and initial else 0

    def _expirations(self) -> int:
        counts, first, initial = self._counts(), self._timer_first, self.timer_initial
        if not first or counts < first:
            return 0
        return 1 + (counts - first) // initial if self._periodic() and initial else 1

    def _restart_timer(self, first: int) -> None:
        self._timer_start, self._timer_first, self._timer_expired = self.clock.now_ns(), first, 0

    def _write_initial(self, value: int) -> None:
        self.update()
        self.timer_initial = value
        self._restart_timer(value)

    def _write_divide(self, value: int) -> None:
        self.update()
        current = self._timer_current()
        self.timer_divide = value & DIVIDE_WRITABLE
        self._restart_timer(current)

    def next_deadline_ns(self) -> int | None:
        """When the timer next fires an unmasked interrupt, or None."""
        if not self._timer_first or self.lvt[LVT_TIMER] & LVT_MASKED:
            return None
        if self._timer_expired and not (self._periodic() and self.timer_initial):
            return None
        counts = self._timer_first + self._timer_expired * self.timer_initial
        return self._timer_start - (-counts * NS_PER_S * self._divide() // self.timer_hz)

    def update(self) -> None:
        """Deliver the timer interrupt if it expired since the last look (several expirations: one)."""
        expirations = self._expirations()
        if expirations > self._timer_expired:
            self._timer_expired = expirations
            entry = self.lvt[LVT_TIMER]
            if not entry & LVT_MASKED:
                self.accept(entry & LVT_VECTOR)

    def state(self) -> LapicState:
        return LapicState(
            self.apic_id,
            self.tpr,
            self.ldr,
            self.dfr,
            self.svr,
            self.irr,
            self.isr,
            self.tmr,
            self.esr,
            self.icr_low,
            self.icr_high,
            tuple(self.lvt.values()),
            self.timer_initial,
            self.timer_divide,
        )
