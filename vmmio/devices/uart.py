"""A 16550 UART, enough for a guest to print: transmit always ready, receive from a queue.

Reachable by port I/O (stride 1, the PC's COM ports) or by MMIO (any register stride). Output bytes go
to `sink`, by default standard output.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable

# Register numbers (before the stride is applied).
RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
LCR_DLAB = 0x80
LSR_DR = 0x01  # data ready
LSR_THRE = 0x20  # transmit holding register empty
LSR_TEMT = 0x40  # transmitter empty
IIR_NO_INT = 0x01


def _stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class Uart16550:
    def __init__(self, sink: Callable[[bytes], None] = _stdout, stride: int = 1) -> None:
        self.sink = sink
        self.stride = stride
        self.regs = bytearray(8)
        self.divisor = 1
        self.rx: deque[int] = deque()
        self.output = bytearray()

    def _reg(self, offset: int) -> int:
        return (offset // self.stride) & 7

    def read(self, offset: int, size: int) -> int:
        reg = self._reg(offset)
        dlab = self.regs[LCR] & LCR_DLAB
        if reg == RBR_THR:
            if dlab:
                return self.divisor & 0xFF
            return self.rx.popleft() if self.rx else 0
        if reg == IER and dlab:
            return self.divisor >> 8
        if reg == IIR_FCR:
            return IIR_NO_INT
        if reg == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)
        return self.regs[reg]

    def write(self, offset: int, size: int, value: int) -> None:
        reg = self._reg(offset)
        value &= 0xFF
        dlab = self.regs[LCR] & LCR_DLAB
        if reg == RBR_THR and not dlab:
            self.output.append(value)
            self.sink(bytes([value]))
        elif reg == RBR_THR:
            self.divisor = (self.divisor & 0xFF00) | value
        elif reg == IER and dlab:
            self.divisor = (self.divisor & 0xFF) | (value << 8)
        elif reg != LSR:
            self.regs[reg] = value
