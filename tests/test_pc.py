"""The PC machine: where its devices are, which side serves them, and a guest that talks to each."""

from __future__ import annotations

import pytest
from kvm_util import assemble, have_assembler

from vmmio.abi import InoutExit, MmioExit
from vmmio.pc import LAPIC_BASE, PcMachine
from vmmio.reference.kvm import kvm_usable

KVM_WHY_NOT = kvm_usable()
BACKENDS = [
    "unicorn",
    pytest.param("kvm", marks=pytest.mark.skipif(KVM_WHY_NOT is not None, reason=f"KVM: {KVM_WHY_NOT}")),
]

# Reads the fw_cfg signature, the local APIC version, the CMOS extended-memory size and PIT channel 2's
# gate through port 0x61, writes them to the pc-testdev IORAM, and exits through port 0xF4.
GUEST = """
    mov dx, 0x510
    xor eax, eax
    out dx, ax
    inc dx
    in al, dx
    mov [0xff000000], al
    in al, dx
    mov [0xff000001], al
    mov eax, [0xfee00030]
    mov [0xff000004], eax
    mov al, 0x17
    out 0x70, al
    in al, 0x71
    mov [0xff000008], al
    in al, 0x61
    mov [0xff000009], al
    mov eax, 0x12345678
    out 0xe0, eax
    in eax, 0xe0
    mov [0xff00000c], eax
    xor eax, eax
    out 0xf4, al
"""


def test_kernel_and_userspace_sides() -> None:
    m = PcMachine(uart_sink=lambda _: None)
    kernel_ports = {base for base, _end, _dev in m.vm.ports}
    assert kernel_ports == {0x20, 0x40, 0x61, 0x70, 0xA0, 0x4D0}
    assert m.vm.memory.find(LAPIC_BASE) is not None  # in the kernel: no exit
    user_ports = {base for base, _end, _dev in m.ports}
    assert {0x3F8, 0x60, 0x64, 0x92, 0x510, 0xE0, 0xE4, 0xE8, 0x2000, 0xF4} <= user_ports
    assert m.mmio.find(0xFF00_0000) is not None
    assert m.service(InoutExit(0x510, 2, False, 0)).data == 0  # fw_cfg selector
    assert m.service(MmioExit(0xFF00_0000, 4, False, 0)).data == 0


@pytest.mark.skipif(not have_assembler(), reason="needs GNU as and objcopy to build the guest")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_guest_reaches_every_pc_device(backend: str) -> None:
    m = PcMachine(uart_sink=lambda _: None)
    result = m.run(m.vcpu(m.load(assemble(GUEST)), backend))
    assert (result.reason, result.status) == ("exit", 0), result
    ioram = m.pc.testdev.ioram
    assert bytes(ioram.data[:2]) == b"QE"  # "QEMU", read a byte at a time
    assert int.from_bytes(ioram.data[4:8], "little") == 0x0005_0014  # version 0x14, 6 LVT entries
    ext_kib = min(m.layout.ram_size // 1024 - 1024, 0xFFFF)  # CMOS 0x17/0x18: KiB above 1 MiB, capped
    assert ioram.data[8] == ext_kib & 0xFF
    assert int.from_bytes(ioram.data[12:16], "little") == 0x1234_5678
