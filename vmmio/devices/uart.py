"""A 16550A UART: a guest prints through it, reads host input from it and takes interrupts from it.

Reachable by port I/O (stride 1, the PC's COM ports) or by MMIO (any register stride); one register per
access whatever its size. Output bytes go to `sink`, by default standard output, and the last
`output_limit` of them are kept in `output`. The transmitter is infinitely fast: THR is empty again as
soon as it is written, so LSR always shows THRE and TEMT, and the THRE interrupt re-arms after each byte.

Linux's 8250 driver detects a 16550A from this: IER keeps only its 4 defined bits (so bit 6 reads back
0), IIR reports FIFOs (bits 7-6 = 0b11, bit 5 clear) once FCR enables them, loopback (MCR bit 4) maps
DTR, RTS, OUT1, OUT2 onto DSR, CTS, RI, DCD and sends transmitted bytes to the receiver, and enabling the
THRE interrupt while THR is empty raises it again (the driver's "THRE re-assert" test).

Interrupt sources, highest first: line status (an overrun), received data, THR empty, modem status.
IRQ (`irq`) follows "some enabled source is pending"; OUT2 does not gate it (as in QEMU). Host input
given to `feed` is never overrun (the host side waits, as QEMU's chardev flow control does), so the
receive queue may hold more than the 16-byte FIFO; bytes sent in loopback do overrun a full FIFO.
Clearing the receive FIFO (FCR) drops fed input the guest had not read.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable

from vmmio.devices.irq import NO_IRQ, IrqLine
from vmmio.devices.lanes import mask

# Register numbers (before the stride is applied).
RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
DLL, DLM = RBR_THR, IER  # while LCR.DLAB is set

IER_RDA = 0x01  # received data available
IER_THRE = 0x02  # transmit holding register empty
IER_RLS = 0x04  # receiver line status
IER_MS = 0x08  # modem status
IER_WRITABLE = 0x0F
IIR_NO_INT = 0x01
IIR_MS = 0x00
IIR_THRE = 0x02
IIR_RDA = 0x04
IIR_RLS = 0x06
IIR_FIFO = 0xC0  # FIFOs enabled
IIR_PRIORITY = ((IER_RLS, IIR_RLS), (IER_RDA, IIR_RDA), (IER_THRE, IIR_THRE), (IER_MS, IIR_MS))
FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_STORED = 0xC9  # enable, DMA mode, receive trigger level
LCR_DLAB = 0x80
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_WRITABLE = 0x1F
LSR_DR = 0x01  # data ready
LSR_OE = 0x02  # overrun error
LSR_THRE = 0x20  # transmit holding register empty
LSR_TEMT = 0x40  # transmitter empty
MSR_DELTAS = 0x0F  # DCTS, DDSR, TERI, DDCD: a line changed since MSR was read
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
LOOPBACK_LINES = ((MCR_DTR, MSR_DSR), (MCR_RTS, MSR_CTS), (MCR_OUT1, MSR_RI), (MCR_OUT2, MSR_DCD))
CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS  # what a terminal on the far end drives
FIFO_DEPTH = 16
OUTPUT_LIMIT = 1 << 20


def _stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class Uart16550:
    def __init__(
        self,
        sink: Callable[[bytes], None] = _stdout,
        stride: int = 1,
        irq: IrqLine = NO_IRQ,
        output_limit: int = OUTPUT_LIMIT,
    ) -> None:
        self.sink = sink
        self.stride = stride
        self.irq = irq
        self.output_limit = output_limit
        self.divisor = 1
        self.ier = self.fcr = self.lcr = self.mcr = self.scr = 0
        self.line_errors = 0  # LSR error bits, until LSR is read
        self.msr_deltas = 0
        self.modem_lines = CONNECTED  # the far end's lines, seen outside loopback
        self.thr_pending = False  # the THRE interrupt condition
        self.rx: deque[int] = deque()
        self.output = bytearray()
        self._irq_level = False
        self._readers: dict[int, Callable[[], int]] = {
            RBR_THR: self._read_rbr,
            IER: lambda: self.ier,
            IIR_FCR: self._read_iir,
            LCR: lambda: self.lcr,
            MCR: lambda: self.mcr,
            LSR: self._read_lsr,
            MSR: self._read_msr,
            SCR: lambda: self.scr,
        }
        self._writers: dict[int, Callable[[int], None]] = {
            RBR_THR: self._transmit,
            IER: self._write_ier,
            IIR_FCR: self._write_fcr,
            LCR: lambda value: setattr(self, "lcr", value),
            MCR: self._write_mcr,
            LSR: lambda value: None,  # factory test registers
            MSR: lambda value: None,
            SCR: lambda value: setattr(self, "scr", value),
        }

    def _reg(self, offset: int) -> int:
        return (offset // self.stride) & 7

    def read(self, offset: int, size: int) -> int:
        reg = self._reg(offset)
        if self.lcr & LCR_DLAB and reg in (DLL, DLM):
            value = self.divisor >> (8 * (reg == DLM)) & 0xFF
        else:
            value = self._readers[reg]()
            self._update_irq()
        return value & mask(size)

    def write(self, offset: int, size: int, value: int) -> None:
        reg = self._reg(offset)
        value &= 0xFF
        if self.lcr & LCR_DLAB and reg in (DLL, DLM):
            shift = 8 * (reg == DLM)
            self.divisor = self.divisor & ~(0xFF << shift) | value << shift
        else:
            self._writers[reg](value)
            self._update_irq()

    def feed(self, data: bytes) -> None:
        """Host input: bytes for the guest to receive."""
        self.rx.extend(data)
        self._update_irq()

    def set_modem_lines(self, lines: int) -> None:
        """The far end drives CTS, DSR, RI and DCD (MSR bits 4-7)."""
        old = self._lines()
        self.modem_lines = lines & ~MSR_DELTAS
        self._lines_changed(old)
        self._update_irq()

    def _interrupt(self) -> int:
        """The IIR code of the highest-priority enabled pending source."""
        pending = (
            IER_RLS * bool(self.line_errors)
            | IER_RDA * bool(self.rx)
            | IER_THRE * self.thr_pending
            | IER_MS * bool(self.msr_deltas)
        )
        for enable, code in IIR_PRIORITY:
            if pending & self.ier & enable:
                return code
        return IIR_NO_INT

    def _update_irq(self) -> None:
        level = self._interrupt() != IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            self.irq.set(level)

    def _read_rbr(self) -> int:
        return self.rx.popleft() if self.rx else 0

    def _read_iir(self) -> int:
        code = self._interrupt()
        if code == IIR_THRE:
            self.thr_pending = False  # reading IIR acknowledges THRE when it is the one reported
        return code | IIR_FIFO * bool(self.fcr & FCR_ENABLE)

    def _read_lsr(self) -> int:
        value = LSR_DR * bool(self.rx) | self.line_errors | LSR_THRE | LSR_TEMT
        self.line_errors = 0
        return value

    def _read_msr(self) -> int:
        value = self._lines() | self.msr_deltas
        self.msr_deltas = 0
        return value

    def _lines(self) -> int:
        if not self.mcr & MCR_LOOP:
            return self.modem_lines
        return sum(line for control, line in LOOPBACK_LINES if self.mcr & control)

    def _lines_changed(self, old: int) -> None:
        """Set the delta bits: any change of CTS, DSR, DCD; RI only on its trailing edge."""
        new = self._lines()
        self.msr_deltas |= ((old ^ new) & ~MSR_RI | old & ~new & MSR_RI) >> 4

    def _transmit(self, value: int) -> None:
        if self.mcr & MCR_LOOP:
            if len(self.rx) < (FIFO_DEPTH if self.fcr & FCR_ENABLE else 1):
                self.rx.append(value)
            else:
                self.line_errors |= LSR_OE
        else:
            self.output.append(value)
            if len(self.output) > self.output_limit:
                del self.output[: len(self.output) - self.output_limit]
            self.sink(bytes([value]))
        self.thr_pending = True  # the byte left at once: THR is empty again

    def _write_ier(self, value: int) -> None:
        value &= IER_WRITABLE
        if (value ^ self.ier) & IER_THRE:
            self.thr_pending = bool(value & IER_THRE)  # enabling THRE with THR empty raises it
        self.ier = value

    def _write_fcr(self, value: int) -> None:
        if (value ^ self.fcr) & FCR_ENABLE or value & FCR_CLEAR_RX:
            self.rx.clear()  # the transmit FIFO is always empty
        self.fcr = value & FCR_STORED if value & FCR_ENABLE else 0

    def _write_mcr(self, value: int) -> None:
        old = self._lines()
        self.mcr = value & MCR_WRITABLE
        self._lines_changed(old)
