"""A device model behind the MMIO boundary, driven by a small 64-bit guest through `Machine`.

The device is a register block (ID, CTRL, COUNT, RESULT) written the way a VMM's userspace writes them:
`read(offset, size)` and `write(offset, size, value)`, nothing else. The machine maps it at a GPA with
no RAM behind it; every guest access there becomes an MMIO request that the machine answers from it.
"""

from __future__ import annotations

import sys

from vmmio import Machine

COUNTER_BASE = 0xD000_2000

# The guest: check the ID, enable counting, add up three COUNT reads, store the sum in RESULT and exit
# with status sum - 6 (0 when the device counted 1, 2, 3) through the debug-exit port.
GUEST = bytes.fromhex(
    "48bb002000d000000000"  # mov rbx, 0xd0002000
    "8b03"  # mov eax, [rbx]            ID
    "3d56443031"  # cmp eax, "VD01"
    "751d"  # jne fail
    "c7430401000000"  # mov dword [rbx+4], 1     CTRL: enable
    "b903000000"  # mov ecx, 3
    "31d2"  # xor edx, edx
    "035308"  # 1: add edx, [rbx+8]       COUNT
    "e2fb"  # loop 1b
    "89530c"  # mov [rbx+12], edx        RESULT
    "89d0"  # mov eax, edx
    "83e806"  # sub eax, 6
    "e6f4"  # out 0xf4, al             exit with the status
    "b001"  # fail: mov al, 1
    "e6f4"  # out 0xf4, al
)


class Counter:
    """A counter device: COUNT returns 1, 2, 3, ... while CTRL.ENABLE is set."""

    ID, CTRL, COUNT, RESULT = 0x0, 0x4, 0x8, 0xC
    ENABLE = 1 << 0
    ID_VALUE = 0x3130_4456  # "VD01"

    def __init__(self) -> None:
        self.ctrl = 0
        self.count = 0
        self.result = 0
        self.log: list[str] = []

    def read(self, offset: int, size: int) -> int:
        if offset == self.ID:
            value = self.ID_VALUE
        elif offset == self.COUNT and self.ctrl & self.ENABLE:
            self.count += 1
            value = self.count
        else:
            value = {self.CTRL: self.ctrl, self.COUNT: self.count, self.RESULT: self.result}.get(offset, 0)
        self.log.append(f"read  {offset:#04x} -> {value:#x}")
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(f"write {offset:#04x} <- {value:#x}")
        if offset == self.CTRL:
            self.ctrl = value
        elif offset == self.RESULT:
            self.result = value


def build(backend: str = "unicorn") -> tuple[Machine, Counter, int]:
    """Run the guest on `backend`; returns the machine, the device and the guest's exit status."""
    machine = Machine(uart_sink=lambda data: None)
    counter = Counter()
    machine.add_mmio(COUNTER_BASE, 0x1000, counter)
    vcpu = machine.vcpu(machine.load(GUEST), backend)
    result = machine.run(vcpu)
    return machine, counter, result.status


def main(backend: str = "unicorn") -> int:
    _machine, counter, status = build(backend)
    print("\n".join(counter.log))
    print(f"RESULT = {counter.result}, guest status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
