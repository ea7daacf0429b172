"""The public API: the front door's names, one-call vCPU creation, registers by name, layouts, maps."""

from __future__ import annotations

import importlib

import pytest

import vmmio
from vmmio import (
    CpuState,
    Default,
    HltExit,
    InoutExit,
    Layout,
    Machine,
    Mapping,
    MmioExit,
    Regs,
    ShutdownExit,
    ShutdownReason,
    VcpuBusy,
    Vm,
    flat_protected_control,
)
from vmmio.backends.base import NpfEvent, ShutdownEvent
from vmmio.backends.scripted import ScriptedBackend
from vmmio.devices import MemoryDevice
from vmmio.machine import TESTDEV_MMIO
from vmmio.x86.regs import Gpr


def test_every_front_door_name_resolves_to_its_home() -> None:
    for name in vmmio.__all__:
        value = getattr(vmmio, name)
        home = vmmio._WHERE[name]
        assert getattr(importlib.import_module(home), name) is value, name
    assert sorted(vmmio.__all__) == sorted(vmmio._WHERE)
    with pytest.raises(AttributeError):
        _ = vmmio.NotAName


def test_registers_by_name() -> None:
    regs = Regs()
    regs.rax, regs.r15 = 1, 2
    regs.rsp += 0x10
    assert regs.gprs[Gpr.RAX] == 1 and regs.gprs[Gpr.R15] == 2 and regs.rsp == 0x10
    assert "rax=0x1" in repr(regs) and "r15=0x2" in repr(regs)


# 32-bit flat code: mov eax, [0xd0000000]; out 0xf4, al; hlt
CODE32 = bytes.fromhex("a1000000d0e6f4f4")


def test_vcpu_in_one_call_with_its_state() -> None:
    vm = Vm(ram_size=1 << 20)
    vm.memory.write(0x1000, CODE32)
    vcpu = vm.create_vcpu(state=CpuState(Regs(rip=0x1000), flat_protected_control()))
    assert vcpu.backend.walker is vm.walker  # type: ignore[attr-defined]  # the Vm's, not a second one
    ex = vcpu.run()
    assert ex == MmioExit(0xD000_0000, 4, False, 0)
    assert vcpu.regs.rip == 0x1000  # nothing committed while the read is pending
    with pytest.raises(VcpuBusy):
        vcpu.set_regs(Regs(rip=0x2000))
    with pytest.raises(VcpuBusy):
        vcpu.set_control(vcpu.control)
    assert vcpu.run(ex.fulfill(0x1234_5678)) == InoutExit(0xF4, 1, False, 0x78)
    assert (vcpu.regs.rax, vcpu.regs.rip) == (0x1234_5678, 0x1005)
    assert vcpu.pending is not None
    assert vcpu.run(vcpu.pending.fulfill()) == HltExit()
    assert vcpu.control.code_size == 32


def test_userspace_can_move_the_vcpu_between_exits() -> None:
    vm = Vm(ram_size=1 << 20)
    vm.memory.write(0x1000, CODE32)
    vcpu = vm.create_vcpu(state=CpuState(Regs(rip=0x1000), flat_protected_control()))
    regs = vcpu.regs
    regs.rip = 0x1007  # straight to the hlt
    vcpu.set_regs(regs)
    assert vcpu.run() == HltExit()


def test_unknown_backend_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown backend 'qemu'"):
        Vm(ram_size=1 << 20).create_vcpu("qemu")


@pytest.mark.parametrize(
    ("event", "reason", "detail"),
    [
        (ShutdownEvent(), ShutdownReason.TRIPLE_FAULT, "triple fault"),
        (ShutdownEvent("task gate", unsupported=True), ShutdownReason.UNSUPPORTED_DELIVERY, "task gate"),
    ],
)
def test_shutdown_exit_carries_the_reason(event: ShutdownEvent, reason: ShutdownReason, detail: str) -> None:
    vm = Vm(ram_size=1 << 20)
    vcpu = vm.create_vcpu(ScriptedBackend(events=[event]))
    assert vcpu.run() == ShutdownExit(reason)
    assert vcpu.shutdown_detail == detail


