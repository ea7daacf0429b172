"""A PC, as multiboot test kernels (kvm-unit-tests) and Linux expect one, on top of `Machine`.

The split is bhyve's: the interrupt controllers and timers are in the kernel (`Vm` devices, served
without an exit: the 8259 pair, the 8254 with port 0x61, the RTC/CMOS, the local APIC page), the rest
in userspace (the 16550 at 0x3F8, the i8042 and port 0x92, QEMU's fw_cfg and pc-testdev, the debug-exit
port at 0xF4). Time comes from one clock (`HostClock` by default, a `VirtualClock` for replay).

    port 0x20-0x21, 0xA0-0xA1, 0x4D0-0x4D1   PIC pair and ELCR                     kernel
    port 0x40-0x43, 0x61                     PIT and system control port B          kernel
    port 0x70-0x71                           RTC and CMOS (memory size filled in)   kernel
    MMIO 0xFEE00000, 4 KiB                   local APIC                             kernel
    RAM 0xF0000                              ACPI RSDP, RSDT, MADT (the 640 KiB-1 MiB hole is reserved)
    port 0x3F8-0x3FF                         16550A UART on IRQ 4                   userspace
    port 0x60, 0x64, 0x92                    i8042 (IRQ 1, 12), fast reset          userspace
    port 0x510-0x511                         fw_cfg (signature, RAM size, CPUs)     userspace
    port 0xE0-0xE3, 0xE4-0xE7, 0xE8-0xEB     pc-testdev latch, flush, latch         userspace
    port 0x2000-0x2017                       pc-testdev ISA IRQ lines               userspace
    MMIO 0xFF000000, 64 KiB                  pc-testdev IORAM                       userspace
    port 0xF4                                debug exit: a write ends the run       userspace
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmmio import images
from vmmio.devices import (
    I8042,
    Clock,
    FwCfg,
    HostClock,
    IrqLine,
    LocalApic,
    PcTestdev,
    PicPair,
    Pit8254,
    Port92,
    Rtc,
)
from vmmio.devices.pc_testdev import (
    FLUSH_PORT,
    FLUSH_SPAN,
    IORAM_BASE,
    IORAM_SIZE,
    IRQ_LINES,
    IRQ_PORT,
    LATCH_BYTE_PORT,
    LATCH_PORT,
    LATCH_SPAN,
)
from vmmio.images.acpi import build_tables
from vmmio.machine import Layout, Machine
from vmmio.vmm.interrupts import PcInterrupts

LAPIC_BASE = 0xFEE0_0000
BIOS_HOLE = (0xA_0000, 0x6_0000)  # VGA and BIOS: reserved in the memory map, never loaded into
ACPI_BASE = 0xF_0000  # in the BIOS area, where an RSDP scan finds it
# What Linux is told about this PC by default: its console and early output on the 16550; the 8259 and
# the PIT for interrupts and time (no I/O APIC; the local APIC stays off); no ACPI tables; one CPU; and
# no crypto self-tests at boot (under Unicorn's TCG they alone take ~8 s of a ~22 s boot).
LINUX_CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 noapic nosmp panic=-1 cryptomgr.notests"
FW_CFG_PORT = 0x510
IRQ_PIT, IRQ_KBD, IRQ_COM1, IRQ_RTC, IRQ_AUX = 0, 1, 4, 8, 12


def pc_layout(ram_size: int = 128 << 20, **changes: object) -> Layout:
    """The PC's layout: RAM from 0, the UART and debug exit on ports only (no vmmio MMIO windows)."""
    fields: dict[str, object] = {
        "ram_size": ram_size,
        "uart_mmio": None,
        "debug_exit_mmio": None,
        "testdev_mmio": None,
        **changes,
    }
    return Layout(**fields)  # type: ignore[arg-type]


@dataclass
class PcDevices:
    """The devices of one PC, for inspection and for wiring interrupts."""

    clock: Clock
    pic: PicPair
    pit: Pit8254
    rtc: Rtc
    lapic: LocalApic
    i8042: I8042
    port92: Port92
    fw_cfg: FwCfg
    testdev: PcTestdev


class PcMachine(Machine):
    """`Machine` with the PC's devices in place (see the module docstring)."""

    def __init__(
        self,
        layout: Layout | None = None,
        *,
        uart_sink: Callable[[bytes], None] | None = None,
        clock: Clock | None = None,
        cpus: int = 1,
    ) -> None:
        layout = layout if layout is not None else pc_layout()
        super().__init__(layout, uart_sink=uart_sink)
        clock = clock if clock is not None else HostClock()
        vm = self.vm
        pic = PicPair()
        pit = Pit8254(clock, IrqLine(pic, IRQ_PIT))
        rtc = Rtc(clock, IrqLine(pic, IRQ_RTC))
        rtc.set_memory_size(layout.ram_size)
        lapic = LocalApic(clock)
        for port, count, kernel_device in (
            (0x20, 2, pic.master),
            (0xA0, 2, pic.slave),
            (0x4D0, 2, pic.elcr),
            (0x40, 4, pit),
            (0x61, 1, pit.port_b),
            (0x70, 2, rtc),
        ):
            vm.add_port_device(port, count, kernel_device)
        vm.add_mmio_device(LAPIC_BASE, 0x1000, lapic)
        kbd = I8042(IrqLine(pic, IRQ_KBD), IrqLine(pic, IRQ_AUX))
        port92 = Port92()
        fw_cfg = FwCfg(layout.ram_size, cpus)
        testdev = PcTestdev(pic)
        for port, count, device in (
            (0x60, 1, kbd.data),
            (0x64, 1, kbd.command),
            (0x92, 1, port92),
            (FW_CFG_PORT, 2, fw_cfg),
            (LATCH_PORT, LATCH_SPAN, testdev.latch),
            (FLUSH_PORT, FLUSH_SPAN, testdev.flush),
            (LATCH_BYTE_PORT, LATCH_SPAN, testdev.latch),
            (IRQ_PORT, IRQ_LINES, testdev.irq),
        ):
            self.add_port(port, count, device)
        self.add_mmio(IORAM_BASE, IORAM_SIZE, testdev.ioram)
        self.uart.irq = IrqLine(pic, IRQ_COM1)
        vm.interrupts = PcInterrupts(pic, lapic)
        vm.timers = [pit, rtc, lapic]
        vm.clock = clock
        self.pc = PcDevices(clock, pic, pit, rtc, lapic, kbd, port92, fw_cfg, testdev)
        if layout.ram_size >= sum(BIOS_HOLE):
            vm.memory.write(ACPI_BASE, build_tables(ACPI_BASE, LAPIC_BASE, cpus))

    def memory_layout(self) -> images.MemoryLayout:
        """`Machine`'s, with the PC's 640 KiB-1 MiB hole (where the ACPI tables are) reserved."""
        base = super().memory_layout()
        if self.layout.ram_size < sum(BIOS_HOLE):
            return base  # RAM ends below 1 MiB: no hole to keep
        return images.MemoryLayout(base.ram, (*base.reserved, BIOS_HOLE), base.in_use)


__all__ = ["LAPIC_BASE", "LINUX_CMDLINE", "PcDevices", "PcMachine", "pc_layout"]