def test_exits_print_addresses_in_hex() -> None:
    assert repr(MmioExit(0xFEE0_0300, 4, True, 0x4500)) == (
        "MmioExit(gpa=0xfee00300, size=4, is_write=True, data=0x4500)"
    )
    assert "port=0x3f8" in repr(InoutExit(0x3F8, 1, True, 0))
    assert repr(ShutdownExit()) == "ShutdownExit(reason=TRIPLE_FAULT)"


# -- maps refuse overlaps at add time -------------------------------------------------------------------


def test_device_over_ram_is_refused() -> None:
    m = Machine()
    with pytest.raises(ValueError, match="overlaps guest RAM"):
        m.add_mmio(0x10_0000, 0x1000, MemoryDevice())


def test_two_devices_over_one_range_are_refused() -> None:
    m = Machine()
    with pytest.raises(ValueError, match=r"\[0xd0010000, 0xd0012000\)"):
        m.add_mmio(TESTDEV_MMIO + 0x1000, 0x1000, MemoryDevice())
    with pytest.raises(ValueError, match="overlaps"):
        m.add_port(0x3FC, 2, MemoryDevice())  # the UART's ports


def test_kernel_maps_refuse_overlaps() -> None:
    vm = Vm(ram_size=1 << 20)
    with pytest.raises(ValueError, match="overlaps"):
        vm.add_mmio_device(0x8000, 0x1000, MemoryDevice())
    vm.add_port_device(0x40, 4, MemoryDevice())
    with pytest.raises(ValueError, match="overlaps"):
        vm.add_port_device(0x43, 1, MemoryDevice())
    with pytest.raises(ValueError, match="outside"):
        vm.add_port_device(0xFFFF, 2, MemoryDevice())
    with pytest.raises(ValueError, match="overlaps"):
        vm.add_ram(0, 0x1000)


def test_machine_does_not_serve_ports_the_kernel_serves() -> None:
    m = Machine(Layout(uart_port=None))
    m.vm.add_port_device(0x3F8, 8, MemoryDevice())
    with pytest.raises(ValueError, match="served in the kernel"):
        m.add_port(0x3F8, 8, MemoryDevice())


# -- layouts --------------------------------------------------------------------------------------------


def test_layout_moves_and_drops_devices() -> None:
    m = Machine(Layout(ram_size=4 << 20, uart_mmio=0xC000_0000, testdev_mmio=None, debug_exit_mmio=None))
    assert [(base, end) for base, end, _ in m.mmio] == [(0xC000_0000, 0xC000_1000)]
    assert m.vm.memory.ram[0].size == 4 << 20


def test_non_identity_mapping_reaches_the_device_through_its_alias() -> None:
    """A 64-bit guest reads linear 0x80_0000_0000, which the layout maps onto the test device."""
    alias = 0x80_0000_0000
    layout = Layout(mappings=(Mapping(0, 0, 4 << 30), Mapping(alias, TESTDEV_MMIO, 0x2000)))
    m = Machine(layout)
    # mov rax, [0x8000000008]; out 0xf4, al
    vcpu = m.vm.create_vcpu(state=m.entry_state(m.load(bytes.fromhex("48a10800000080000000e6f4"))))
    assert vcpu.run() == MmioExit(TESTDEV_MMIO + 8, 8, False, 0)


def test_64_bit_image_without_paging_is_refused() -> None:
    m = Machine(Layout(paging=False))
    with pytest.raises(ValueError, match="needs paging"):
        m.entry_state(m.load(b"\xf4"))


def test_entry_state_is_a_layout_choice() -> None:
    def at_0x5000(image: vmmio.Image, layout: Layout) -> CpuState:
        return CpuState(Regs(rip=image.entry + 0x5000), flat_protected_control())

    m = Machine(Layout(entry_state=at_0x5000))
    state = m.entry_state(m.load(b"\xf4"))
    assert state.regs.rip == m.layout.load_addr + 0x5000 and state.control.code_size == 32


def test_scripted_backend_by_name() -> None:
    vm = Vm(ram_size=1 << 20)
    vcpu = vm.create_vcpu("scripted")
    assert isinstance(vcpu.backend, ScriptedBackend)
    assert vcpu.run(Default()) == HltExit()
    vcpu.backend.events.append(NpfEvent(0x1000_0000))
    assert vcpu.run().__class__.__name__ == "InstEmulExit"  # RIP 0 holds zeros: add [rax], al is RAM
